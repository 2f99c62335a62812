"""Two pharmacists act on the same prescription at the same moment, on separate PostgreSQL connections:
exactly one handover happens, and exactly one dispense is prepared (stock is picked once)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from app import db
from app.auth.models import User
from app.errors import Conflict
from app.notify.models import Notification
from app.patients.models import CareAssignment, Patient
from app.pharmacy import service
from app.pharmacy.models import Dispense, DispensePick, DispenseStatus, StockBatch
from app.prescriptions import service as rx_service
from app.prescriptions.models import Prescription
from tests.factories import Factories
from tests.prescriptions.conftest import add_stock, rx_input

pytestmark = pytest.mark.skipif(os.environ.get("TEST_DB") == "sqlite", reason="needs PostgreSQL row locks")


def _cleanup(engine: sa.Engine, rx_id: int, patient_id: int, user_ids: list[int], facility_id: int) -> None:
    with engine.begin() as conn:
        dispense_ids = sa.select(Dispense.id).where(Dispense.prescription_id == rx_id)
        conn.execute(sa.delete(DispensePick).where(DispensePick.dispense_id.in_(dispense_ids)))
        conn.execute(sa.delete(Dispense).where(Dispense.prescription_id == rx_id))
        conn.execute(sa.text("DELETE FROM medication_statement WHERE patient_id = :p"), {"p": patient_id})
        conn.execute(sa.delete(Prescription).where(Prescription.id == rx_id))
        conn.execute(sa.delete(StockBatch).where(StockBatch.facility_id == facility_id))
        conn.execute(sa.delete(Notification).where(Notification.recipient_id.in_(user_ids)))
        conn.execute(sa.delete(CareAssignment).where(CareAssignment.patient_id == patient_id))
        conn.execute(sa.text("DELETE FROM allergy WHERE patient_id = :p"), {"p": patient_id})
        conn.execute(sa.delete(Patient).where(Patient.id == patient_id))
        conn.execute(sa.delete(User).where(User.id.in_(user_ids)))
        conn.execute(sa.text("DELETE FROM facility WHERE id = :f"), {"f": facility_id})


def _setup(app):
    f = Factories()
    clinic = f.facility(name="Race Clinic")
    doctor = f.doctor()
    patient = f.patient(facility=clinic, with_account=True, doctor=doctor)
    first, second = f.pharmacist(facility=clinic), f.pharmacist(facility=clinic)
    rx = rx_service.create_draft(patient, rx_input(), by=doctor)
    rx_service.sign(rx, by=doctor)
    add_stock(clinic.id, "AMOX500", 50)
    db.session.commit()
    users = [doctor.id, first.id, second.id, patient.user_id,
             *db.session.scalars(sa.select(Patient.registered_by_id).where(Patient.id == patient.id))]
    return clinic, patient, rx, first, users


def _run_pair(app, engine, fn) -> dict[int, str]:
    """Run ``fn(by)`` for two pharmacists in two threads with their own connections, released together."""
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}
    backends: dict[int, int] = {}

    def hold_until_the_other_waits(pharmacist_id: int) -> None:
        """Keep this transaction open until the other pharmacist's connection waits on its locks (or is done)."""
        mine = backends[pharmacist_id]
        other = next(pid for pid in backends if pid != pharmacist_id)
        deadline = time.monotonic() + 10
        with engine.connect() as probe:
            while other not in outcomes and time.monotonic() < deadline:
                if probe.scalar(sa.text("SELECT :mine = ANY(pg_blocking_pids(:other))"),
                                {"mine": mine, "other": backends[other]}):
                    return
                probe.rollback()
                time.sleep(0.01)

    def worker(pharmacist_id: int) -> None:
        with app.test_request_context("/"):
            db.session.registry.set(so.Session(bind=engine, expire_on_commit=False))
            try:
                by = db.session.get(User, pharmacist_id)
                backends[pharmacist_id] = db.session.scalar(sa.text("SELECT pg_backend_pid()"))
                barrier.wait(timeout=10)
                fn(by)
                hold_until_the_other_waits(pharmacist_id)
                db.session.commit()
                outcomes[pharmacist_id] = "done"
            except Conflict:
                db.rollback()
                outcomes[pharmacist_id] = "refused"
            finally:
                db.session.remove()

    return outcomes, worker


def test_two_pharmacists_prepare_once(app, engine):
    db.session.remove()
    db.session.configure(bind=engine, join_transaction_mode="rollback_only")
    with app.test_request_context("/"):
        clinic, patient, rx, _first, users = _setup(app)
        ids = dict(rx=rx.id, patient=patient.id, facility=clinic.id, users=users)
    db.session.remove()

    def prepare(by):
        service.start_dispense(db.session.get(Prescription, ids["rx"]), by=by)

    outcomes, worker = _run_pair(app, engine, prepare)
    threads = [threading.Thread(target=worker, args=(pid,)) for pid in (users[1], users[2])]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes.values()) == ["done", "refused"]
        with engine.connect() as conn:
            dispenses = conn.scalar(sa.select(sa.func.count()).select_from(Dispense)
                                    .where(Dispense.prescription_id == ids["rx"]))
            shelf = conn.scalar(sa.select(StockBatch.quantity).where(StockBatch.facility_id == ids["facility"]))
        assert (dispenses, shelf) == (1, 50 - 21)
    finally:
        _cleanup(engine, ids["rx"], ids["patient"], ids["users"], ids["facility"])


def test_double_handover_is_impossible(app, engine):
    db.session.remove()
    db.session.configure(bind=engine, join_transaction_mode="rollback_only")
    with app.test_request_context("/"):
        clinic, patient, rx, first, users = _setup(app)
        dispense = service.start_dispense(rx, by=first)
        service.transition(dispense, DispenseStatus.IN_PROGRESS, by=first)
        db.session.commit()
        code = service.pickup_code(dispense, by=patient.user)
        ids = dict(rx=rx.id, patient=patient.id, dispense=dispense.id, facility=clinic.id, users=users)
    db.session.remove()

    def hand_over(by):
        service.hand_over(ids["dispense"], service.Handover(code=code, id_document="ID card"), by=by)

    outcomes, worker = _run_pair(app, engine, hand_over)
    threads = [threading.Thread(target=worker, args=(pid,)) for pid in (ids["users"][1], ids["users"][2])]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes.values()) == ["done", "refused"]
        with engine.connect() as conn:
            row = conn.execute(sa.select(Dispense.status, Dispense.handed_over_by_id)
                               .where(Dispense.id == ids["dispense"])).one()
            collected = conn.scalar(sa.select(sa.func.count()).select_from(Notification).where(
                Notification.recipient_id == ids["users"][3], Notification.subject == "Medicine collected"))
            handovers = conn.scalar(sa.text(
                "SELECT count(*) FROM audit_event WHERE action = 'dispense.handover' AND resource_id = :r "
                "AND outcome = 'success'"), {"r": str(ids["dispense"])})
        winner = next(pid for pid, result in outcomes.items() if result == "done")
        assert row.status == DispenseStatus.COMPLETED and row.handed_over_by_id == winner
        assert collected == 1 and handovers == 1
    finally:
        _cleanup(engine, ids["rx"], ids["patient"], ids["users"], ids["facility"])


def test_expire_dispenses_command(app, engine, test_config, capsys):
    """``hospital expire-dispenses`` cancels what waited too long, in its own app and transaction."""
    from datetime import timedelta

    from app.cli import expire_dispenses

    db.session.remove()
    db.session.configure(bind=engine, join_transaction_mode="rollback_only")
    with app.test_request_context("/"):
        clinic, patient, rx, first, users = _setup(app)
        dispense = service.start_dispense(rx, by=first)
        service.transition(dispense, DispenseStatus.IN_PROGRESS, by=first)
        dispense.ready_at = db.utcnow() - timedelta(days=test_config.PICKUP_DEADLINE_DAYS + 1)
        db.session.commit()
        ids = dict(rx=rx.id, patient=patient.id, dispense=dispense.id, facility=clinic.id, users=users)
    db.session.remove()
    try:
        assert ids["dispense"] in expire_dispenses(test_config)
        with engine.connect() as conn:
            status, reason = conn.execute(sa.select(Dispense.status, Dispense.status_reason)
                                          .where(Dispense.id == ids["dispense"])).one()
            shelf = conn.scalar(sa.select(StockBatch.quantity).where(StockBatch.facility_id == ids["facility"]))
        assert status == DispenseStatus.CANCELLED and "not collected" in reason and shelf == 50
    finally:
        _cleanup(engine, ids["rx"], ids["patient"], ids["users"], ids["facility"])
