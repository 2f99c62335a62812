"""Imaging orders from the chart, read by the clinic's scanner as its Modality Worklist (dcmtk findscu -W)."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa

from app import db
from app.imaging import orders
from app.imaging.models import DicomPeer, ImagingOrder, Study
from app.reading.models import ReadingRequest
from tests.imaging.dicomgen import ct_slice
from tests.imaging.dimse import run

pytestmark = pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk is installed by .ci/run")


def test_clinic_staff_request_a_scan_from_the_chart(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    resp = client.post(f"/patients/{patient.id}/imaging-orders",
                       data={"modality": "CT", "description": "CT chest without contrast",
                             "scheduled_at": "2030-05-06T09:30"}, follow_redirects=True)
    html = resp.get_data(as_text=True)
    order = db.session.scalar(sa.select(ImagingOrder).where(ImagingOrder.patient_id == patient.id))
    assert order is not None and order.scheduled_at == datetime(2030, 5, 6, 9, 30, tzinfo=UTC)
    assert f"accession {order.accession_number}" in html and "May 6, 2030, 9:30\u202fAM UTC" in html
    assert "CT chest without contrast" in html
    bad = client.post(f"/patients/{patient.id}/imaging-orders", data={"modality": "CT", "description": ""},
                      follow_redirects=True)
    assert "give the date and time." in bad.get_data(as_text=True)
    client.post("/sign-out")
    login(client, factories.nurse(facility=factories.facility()))  # another clinic's staff
    assert client.post(f"/patients/{patient.id}/imaging-orders", data={
        "modality": "CT", "description": "x", "scheduled_at": "2030-05-06T09:30"}).status_code == 404


def _worklist(port: int, tmp_path: Path, *keys: str, calling: str = "CLINICCT") -> tuple[list[pydicom.Dataset],
                                                                                        str]:
    out_dir = tmp_path / f"wl{time.monotonic_ns()}"
    out_dir.mkdir()
    argv = ["findscu", "-d", "-W", "-X", "-od", str(out_dir), "-aet", calling, "-aec", "TOWNHEALTH", "127.0.0.1",
            str(port), "-k", "PatientName", "-k", "PatientID", "-k", "PatientBirthDate", "-k", "AccessionNumber",
            "-k", "StudyInstanceUID", "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription"]
    for key in keys:
        argv += ["-k", key]
    out = run(*argv)
    return [pydicom.dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))], out.stdout + out.stderr


def test_the_scanner_reads_its_worklist_and_its_scans_land_on_the_chart(listener: Any, live_factories: Any,
                                                                         tmp_path: Path) -> None:
    port, clinic = listener
    tag = str(time.monotonic_ns())[-6:]
    nurse = live_factories.nurse(facility=clinic, email=f"wl-nurse-{tag}@test.example")
    patient = live_factories.patient(facility=clinic, family_name=f"Worklist{tag}", given_name="Ada")
    other_clinic = live_factories.facility(name="Another clinic")
    stranger = live_factories.patient(facility=other_clinic, family_name=f"Worklist{tag}", given_name="Bob")
    when = datetime(2031, 3, 4, 14, 15, tzinfo=UTC)
    order = orders.create_order(patient, by=nurse, modality="CT", description="CT chest", scheduled_at=when,
                                read=orders.ReadingAsk(priority="urgent", question="Cough for 3 weeks; mass?",
                                                       assigned_to_id=live_factories.doctor().id))  # not the pool
    other_nurse = live_factories.nurse(facility=other_clinic, email=f"wl-other-{tag}@test.example")
    orders.create_order(stranger, by=other_nurse, modality="CT", description="CT head", scheduled_at=when)
    db.session.commit()
    found, out = _worklist(port, tmp_path, f"PatientName=worklist{tag}*",
                           "ScheduledProcedureStepSequence[0].Modality=CT",
                           "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20310301-20310331")
    assert len(found) == 1, out[-3000:]  # not the other clinic's patient
    item = found[0]
    assert item.PatientID == patient.mrn and str(item.PatientName) == f"Worklist{tag}^Ada"
    assert item.AccessionNumber == order.accession_number
    assert item.PatientBirthDate == patient.birth_date.strftime("%Y%m%d")
    step = item.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepDescription == "CT chest"
    none, _ = _worklist(port, tmp_path, f"PatientID={patient.mrn}",
                        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20300101")
    assert none == []
    _, bad = _worklist(port, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=2031")
    assert "0xa900" in bad and "ScheduledProcedureStepStartDate must be YYYYMMDD or a range" in bad
    # the scanner sends the scan with what the worklist gave it: it lands on the chart
    scan = tmp_path / "scan.dcm"
    scan.write_bytes(ct_slice(patient_id=item.PatientID, study_uid=item.StudyInstanceUID,
                              accession=item.AccessionNumber))
    assert run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port),
               str(scan)).returncode == 0
    db.session.remove()
    study = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == item.StudyInstanceUID))
    assert study.patient_id == patient.id and study.accession_number == order.accession_number
    # the order asked for a reading: the request waits on the doctors' worklist
    asked = db.session.scalars(sa.select(ReadingRequest).where(ReadingRequest.study_id == study.id)).all()
    assert [(r.priority.value, r.clinical_question, r.requested_by_id) for r in asked] == [
        ("urgent", "Cough for 3 weeks; mass?", nurse.id)]
    # a peer without the worklist permission is told so
    db.session.execute(sa.update(DicomPeer).where(DicomPeer.ae_title == "CLINICCT").values(can_worklist=False))
    db.session.commit()
    _, refused = _worklist(port, tmp_path)
    assert "0x0124" in refused and "may not read the worklist here" in refused
