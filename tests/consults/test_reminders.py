"""Reminders before each consult (a day and an hour before) through the outbox, by email and SMS, exactly once;
the reminder's link lets the patient move or cancel the consult until the cutoff."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.cli import main
from app.consults import reminders, service
from app.consults.models import Appointment, AppointmentReminder, AppointmentStatus
from app.errors import Conflict
from app.notify import service as notify
from app.notify.models import Notification, NotificationStatus
from tests.consults.helpers import next_slot_start, open_all_week

START = datetime(2031, 5, 6, 1, 0, tzinfo=UTC)  # Tuesday 09:00 in Shanghai; no other test books that far ahead


def _shanghai_patient(factories: Any, **fields: Any) -> Any:
    clinic = factories.facility(name="Town clinic")
    clinic.timezone = "Asia/Shanghai"
    db.session.commit()
    return factories.patient(facility=clinic, with_account=True, **fields)


def _appointment(doctor: Any, patient: Any, start: datetime, *, booked: datetime) -> Appointment:
    appt = Appointment(doctor_id=doctor.id, patient_id=patient.id, booked_by_id=patient.user_id, start_at=start,
                       end_at=start + timedelta(minutes=15), slot_key=service.slot_key(doctor.id, start),
                       created_at=booked)
    db.session.add(appt)
    db.session.commit()
    return appt


def _messages(user_id: int, channel: str | None = None) -> list[Notification]:
    query = sa.select(Notification).where(Notification.recipient_id == user_id,
                                          sa.or_(Notification.subject.like("%Reminder%"),
                                                 Notification.subject.like("%提醒%")))  # English or Chinese
    if channel:
        query = query.where(Notification.channel == channel)
    return list(db.session.scalars(query.order_by(Notification.id)))


def test_a_day_and_an_hour_before_in_the_patients_language_and_zone_with_both_links(app_ctx, factories,
                                                                                   two_hour_cutoff):
    doctor = factories.doctor(name="Dr Wang")
    patient = _shanghai_patient(factories, phone="+8613800000001")
    patient.user.locale = "zh_Hans"
    db.session.commit()
    appt = _appointment(doctor, patient, START, booked=START - timedelta(days=5))

    assert appt.id in reminders.send_due(now=START - timedelta(hours=23))
    [email] = _messages(patient.user_id, "email")
    assert "2031年5月6日周二 09:00 中国标准时间" in email.subject  # Shanghai time, written the Chinese way
    assert "Dr Wang" in email.body
    assert f"http://127.0.0.1:5000/consults/{appt.id}/waiting" in email.body  # join
    assert f"http://127.0.0.1:5000/consults/{appt.id}/reschedule" in email.body  # change or cancel
    assert "2031年5月6日周二 07:00 中国标准时间" in email.body  # until the cutoff, two hours before
    [sms] = _messages(patient.user_id, "sms")
    assert sms.address == "+8613800000001" and f"/consults/{appt.id}/waiting" in sms.body
    assert [n.id for n in notify.for_user(patient.user) if n.subject == email.subject] == [email.id]  # in the app once

    assert appt.id not in reminders.send_due(now=START - timedelta(hours=22))  # that reminder went already
    assert appt.id in reminders.send_due(now=START - timedelta(minutes=50))  # the hour-before one
    assert appt.id not in reminders.send_due(now=START - timedelta(minutes=40))
    assert len(_messages(patient.user_id, "email")) == 2 and len(_messages(patient.user_id, "sms")) == 2
    events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "appointment.remind",
                                                            AuditEvent.resource_id == str(appt.id))).all()
    assert sorted(e.detail["lead_minutes"] for e in events) == [60, 1440]


def test_reminder_periods_come_from_configuration(app, app_ctx, factories, monkeypatch):
    monkeypatch.setitem(app.config, "CONSULT_REMINDER_MINUTES", "180")
    doctor, patient = factories.doctor(), _shanghai_patient(factories)
    appt = _appointment(doctor, patient, START, booked=START - timedelta(days=5))
    assert appt.id not in reminders.send_due(now=START - timedelta(hours=23))
    assert appt.id in reminders.send_due(now=START - timedelta(hours=2, minutes=59))
    assert appt.id not in reminders.send_due(now=START - timedelta(minutes=50))


def test_booked_inside_the_reminder_period_gets_no_redundant_reminder(app_ctx, factories):
    doctor, patient = factories.doctor(), _shanghai_patient(factories)
    appt = _appointment(doctor, patient, START, booked=START - timedelta(hours=3))
    # the day-before moment came before the booking
    assert appt.id not in reminders.send_due(now=START - timedelta(hours=2))
    assert _messages(patient.user_id) == []
    assert appt.id in reminders.send_due(now=START - timedelta(minutes=59))


def test_a_late_tick_sends_one_reminder_not_two(app_ctx, factories):
    doctor, patient = factories.doctor(), _shanghai_patient(factories)
    appt = _appointment(doctor, patient, START, booked=START - timedelta(days=3))
    assert appt.id in reminders.send_due(now=START - timedelta(minutes=30))
    assert len(_messages(patient.user_id, "email")) == 1
    assert appt.id not in reminders.send_due(now=START - timedelta(minutes=20))


def test_a_moved_consult_is_reminded_of_its_new_time_and_a_cancelled_one_not_at_all(app_ctx, factories):
    doctor, patient = factories.doctor(), _shanghai_patient(factories)
    moved = _appointment(doctor, patient, START, booked=START - timedelta(days=5))
    cancelled = _appointment(doctor, patient, START + timedelta(hours=1), booked=START - timedelta(days=5))
    service.cancel(cancelled, by=patient.user)
    db.session.commit()
    assert moved.id in reminders.send_due(now=START - timedelta(hours=23))
    moved.start_at, moved.end_at = START + timedelta(days=1), START + timedelta(days=1, minutes=15)
    db.session.commit()
    assert moved.id in reminders.send_due(now=START + timedelta(hours=1))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AppointmentReminder).where(
        AppointmentReminder.appointment_id == cancelled.id)) == 0


class _Gateway(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    answer = 202

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"auth": self.headers["Authorization"], "json": json.loads(body)})
        self.send_response(type(self).answer)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def sms_gateway() -> Any:
    _Gateway.received, _Gateway.answer = [], 202
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/send", _Gateway
    finally:
        server.shutdown()
        server.server_close()


def test_text_messages_go_through_the_http_gateway_and_failures_are_retried(app, app_ctx, factories, sms_gateway):
    url, gateway = sms_gateway
    doctor, patient = factories.doctor(), _shanghai_patient(factories, phone="+8613800000002")
    appt = _appointment(doctor, patient, START, booked=START - timedelta(days=5))
    reminders.send_due(now=START - timedelta(hours=23))
    [sms] = _messages(patient.user_id, "sms")
    config = {**app.config, "SMS_SENDER": "http", "SMS_GATEWAY_URL": url, "SMS_GATEWAY_KEY": "k-123"}

    gateway.answer = 503
    notify.deliver_pending(config)
    db.session.refresh(sms)
    assert sms.status is NotificationStatus.PENDING and sms.attempts == 1 and "503" in (sms.last_error or "")

    gateway.answer = 202
    notify.deliver_pending(config)
    db.session.refresh(sms)
    assert sms.status is NotificationStatus.SENT
    mine = [r for r in gateway.received if r["json"]["reference"] == f"notification-{sms.id}"]
    assert len(mine) == 2 and mine[-1]["auth"] == "Bearer k-123"  # the refused try, then the accepted one
    assert mine[-1]["json"]["to"] == "+8613800000002" and f"/consults/{appt.id}/waiting" in mine[-1]["json"]["text"]
    # the email copy went through the email sender, not the gateway
    [email] = _messages(patient.user_id, "email")
    assert email.status is NotificationStatus.SENT
    assert not [r for r in gateway.received if r["json"]["reference"] == f"notification-{email.id}"]


def test_two_ticks_at_once_on_postgresql_send_each_reminder_once(app, live_factories):
    if db.session.get_bind().dialect.name != "postgresql":
        pytest.skip("needs PostgreSQL")
    doctor, patient = live_factories.doctor(), _shanghai_patient(live_factories)
    start = START + timedelta(days=30, minutes=15 * (live_factories.doctor().id % 50))
    appt = _appointment(doctor, patient, start, booked=start - timedelta(days=5))
    appointment_id, user_id, now = appt.id, patient.user_id, start - timedelta(hours=23)
    db.session.remove()
    first_claimed, results, errors = threading.Event(), {}, []
    pids: dict[str, int] = {}

    def tick(name: str) -> None:
        with app.app_context():
            try:
                pids[name] = db.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                if name == "second":
                    first_claimed.wait(10)
                results[name] = reminders.send_due(now=now)
                if name == "first":
                    first_claimed.set()
                    _wait_until_blocked(app, lambda: pids.get("second"))
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                db.rollback()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=tick, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert appointment_id in results["first"] and appointment_id not in results["second"]
    with app.app_context():
        emails = db.session.scalar(sa.select(sa.func.count()).select_from(Notification).where(
            Notification.recipient_id == user_id, Notification.channel == "email",
            Notification.subject.like("%Reminder%")))
        assert emails == 1
        db.session.remove()


def _wait_until_blocked(app: Any, pid: Any) -> None:
    """Poll (another connection) until the second tick waits on the first one's uncommitted reminder row."""
    engine = app.extensions["db_engine"]
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while datetime.now(UTC) < deadline:
        with engine.connect() as conn:
            waiting = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                (pid(),)).scalar_one() if pid() else 0
        if waiting:
            return
        threading.Event().wait(0.05)
    raise AssertionError("the second tick never waited for the first")


def test_the_hospital_command_sends_due_reminders(live_factories, database_url, monkeypatch, capsys):
    doctor, patient = live_factories.doctor(), _shanghai_patient(live_factories)
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=45)
    appt = _appointment(doctor, patient, start, booked=start - timedelta(days=2))
    appointment_id = appt.id
    db.session.remove()
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["consult-reminders"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Reminded ") and str(appointment_id) in out
    assert main(["consult-reminders"]) == 0
    assert str(appointment_id) not in capsys.readouterr().out  # once


# ---------------------------------------------------------------- the reminder's link: change or cancel


def test_the_link_asks_to_sign_in_then_opens_that_consult(make_client, login, factories):
    doctor, patient = factories.doctor(), _shanghai_patient(factories)
    appt = _appointment(doctor, patient, START, booked=START - timedelta(days=5))
    email, browser = patient.user.email, make_client()
    link = f"/consults/{appt.id}/reschedule"
    resp = browser.get(link)
    assert resp.status_code == 302 and "/sign-in?next=" in resp.headers["Location"]
    signed_in = browser.post(resp.headers["Location"], data={"email": email,
                                                              "password": "correct horse battery staple"})
    assert signed_in.status_code == 302 and signed_in.headers["Location"].startswith(link)
    page = browser.get(link).get_data(as_text=True)
    assert 'id="cancel-consult"' in page and "You can change or cancel online until" in page


@pytest.fixture
def two_hour_cutoff(app: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(app.config, "CONSULT_CHANGE_CUTOFF_MINUTES", 120)


def test_patient_moves_and_cancels_from_the_link_before_the_cutoff(app, make_client, login, factories,
                                                                    two_hour_cutoff):
    doctor = factories.doctor()
    open_all_week(doctor)
    patient = factories.patient(with_account=True)
    user = patient.user
    with app.test_request_context():
        appt = service.book(patient=patient, doctor_id=doctor.id, start=next_slot_start(skip=12), by=user)
        db.session.commit()
    browser = make_client()
    login(browser, user)
    target = next_slot_start(skip=16)
    moved = browser.post(f"/consults/{appt.id}/reschedule", data={"start": target.isoformat()},
                         follow_redirects=True)
    assert "Moved: video consult now on" in moved.get_data(as_text=True)
    assert db.session.get(Appointment, appt.id).start_at == target
    cancelled = browser.post(f"/consults/{appt.id}/cancel", headers={"Referer": f"/consults/{appt.id}/reschedule"},
                             follow_redirects=True)
    text = cancelled.get_data(as_text=True)
    assert "Appointment cancelled." in text and "there is nothing to change" in text
    actions = db.session.scalars(sa.select(AuditEvent.action).where(
        AuditEvent.resource_id == str(appt.id), AuditEvent.outcome == Outcome.SUCCESS,
        AuditEvent.action.in_(["appointment.reschedule", "appointment.cancel"]))).all()
    assert sorted(actions) == ["appointment.cancel", "appointment.reschedule"]


def test_after_the_cutoff_the_patient_is_told_to_call_the_clinic_and_staff_still_can(
        make_client, login, factories, two_hour_cutoff):
    doctor = factories.doctor()
    open_all_week(doctor)
    patient = factories.patient(with_account=True)
    user, nurse = patient.user, factories.nurse(facility=patient.facility)
    soon = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=60)
    appt = _appointment(doctor, patient, soon, booked=soon - timedelta(days=1))
    browser = make_client()
    login(browser, user)
    page = browser.get(f"/consults/{appt.id}/reschedule").get_data(as_text=True)
    assert 'id="change-closed"' in page and "please call your clinic" in page and 'id="slot-picker"' not in page
    refused = browser.post(f"/consults/{appt.id}/cancel", follow_redirects=True).get_data(as_text=True)
    assert "Online changes close 120 minutes before the consult" in refused
    moved = browser.post(f"/consults/{appt.id}/reschedule", data={"start": next_slot_start(skip=20).isoformat()},
                         follow_redirects=True).get_data(as_text=True)
    assert "Online changes close 120 minutes before the consult" in moved
    stored = db.session.get(Appointment, appt.id)
    assert stored.status is AppointmentStatus.BOOKED and stored.start_at == soon
    denied = db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.resource_id == str(appt.id), AuditEvent.outcome == Outcome.DENIED)).all()
    assert {(e.action, e.detail["why"]) for e in denied} == {("appointment.cancel", "after cutoff"),
                                                             ("appointment.reschedule", "after cutoff")}
    staff = make_client()
    login(staff, nurse)
    staff.post(f"/consults/{appt.id}/cancel")
    assert db.session.get(Appointment, appt.id).status is AppointmentStatus.CANCELLED


def test_the_cutoff_is_a_service_rule(app_ctx, factories, two_hour_cutoff):
    doctor, patient = factories.doctor(), factories.patient(with_account=True)
    soon = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=90)
    appt = _appointment(doctor, patient, soon, booked=soon - timedelta(days=1))
    with pytest.raises(Conflict, match="please call your clinic"):
        service.cancel(appt, by=patient.user)
    assert not service.patient_may_change(appt)
