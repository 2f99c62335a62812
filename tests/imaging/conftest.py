"""Fixtures shared by the imaging tests."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.imaging.models import DicomPeer
from app.imaging.scp import Listener
from tests.imaging.dicomgen import ct_slice, stow_body
from tests.imaging.dimse import free_port


@pytest.fixture
def listener(app: Any, live_factories: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A listener on a free port; the scanner CLINICCT of a new clinic may store, query, retrieve, worklist.

    Peers are read for each association (no cache here), so a test may change them while it runs.
    """
    clinic = live_factories.facility(name="Scanner clinic")
    db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title == "CLINICCT"))  # left by an earlier test
    db.session.add(DicomPeer(ae_title="CLINICCT", facility_id=clinic.id, can_store=True, can_query=True,
                             can_retrieve=True, can_worklist=True, active=True))
    db.session.commit()
    monkeypatch.setitem(app.config, "DICOM_ALLOWED_AETS", "")
    port = free_port()
    server = Listener(app, peer_cache_seconds=0).serve("127.0.0.1", port, block=False)
    yield port, clinic
    server.shutdown()


@pytest.fixture
def scans(client: Any, factories: Any, login: Any) -> dict[str, Any]:
    nurse = factories.nurse()
    doctor = factories.doctor()
    mine = factories.patient(facility=nurse.facility, doctor=doctor)
    other = factories.patient(facility=nurse.facility)
    login(client, nurse)
    study_a, study_b, series_a = generate_uid(), generate_uid(), generate_uid()
    files = [ct_slice(patient_id=mine.mrn, patient_name="Smith^Anna", study_uid=study_a, series_uid=series_a,
                      number=n, study_date="20240110", accession="ACC-A") for n in (1, 2, 3)]
    files.append(ct_slice(patient_id=other.mrn, patient_name="Jones^Bob", study_uid=study_b,
                          study_date="20230505", accession="ACC-B", modality="MR"))
    body, ctype = stow_body(files)
    assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
    client.post("/sign-out")
    return {"nurse": nurse, "doctor": doctor, "mine": mine, "other": other, "a": study_a, "b": study_b,
            "series": series_a}


@pytest.fixture
def care_team(live_factories: Any) -> dict[str, Any]:
    """Committed people for live-server tests: a nurse, a doctor, and a patient of the nurse's clinic in the
    doctor's care; ``tag`` makes names and emails unique."""
    tag = uuid.uuid4().hex[:6]
    nurse = live_factories.nurse(email=f"img-nurse-{tag}@test.example")
    doctor = live_factories.doctor(email=f"img-doc-{tag}@test.example")
    patient = live_factories.patient(facility=nurse.facility, doctor=doctor)
    return {"nurse": nurse, "doctor": doctor, "patient": patient, "tag": tag}
