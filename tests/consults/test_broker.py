"""Single-use guest links (interpreter, family), the guest's fence, removing a participant, worker pinning."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.auth.models import Role, User
from app.consults import invites, media, service
from app.consults.models import Appointment, ConsultInvite, ConsultSession
from tests.consults.helpers import admitted_consult, current_slot


def _invite(doc: Any, appt: int, **kw: Any) -> str:
    resp = doc.post(f"/api/v1/consults/appointments/{appt}/invite-links",
                    json={"kind": "interpreter", "display_name": "Ana Interpreter", **kw})
    assert resp.status_code == 201, resp.json
    return resp.json["url"].split("://", 1)[1].split("/", 1)[1]


def _join(browser: Any, appt: int) -> Any:
    token = browser.post(f"/api/v1/consults/appointments/{appt}/token").json["token"]
    return browser.post(f"/api/v1/consults/appointments/{appt}/join", json={"token": token})


def test_invite_link_admits_one_guest_to_this_consult_only(app, make_client, factories, login):
    doctor, patient, appointment = admitted_consult(factories, app)
    _d2, _p2, elsewhere = admitted_consult(factories, app)
    a = appointment.id
    doc = make_client()
    login(doc, doctor)
    path = "/" + _invite(doc, a)
    with app.app_context():
        stored = db.session.scalar(sa.select(ConsultInvite).where(ConsultInvite.appointment_id == a))
        assert stored.token_hash not in path and len(stored.token_hash) == 64  # only the hash is stored

    guest = make_client()
    page = guest.get(path)
    assert page.status_code == 200 and b"Ana Interpreter" in page.data
    entered = guest.post(path)
    assert entered.status_code == 302 and entered.headers["Location"].endswith(f"/consults/{a}/room")
    room = guest.get(f"/consults/{a}/room")
    assert room.status_code == 200 and b"Two-step sign-in" not in room.data and patient.mrn.encode() not in room.data
    assert _join(guest, a).status_code == 200
    assert guest.post(f"/api/v1/consults/appointments/{a}/chat", json={"body": "Hola"}).status_code == 201
    assert guest.get(f"/api/v1/consults/appointments/{a}/state").status_code == 200
    switch = {"reason": "p2p-failed"}  # a guest's page may move its consult to the relay, and only that one
    assert guest.post(f"/api/v1/consults/appointments/{a}/relay/switch", json=switch).status_code == 200
    assert guest.post(f"/api/v1/consults/appointments/{elsewhere.id}/relay/switch", json=switch).status_code == 404
    assert doc.get(f"/api/v1/consults/appointments/{a}/chat").json[-1]["body"] == "Hola"

    # Nothing else: not the chart, not search, not the appointment record, not another consult.
    for url in (f"/patients/{patient.id}", "/patients?q=a", f"/api/v1/patients/{patient.id}", "/api/v1/patients",
                f"/api/v1/consults/appointments/{a}", "/api/v1/consults/appointments",
                f"/api/v1/consults/appointments/{a}/recordings", f"/consults/{elsewhere.id}/room",
                f"/api/v1/consults/appointments/{elsewhere.id}/state", "/me", "/notifications"):
        assert guest.get(url).status_code == 404, url
    assert guest.post(f"/api/v1/consults/appointments/{a}/end", json={}).status_code == 404
    left = guest.get("/consults")  # where the room page sends people who leave
    assert left.status_code == 200 and f"/consults/{a}/room".encode() in left.data
    with app.app_context():
        invite = db.session.scalar(sa.select(ConsultInvite).where(ConsultInvite.appointment_id == a))
        guest_user = db.session.get(User, invite.guest_user_id)
        assert guest_user.role is Role.GUEST and guest_user.full_name == "Ana Interpreter (interpreter)"
        outside = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "guest.outside",
                                                                 AuditEvent.actor_id == guest_user.id)).all()
        assert len(outside) == 13

    # The link works once, for anyone.
    again = make_client()
    assert again.get(path).status_code == 410
    second = again.post(path)
    assert second.status_code == 410 and b"already been used" in second.data
    assert again.get(f"/consults/{a}/room").status_code == 302  # not signed in

    # The guest's access ends with the consult.
    assert doc.post(f"/consults/{a}/end", data={}).status_code == 302
    ended = guest.get(f"/consults/{a}/room")
    assert ended.status_code == 410 and b"has ended" in ended.data
    assert guest.get(f"/api/v1/consults/appointments/{a}/state").status_code == 401
    with app.app_context():
        assert db.session.get(User, guest_user.id).active is False
        redeems = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "consult.invite_redeem",
                                                            AuditEvent.patient_id == patient.id)).all()
        assert sorted(e.outcome.value for e in redeems) == ["denied", "success"]


def test_expired_or_bad_invite_links_are_refused_kindly(app, make_client, factories, login):
    doctor, patient, appointment = admitted_consult(factories, app)
    doc, pat, visitor = make_client(), make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    path = "/" + _invite(doc, appointment.id, kind="family", display_name="Sam", minutes=5)
    with app.app_context():
        invite = db.session.scalar(sa.select(ConsultInvite).where(ConsultInvite.appointment_id == appointment.id))
        invite.expires_at = db.utcnow() - timedelta(seconds=1)
        db.session.commit()
    resp = visitor.post(path)
    assert resp.status_code == 410 and b"expired" in resp.data
    assert visitor.get("/consults/invite/not-a-real-token").status_code == 410
    # Only the doctor makes links, with sane values.
    assert pat.post(f"/api/v1/consults/appointments/{appointment.id}/invite-links",
                    json={"kind": "family", "display_name": "X"}).status_code == 404
    assert doc.post(f"/api/v1/consults/appointments/{appointment.id}/invite-links",
                    json={"kind": "friend", "display_name": "X"}).status_code == 422


def test_doctor_removes_a_participant_who_cannot_rejoin(app, make_client, factories, login):
    doctor, patient, appointment = admitted_consult(factories, app)
    a = appointment.id
    doc, guest, pat = make_client(), make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    guest.post("/" + _invite(doc, a))
    old_token = guest.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
    listed = doc.get(f"/api/v1/consults/appointments/{a}/participants").json
    guest_row = next(p for p in listed["participants"] if p["kind"] == "guest")
    assert guest_row["can_remove"] and listed["invites"][0]["state"] == "used"
    assert pat.post(f"/api/v1/consults/appointments/{a}/participants/{guest_row['user_id']}/remove").status_code \
        == 404  # doctor-only
    assert doc.post(f"/api/v1/consults/appointments/{a}/participants/{doctor.id}/remove").status_code == 422
    assert doc.post(f"/api/v1/consults/appointments/{a}/participants/{guest_row['user_id']}/remove").status_code \
        == 204

    # The removed guest learns it, everyone else gets a bye; the old token and a new one are refused.
    signals = guest.get(f"/api/v1/consults/appointments/{a}/signals?after=0").json
    assert any(s["kind"] == "removed" for s in signals)
    bye = [s for s in pat.get(f"/api/v1/consults/appointments/{a}/signals?after=0").json if s["kind"] == "bye"]
    assert bye[-1]["reason"] == "removed" and bye[-1]["from"] == guest_row["user_id"]
    assert guest.post(f"/api/v1/consults/appointments/{a}/join", json={"token": old_token}).status_code == 401
    assert guest.post(f"/api/v1/consults/appointments/{a}/token").status_code == 401  # guest access is over
    assert guest.get(f"/consults/{a}/room").status_code == 302  # to the sign-in page
    # Anyone removed (here the patient) is refused a new join token too.
    assert doc.post(f"/api/v1/consults/appointments/{a}/participants/{patient.user.id}/remove").status_code == 204
    refused = pat.post(f"/api/v1/consults/appointments/{a}/token")
    assert refused.status_code == 403 and "removed" in refused.json["detail"]
    with app.app_context():
        removals = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "consult.remove",
                                                             AuditEvent.patient_id == patient.id)).all()
        assert [e.outcome.value for e in removals].count("success") == 2


def test_consult_stays_pinned_to_its_media_worker(app, factories, app_ctx):
    app.config["MEDIA_WORKERS"] = "http://127.0.0.1:9001,http://127.0.0.1:9002"
    try:
        ids = []
        for _ in range(4):
            _doctor, _patient, appt = admitted_consult(factories, app)
            ids.append(db.session.get(Appointment, appt.id).session.id)
        chosen = [media.worker_for(db.session.get(ConsultSession, i)) for i in ids]
        assert sorted(chosen) == ["http://127.0.0.1:9001"] * 2 + ["http://127.0.0.1:9002"] * 2  # least loaded
        app.config["MEDIA_WORKERS"] = "http://127.0.0.1:9003,http://127.0.0.1:9002,http://127.0.0.1:9001"
        db.session.expire_all()
        assert [media.worker_for(db.session.get(ConsultSession, i)) for i in ids] == chosen
        stored = db.session.scalars(sa.select(ConsultSession.media_worker).where(ConsultSession.id.in_(ids))).all()
        assert sorted(stored) == sorted(chosen)
    finally:
        app.config["MEDIA_WORKERS"] = ""


def test_one_link_redeemed_concurrently_admits_exactly_one_guest(app, engine, live_factories):
    """Six browsers use the same link at once, each on its own PostgreSQL connection: one guest, five refusals."""
    if engine.dialect.name != "postgresql":
        pytest.skip("concurrency is proven on PostgreSQL")
    doctor = live_factories.doctor()
    patient = live_factories.patient(with_account=True, doctor=doctor)
    appt = current_slot(doctor, patient, by=patient.user)
    service.check_in(appt, by=patient.user)
    service.admit(appt, by=doctor)
    _invite, token = invites.create_invite(appt, by=doctor, kind="family", display_name="Kim")
    db.session.commit()
    barrier = threading.Barrier(6)
    results: list[str] = []

    def attempt() -> None:
        with app.test_request_context("/"):
            db.session.remove()
            db.session.configure(bind=engine)
            try:
                barrier.wait(timeout=10)
                outcome = invites.redeem(token)
                db.session.commit()
                results.append("guest" if isinstance(outcome, User) else "refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["guest"] + ["refused"] * 5
    db.session.remove()
    guests = db.session.scalars(sa.select(ConsultInvite.guest_user_id).where(
        ConsultInvite.appointment_id == appt.id)).all()
    assert len(guests) == 1 and guests[0] is not None
