"""Availability, booking rules, status transitions, notifications; double booking refused under concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from app import db
from app.audit.models import AuditEvent, Outcome
from app.consults import service
from app.consults.models import Appointment, AppointmentStatus
from app.errors import Conflict, Forbidden, NotFound
from app.notify import service as notify
from app.notify.models import Notification, NotificationStatus
from app.patients import access
from tests.consults.helpers import current_slot, next_slot_start, open_all_week


def test_doctor_publishes_window_and_patient_books_a_slot_via_api(make_client, factories, login):
    doctor = factories.doctor(name="Dr Quinn")
    patient = factories.patient(with_account=True)
    patient_user = patient.user
    doc_browser, pat_browser = make_client(), make_client()
    login(doc_browser, doctor)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    resp = doc_browser.post("/api/v1/consults/availability", json={
        "weekday": tomorrow.weekday(), "start_time": "09:00:00", "end_time": "10:00:00", "slot_minutes": 20})
    assert resp.status_code == 201, resp.json

    login(pat_browser, patient_user)
    slots = pat_browser.get(f"/api/v1/consults/doctors/{doctor.id}/slots?days=3").json
    starts = [s["start"] for s in slots]
    assert starts == [f"{tomorrow.isoformat()}T09:00:00+00:00", f"{tomorrow.isoformat()}T09:20:00+00:00",
                      f"{tomorrow.isoformat()}T09:40:00+00:00"]
    booked = pat_browser.post("/api/v1/consults/appointments", json={
        "patient_id": patient.id, "doctor_id": doctor.id, "start": starts[1], "reason": "cough"})
    assert booked.status_code == 201, booked.json
    assert booked.json["status"] == "booked"
    left = [s["start"] for s in pat_browser.get(f"/api/v1/consults/doctors/{doctor.id}/slots?days=3").json]
    assert starts[1] not in left and len(left) == 2
    # the doctor now has the patient on their list, and both were told
    assert access.has_care_relationship(db.session.merge(doctor), db.session.merge(patient))
    inbox = doc_browser.get("/notifications")
    assert b"Video consult booked" in inbox.data
    subjects = db.session.scalars(sa.select(Notification.subject).where(
        Notification.recipient_id == patient_user.id)).all()
    assert subjects == ["Video consult booked"]
    # the same slot again is a clear conflict
    again = pat_browser.post("/api/v1/consults/appointments", json={
        "patient_id": patient.id, "doctor_id": doctor.id, "start": starts[1]})
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"


def test_patient_cannot_book_for_someone_else_and_it_is_audited(make_client, factories, login):
    doctor = factories.doctor()
    open_all_week(doctor)
    me = factories.patient(with_account=True)
    other = factories.patient()
    me_user, other_id = me.user, other.id
    browser = make_client()
    login(browser, me_user)
    resp = browser.post("/api/v1/consults/appointments", json={
        "patient_id": other_id, "doctor_id": doctor.id, "start": next_slot_start().isoformat()})
    assert resp.status_code == 404
    denied = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.actor_id == me_user.id,
                                                           AuditEvent.outcome == Outcome.DENIED))
    assert denied is not None and denied.patient_id == other_id


def test_clinic_staff_books_for_their_patient_not_an_unpublished_time(app_ctx, factories):
    doctor = factories.doctor()
    nurse = factories.nurse()
    patient = factories.patient()
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(Conflict):
        service.book(patient=patient, doctor_id=doctor.id, by=nurse,
                     start=datetime.combine(tomorrow, datetime.min.time(), tzinfo=UTC))
    open_all_week(doctor)
    start = next_slot_start(skip=2)
    appt = service.book(patient=patient, doctor_id=doctor.id, start=start, by=nurse)
    assert appt.booked_by_id == nurse.id and appt.end_at - appt.start_at == timedelta(minutes=15)


def test_exception_hides_slots_and_cancel_frees_them(app_ctx, factories):
    doctor = factories.doctor()
    open_all_week(doctor)
    patient = factories.patient(with_account=True)
    start = next_slot_start(skip=3)
    service.add_exception(by=doctor, starts_at=start, ends_at=start + timedelta(minutes=30), reason="ward round")
    free = {s.start for s in service.open_slots(doctor, days=2)}
    assert start not in free and start + timedelta(minutes=15) not in free
    assert start + timedelta(minutes=30) in free
    appt = service.book(patient=patient, doctor_id=doctor.id, start=start + timedelta(minutes=30), by=patient.user)
    assert start + timedelta(minutes=30) not in {s.start for s in service.open_slots(doctor, days=2)}
    service.cancel(appt, by=patient.user, reason="better")
    assert appt.status is AppointmentStatus.CANCELLED
    assert start + timedelta(minutes=30) in {s.start for s in service.open_slots(doctor, days=2)}
    with pytest.raises(Conflict):
        service.check_in(appt, by=patient.user)


def test_reschedule_moves_to_a_free_slot(app_ctx, factories):
    doctor = factories.doctor()
    open_all_week(doctor)
    patient = factories.patient(with_account=True)
    appt = service.book(patient=patient, doctor_id=doctor.id, start=next_slot_start(skip=4), by=patient.user)
    new_start = next_slot_start(skip=6)
    service.reschedule(appt, start=new_start, by=patient.user)
    assert appt.start_at == new_start
    free = {s.start for s in service.open_slots(doctor, days=2)}
    assert next_slot_start(skip=4) in free and new_start not in free


def test_check_in_window_and_status_transitions(app_ctx, factories):
    doctor = factories.doctor()
    open_all_week(doctor)
    patient = factories.patient(with_account=True)
    later = service.book(patient=patient, doctor_id=doctor.id, start=next_slot_start(skip=8), by=patient.user)
    with pytest.raises(Conflict, match="Check-in opens"):
        service.check_in(later, by=patient.user)
    assert "You can check in from" in service.status_text(later)

    now_appt = current_slot(doctor, patient, by=patient.user)
    with pytest.raises(Conflict):
        service.admit(now_appt, by=doctor)  # not checked in yet
    service.check_in(now_appt, by=patient.user)
    assert now_appt.status is AppointmentStatus.ARRIVED
    assert "The doctor will admit you" in service.status_text(now_appt)
    stranger = factories.doctor()
    with pytest.raises(NotFound):
        service.admit(now_appt, by=stranger)
    encounter = service.admit(now_appt, by=doctor)
    service.end_consult(now_appt, by=doctor, notes="Rest and fluids.", diagnosis="Common cold")
    assert now_appt.status is AppointmentStatus.FULFILLED
    assert encounter.status.value == "finished" and encounter.notes == "Rest and fluids."
    with pytest.raises(Conflict):
        service.cancel(now_appt, by=patient.user)
    with pytest.raises(Forbidden):
        service.publish_availability(by=patient.user, weekday=1, start_time=datetime.min.time(),
                                     end_time=datetime.max.time())


def test_outbox_delivers_with_the_log_sender_and_retries_failures(app_ctx, factories):
    user = factories.doctor()
    ok = notify.enqueue(recipient=user, subject="Hello", body="Body")

    def broken(notification: Notification, _config: object) -> None:
        raise OSError("gateway down")

    assert notify.deliver_pending(sender=broken) == 0
    assert ok.status is NotificationStatus.PENDING and ok.attempts == 1 and ok.last_error == "OSError: gateway down"
    assert notify.deliver_pending() >= 1
    assert ok.status is NotificationStatus.SENT and ok.sent_at is not None


def test_concurrent_bookings_of_one_slot_on_separate_connections_book_exactly_once(app, engine, live_factories):
    """Eight requests race for one slot, each on its own PostgreSQL connection: one wins, seven get 409."""
    if engine.dialect.name != "postgresql":
        pytest.skip("concurrency is proven on PostgreSQL")
    doctor = live_factories.doctor()
    open_all_week(doctor)
    patients = [live_factories.patient(with_account=True) for _ in range(8)]
    start = next_slot_start(skip=5)
    barrier = threading.Barrier(len(patients))
    results: list[str] = []
    maker = so.sessionmaker(bind=engine, expire_on_commit=False)

    def attempt(patient_id: int, user_id: int) -> None:
        with app.test_request_context("/"):
            db.session.remove()
            session = db.session  # scoped per thread
            session.configure(bind=engine)
            try:
                from app.auth.models import User
                from app.patients.models import Patient

                patient = session.get(Patient, patient_id)
                user = session.get(User, user_id)
                barrier.wait(timeout=10)
                service.book(patient=patient, doctor_id=doctor.id, start=start, by=user)
                session.commit()
                results.append("booked")
            except Conflict:
                db.rollback()
                results.append("conflict")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=attempt, args=(p.id, p.user_id)) for p in patients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sorted(results) == ["booked"] + ["conflict"] * 7
        with maker() as check:
            rows = check.scalars(sa.select(Appointment).where(Appointment.doctor_id == doctor.id)).all()
            assert len(rows) == 1 and rows[0].start_at == start
    finally:
        with maker() as cleanup:
            cleanup.execute(sa.delete(Appointment).where(Appointment.doctor_id == doctor.id))
            cleanup.commit()
