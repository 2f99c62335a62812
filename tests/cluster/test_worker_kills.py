"""A web worker is killed (SIGKILL) in the middle of a request that writes: a pharmacist starting a dispense or
handing medicine over, a STOW-RS upload. The client sees a failure; nothing is half-written (no medicine
handed over without its stock and status, no instance row without its object, no object without a row once
the sweep has run); the same request, sent again, succeeds."""

from __future__ import annotations

import hashlib
import subprocess
import uuid

import pytest
import requests
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.imaging.models import Instance, Series, Study
from app.pharmacy import service as pharmacy
from app.pharmacy.models import Dispense, DispenseStatus, StockBatch
from app.prescriptions import service as rx_service
from app.prescriptions.models import RequestStatus
from tests.cluster.conftest import SECRET, VENV_BIN, kill_web_worker_while_it_waits, sign_in
from tests.conftest import PASSWORD
from tests.imaging.dicomgen import ct_slice, stow_body
from tests.prescriptions.conftest import add_stock, rx_input

pytestmark = [pytest.mark.cluster, pytest.mark.fault]


@pytest.fixture
def pharmacy_counter(app, live_factories, monkeypatch):
    """A signed prescription at a clinic with 50 units in stock, and its pharmacist signed in on server A.
    Pickup codes are derived from the secret key, so the test derives them with the cluster's."""
    monkeypatch.setitem(app.config, "SECRET_KEY", SECRET)
    clinic = live_factories.facility(name=f"Counter {uuid.uuid4().hex[:6]}")
    doctor = live_factories.doctor()
    patient = live_factories.patient(facility=clinic, with_account=True, doctor=doctor)
    pharmacist = live_factories.pharmacist(facility=clinic)
    rx = rx_service.create_draft(patient, rx_input(), by=doctor)
    rx_service.sign(rx, by=doctor)
    batch = add_stock(clinic.id, "AMOX500", 50)
    db.session.commit()
    return {"rx": rx, "batch": batch, "patient": patient, "pharmacist": pharmacist}


def _stock(batch_id: int) -> int:
    db.session.expire_all()
    return db.session.get(StockBatch, batch_id).quantity


def _audited(action: str, resource_type: str, resource_id: object) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.action == action, AuditEvent.resource_type == resource_type,
        AuditEvent.resource_id == str(resource_id), AuditEvent.outcome == "success")))


def test_a_web_worker_killed_while_a_dispense_starts_takes_no_stock(cluster, engine, pharmacy_counter):
    rx, batch = pharmacy_counter["rx"], pharmacy_counter["batch"]
    a = cluster.url("web_a")
    s = sign_in(a, pharmacy_counter["pharmacist"].email, PASSWORD)
    start = f"{a}/api/v1/medication-requests/{rx.id}/dispenses"

    got = kill_web_worker_while_it_waits(
        cluster, engine,
        hold=lambda conn: conn.execute(sa.select(StockBatch.id).where(StockBatch.id == batch.id).with_for_update()),
        send=lambda: s.post(start, json={}))
    assert isinstance(got, requests.RequestException)  # the pharmacist sees it failed
    assert _stock(batch.id) == 50  # no unit left the shelf ...
    assert not db.session.scalars(sa.select(Dispense).where(Dispense.prescription_id == rx.id)).all()  # ... for none

    again = s.post(start, json={})
    assert again.status_code == 201, again.text[:300]
    assert _stock(batch.id) == 50 - 21
    [dispense] = db.session.scalars(sa.select(Dispense).where(Dispense.prescription_id == rx.id))
    assert dispense.status is DispenseStatus.PREPARATION and dispense.quantity == 21


def test_a_web_worker_killed_during_a_hand_over_leaves_the_medicine_at_the_counter(cluster, engine,
                                                                                    pharmacy_counter):
    rx, batch, pharmacist = pharmacy_counter["rx"], pharmacy_counter["batch"], pharmacy_counter["pharmacist"]
    dispense = pharmacy.start_dispense(rx, by=pharmacist)
    pharmacy.transition(dispense, DispenseStatus.IN_PROGRESS, by=pharmacist)
    db.session.commit()
    code = pharmacy.pickup_code(dispense, by=pharmacy_counter["patient"].user)
    assert code and _stock(batch.id) == 50 - 21
    a = cluster.url("web_a")
    s = sign_in(a, pharmacist.email, PASSWORD)
    handover = f"{a}/api/v1/medication-dispenses/{dispense.id}/handover"
    form = {"code": code, "id_document": "national ID card", "receiver": "patient"}

    got = kill_web_worker_while_it_waits(
        cluster, engine,
        hold=lambda conn: conn.execute(sa.select(Dispense.id).where(Dispense.id == dispense.id).with_for_update()),
        send=lambda: s.post(handover, json=form))
    assert isinstance(got, requests.RequestException)
    db.session.expire_all()
    left = db.session.get(Dispense, dispense.id)
    # Still waiting at the counter, as before: not handed over, nobody named as receiver, stock as picked.
    assert left.status is DispenseStatus.IN_PROGRESS and left.handed_over_at is None and left.receiver is None
    assert _stock(batch.id) == 50 - 21
    assert not _audited("dispense.handover", "MedicationDispense", dispense.id)
    assert db.session.get(type(rx), rx.id).status is RequestStatus.ACTIVE

    again = s.post(handover, json=form)  # the same code still works: nothing was used up
    assert again.status_code == 200, again.text[:300]
    db.session.expire_all()
    done = db.session.get(Dispense, dispense.id)
    assert done.status is DispenseStatus.COMPLETED and done.handed_over_by_id == pharmacist.id
    assert _stock(batch.id) == 50 - 21  # taken once, when it was prepared
    assert len(_audited("dispense.handover", "MedicationDispense", dispense.id)) == 1


def _bucket_keys(s3_server: str) -> set[str]:
    from minio import Minio

    client = Minio(s3_server, access_key="test", secret_key="test", secure=False)
    return {o.object_name for o in client.list_objects("cluster", prefix="dicom/", recursive=True)}


def _named_keys(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(Instance.object_key)))


def test_a_web_worker_killed_during_stow_leaves_no_half_stored_study(cluster, engine, s3_server, live_factories):
    clinic = live_factories.facility()
    nurse, patient = live_factories.nurse(facility=clinic), live_factories.patient(facility=clinic)
    study_uid = f"2.25.{uuid.uuid4().int}"
    files = [ct_slice(patient_id=patient.mrn, study_uid=study_uid, series_uid=f"{study_uid}.1", number=n, seed=n)
             for n in range(1, 7)]
    body, ctype = stow_body(files)
    a = cluster.url("web_a")
    s = sign_in(a, nurse.email, PASSWORD)
    stow = f"{a}/dicomweb/studies"
    headers = {"Content-Type": ctype, "Accept": "application/dicom+json"}
    before = _bucket_keys(s3_server)

    # The instance rows wait for a table lock: by then every object of the request is in S3.
    got = kill_web_worker_while_it_waits(
        cluster, engine, hold=lambda conn: conn.execute(sa.text(f"LOCK TABLE {Instance.__tablename__} IN SHARE MODE")),
        send=lambda: s.post(stow, data=body, headers=headers))
    assert isinstance(got, requests.RequestException)  # the sender is not told it was stored
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Study)
                           .where(Study.study_instance_uid == study_uid)) == 0  # no row of it at all
    left = _bucket_keys(s3_server) - before - _named_keys(engine)
    assert left, "the killed request stored no object: the test did not kill it where it meant to"

    # The sweep (hourly in the worker, or the command) deletes objects no row names.
    swept = subprocess.run([str(VENV_BIN / "hospital"), "sweep-objects", "--grace-minutes", "0"],  # noqa: S603
                           env=cluster.env, capture_output=True, text=True, timeout=120, check=False)
    assert swept.returncode == 0, swept.stderr[-2000:]
    assert not (_bucket_keys(s3_server) & left)
    assert _bucket_keys(s3_server) <= _named_keys(engine)

    again = s.post(stow, data=body, headers=headers)
    assert again.status_code == 200, again.text[:300]
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(Instance.object_key, Instance.sha256).join(Series).join(Study)
                                   .where(Study.study_instance_uid == study_uid)).all())
    assert len(stored) == len(files) and set(stored) <= _bucket_keys(s3_server)
    assert set(stored.values()) == {hashlib.sha256(f).hexdigest() for f in files}
