"""Relay mode through the app: doctor, patient and invited staff each see the others; outsiders get a 404."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import sqlalchemy as sa
from aiortc import RTCSessionDescription

from app import db
from app.audit.models import AuditEvent
from app.consults import service
from media.server import allow_loopback_candidates
from tests.consults.helpers import admitted_consult
from tests.media.relay_support import Participant, wait_for


def _run(coro: Any) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


async def _negotiate(who: Participant, browser: Any, appt: int, *, others: int) -> dict[str, Any]:
    """Like ``Participant.negotiate`` but through the app's API (session cookie, CSRF), not the media service."""
    pairs = sum(1 for t in who.pc.getTransceivers() if t.kind == "video")
    while pairs < max(1, others):
        who.pc.addTransceiver("audio", direction="recvonly")
        who.pc.addTransceiver("video", direction="recvonly")
        pairs += 1
    await who.pc.setLocalDescription(await who.pc.createOffer())
    resp = await asyncio.to_thread(browser.post, f"/api/v1/consults/appointments/{appt}/relay",
                                   json={"sdp": who.pc.localDescription.sdp, "type": "offer"})
    assert resp.status_code == 200, resp.json
    answer = resp.json
    await who.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    who.mapping = {t["mid"]: t["participant_id"] for t in answer["tracks"] if t["kind"] == "video"}
    who.missing = answer["missing"]
    return answer


def test_three_participants_see_each_other_through_the_relay(app, make_client, factories, login, media_config):
    allow_loopback_candidates()
    doctor, patient, appointment = admitted_consult(factories, app)
    nurse = factories.nurse()
    with app.app_context():
        service.invite(db.session.get(type(appointment), appointment.id), user_id=nurse.id, by=doctor)
        db.session.commit()
    a = appointment.id
    doc, pat, nur, outsider = make_client(), make_client(), make_client(), make_client()
    stranger = factories.doctor()
    for browser, user in ((doc, doctor), (pat, patient.user), (nur, nurse), (outsider, stranger)):
        login(browser, user)

    async def consult() -> dict[str, Any]:
        people = {str(doctor.id): ("red", doc), str(patient.user.id): ("green", pat), str(nurse.id): ("blue", nur)}
        parts = {pid: Participant(pid, colour) for pid, (colour, _b) in people.items()}
        try:
            for i, (pid, (_c, browser)) in enumerate(people.items()):
                await _negotiate(parts[pid], browser, a, others=i)
            for pid, (_c, browser) in people.items():  # everyone re-offers once the room is full
                await _negotiate(parts[pid], browser, a, others=2)
            expected = {(me, other) for me in parts for other in parts if me != other}
            assert await wait_for(lambda: all(parts[me].frames_from(o).frames > 5 for me, o in expected),
                                  timeout=20)
            return {(me, o): max(parts[me].frames_from(o).colours, key=parts[me].frames_from(o).colours.get)
                    for me, o in expected}
        finally:
            for p in parts.values():
                await p.close()

    seen = _run(consult())
    colours = {str(doctor.id): "red", str(patient.user.id): "green", str(nurse.id): "blue"}
    assert seen == {(me, o): colours[o] for me, o in seen} and len(seen) == 6

    refused = outsider.post(f"/api/v1/consults/appointments/{a}/relay", json={"sdp": "v=0\r\n", "type": "offer"})
    assert refused.status_code == 404
    assert outsider.post(f"/api/v1/consults/appointments/{a}/relay/leave").status_code == 404
    assert nur.post(f"/api/v1/consults/appointments/{a}/relay/leave").status_code == 204
    with app.app_context():
        joins = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "consult.relay_join",
                                                               AuditEvent.patient_id == patient.id)).all()
        assert sum(e.outcome.value == "success" for e in joins) == 6
        assert db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == stranger.id,
                                                              AuditEvent.outcome == "denied")).first()
        assert db.session.get(type(appointment), a).session.media_mode == "relay"


def test_p2p_failure_switches_the_consult_to_the_relay_once(app, make_client, factories, login):
    doctor, patient, appointment = admitted_consult(factories, app)
    a = appointment.id
    doc, pat, outsider = make_client(), make_client(), make_client()
    stranger = factories.doctor()
    for browser, user in ((doc, doctor), (pat, patient.user), (outsider, stranger)):
        login(browser, user)
    for browser in (doc, pat):
        token = browser.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
        joined = browser.post(f"/api/v1/consults/appointments/{a}/join", json={"token": token}).json
        assert joined["media_mode"] == "p2p"
    url = f"/api/v1/consults/appointments/{a}/relay/switch"

    assert pat.post(url, json={"reason": "because"}).status_code == 422
    assert outsider.post(url, json={"reason": "p2p-failed"}).status_code == 404
    switched = pat.post(url, json={"reason": "p2p-failed"})
    assert switched.status_code == 200 and switched.json == {"mode": "relay", "reason": "p2p-failed"}
    assert doc.post(url, json={"reason": "p2p-failed"}).status_code == 200  # both timed out: one signal only
    modes = [m for m in doc.get(f"/api/v1/consults/appointments/{a}/signals").json if m["kind"] == "mode"]
    assert [(m["mode"], m["reason"], m["from"]) for m in modes] == [("relay", "p2p-failed", patient.user.id)]
    assert not [m for m in pat.get(f"/api/v1/consults/appointments/{a}/signals").json if m["kind"] == "mode"]
    token = doc.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
    assert doc.post(f"/api/v1/consults/appointments/{a}/join", json={"token": token}).json["media_mode"] == "relay"

    assert doc.post(f"/api/v1/consults/appointments/{a}/end", json={"notes": "ok"}).status_code == 200
    late = pat.post(url, json={"reason": "p2p-failed"})
    assert late.status_code == 409 and late.json["detail"] == "This consult has ended."
    with app.app_context():
        events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "consult.relay_switch",
                                                                AuditEvent.patient_id == patient.id)
                                    .order_by(AuditEvent.id)).all()
        assert [(e.actor_id, e.outcome.value) for e in events] == [
            (patient.user.id, "success"), (doctor.id, "success"), (patient.user.id, "denied")]
        assert db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == stranger.id,
                                                              AuditEvent.outcome == "denied")).first()
        assert [e.detail["switched"] for e in events if e.outcome.value == "success"] == [True, False]
