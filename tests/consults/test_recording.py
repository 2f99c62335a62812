"""Recording through the app: consent (give, revoke, audit), doctor-only start/stop in relay mode with real aiortc
peers and the real media process, the stored encrypted file, playback for the doctor and the patient only."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import av
import requests
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.consults.models import Appointment, ConsultRecording, RecordingConsent
from media.server import allow_loopback_candidates
from tests.consults.conftest import MEDIA_SECRET
from tests.consults.helpers import admitted_consult
from tests.consults.test_relay import _negotiate, _run
from tests.media.relay_support import Participant, wait_for


def _events(app: Any, action: str, outcome: str | None = None, *, patient: Any) -> list[AuditEvent]:
    """This test's audit rows (browser tests elsewhere in the run commit theirs)."""
    with app.app_context():
        query = sa.select(AuditEvent).where(AuditEvent.action == action, AuditEvent.patient_id == patient.id)
        if outcome:
            query = query.where(AuditEvent.outcome == outcome)
        return list(db.session.scalars(query))


def _signals(client: Any, appt: int) -> list[dict[str, Any]]:
    return client.get(f"/api/v1/consults/appointments/{appt}/signals?after=0").json


def test_consent_is_given_and_withdrawn_by_the_patient_or_their_clinic_and_audited(app, make_client, factories,
                                                                                  login):
    doctor, patient, appointment = admitted_consult(factories, app)
    clinic = factories.nurse()  # clinic staff of the patient's clinic
    doc, pat, staff = make_client(), make_client(), make_client()
    for browser, user in ((doc, doctor), (pat, patient.user), (staff, clinic)):
        login(browser, user)
    url = f"/api/v1/consults/appointments/{appointment.id}/recording"

    state = pat.get(url).json
    assert state["consent"] is None and state["can_consent"] and not state["can_record"]
    assert doc.post(f"{url}/consent").status_code == 403  # the doctor cannot consent for the patient
    assert pat.post(f"{url}/consent").status_code == 201
    assert doc.get(url).json["consent"]["on_behalf"] is False
    assert doc.get(url).json["can_record"] is True
    assert pat.post(f"{url}/consent/revoke").json["revoked"] is True
    assert pat.get(url).json["consent"] is None
    assert staff.post(f"{url}/consent").status_code == 201  # on the patient's behalf, recorded as such
    assert doc.get(url).json["consent"]["on_behalf"] is True

    with app.app_context():
        rows = db.session.scalars(sa.select(RecordingConsent).where(
            RecordingConsent.appointment_id == appointment.id).order_by(RecordingConsent.id)).all()
        assert [(r.given_by_id, r.revoked_by_id is not None) for r in rows] == \
            [(patient.user.id, True), (clinic.id, False)]
    assert len(_events(app, "consult.recording_consent", "success", patient=patient)) == 2
    assert len(_events(app, "consult.recording_consent", "denied", patient=patient)) == 1
    assert len(_events(app, "consult.recording_revoke", "success", patient=patient)) == 1


def test_recording_needs_consent_and_the_doctor(app, make_client, factories, login, media_config):
    doctor, patient, appointment = admitted_consult(factories, app)
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    url = f"/api/v1/consults/appointments/{appointment.id}/recording"
    resp = doc.post(f"{url}/start")
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    assert "consent" in resp.json["detail"]
    assert _events(app, "consult.recording_start", "denied", patient=patient)
    pat.post(f"{url}/consent")
    assert pat.post(f"{url}/start").status_code == 404  # doctor-only, audited like a missing record
    assert doc.post(f"{url}/stop").status_code == 409  # nothing is being recorded
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ConsultRecording).where(
            ConsultRecording.appointment_id == appointment.id)) == 0


def test_recorded_consult_plays_for_doctor_and_patient_only(app, make_client, factories, login, media_config):
    allow_loopback_candidates()
    doctor, patient, appointment = admitted_consult(factories, app)
    other_doctor, nurse = factories.doctor(), factories.nurse()
    doc, pat, other, nur = make_client(), make_client(), make_client(), make_client()
    for browser, user in ((doc, doctor), (pat, patient.user), (other, other_doctor), (nur, nurse)):
        login(browser, user)
    a = appointment.id
    url = f"/api/v1/consults/appointments/{a}/recording"
    assert pat.post(f"{url}/consent").status_code == 201

    # Before anyone is on the relay the worker has nothing to record: the app moves the consult to the relay
    # (a "mode" signal) and asks to retry.
    first = doc.post(f"{url}/start")
    assert first.status_code == 409 and first.headers["Retry-After"] == "3"
    assert {"kind": "mode", "mode": "relay", "reason": "recording"}.items() <= _signals(pat, a)[-1].items()
    # The consult is now pinned to its worker: a changed worker list no longer moves it.
    app.config["MEDIA_WORKERS"] = "http://127.0.0.1:9"

    async def consult() -> tuple[dict[str, Any], float]:
        people = {str(doctor.id): ("red", doc), str(patient.user.id): ("green", pat)}
        parts = {pid: Participant(pid, colour) for pid, (colour, _b) in people.items()}
        try:
            for i, (pid, (_c, browser)) in enumerate(people.items()):
                await _negotiate(parts[pid], browser, a, others=i)
            await _negotiate(parts[str(doctor.id)], doc, a, others=1)  # refreshes the doctor's track map
            me, them = parts[str(doctor.id)], parts[str(patient.user.id)]
            assert await wait_for(lambda: me.frames_from(them.pid).frames > 10
                                  and them.frames_from(me.pid).frames > 10, timeout=20)
            started = await asyncio.to_thread(doc.post, f"{url}/start")
            assert started.status_code == 201, started.json
            began = time.monotonic()
            await asyncio.sleep(3)
            stopped = await asyncio.to_thread(doc.post, f"{url}/stop")
            return stopped.json, time.monotonic() - began
        finally:
            for p in parts.values():
                await p.close()

    try:
        stopped, wall = _run(consult())
    finally:
        app.config["MEDIA_WORKERS"] = ""
    assert stopped["status"] == "stored" and stopped["size"] > 10_000 and len(stopped["sha256"]) == 64
    kinds = [s["kind"] for s in _signals(pat, a)]
    assert "recording" in kinds
    assert [s["state"] for s in _signals(pat, a) if s["kind"] == "recording"] == ["started", "stopped"]

    with app.app_context():
        row = db.session.get(ConsultRecording, stopped["id"])
        appt = db.session.get(Appointment, a)
        assert row.encounter_id == appt.encounter.id and row.started_by_id == doctor.id
        key = row.object_key
        from app.imaging.service import object_store

        assert object_store().stat(key).size == stopped["size"]  # the encrypted file is in the object store

    listed = pat.get(f"/api/v1/consults/appointments/{a}/recordings").json
    assert [r["id"] for r in listed] == [stopped["id"]]
    media_url = listed[0]["url"]
    for browser in (doc, pat):
        resp = browser.get(media_url)
        assert resp.status_code == 200 and resp.mimetype == "video/webm"
        assert int(resp.headers["Content-Length"]) == len(resp.get_data())
        with av.open(io.BytesIO(resp.get_data())) as container:
            duration = container.duration / av.time_base if container.duration else \
                max(float(s.duration * s.time_base) for s in container.streams if s.duration)
            assert {s.type for s in container.streams} == {"video", "audio"}
            assert abs(duration - wall) <= 0.1 * wall, (duration, wall)
    full = doc.get(media_url).get_data()
    part = doc.get(media_url, headers={"Range": "bytes=100-4195"})
    assert part.status_code == 206 and part.get_data() == full[100:4196]
    assert part.headers["Content-Range"] == f"bytes 100-4195/{len(full)}"
    assert doc.get(media_url, headers={"Range": f"bytes={len(full) + 10}-"}).status_code == 416
    for outsider in (other, nur):
        assert outsider.get(media_url).status_code == 404
        assert outsider.get(f"/api/v1/consults/appointments/{a}/recordings").status_code == 404
    plays = _events(app, "consult.recording_play", patient=patient)
    assert sum(e.outcome.value == "success" for e in plays) == 5
    assert {e.actor_id for e in plays if e.outcome.value == "denied"} == {other_doctor.id, nurse.id}
    page = pat.get(f"/consults/{a}/recordings")
    assert page.status_code == 200 and media_url.encode() in page.data
    link = f"/consults/{a}/recordings#recording-{stopped['id']}".encode()
    assert link in pat.get("/consults").data  # the patient's consult list
    assert link in doc.get(f"/patients/{patient.id}").data  # the treating doctor's view of the chart
    assert link not in other.get(f"/consults/{a}/recordings").data
    assert b"consult-recordings" not in nur.get(f"/patients/{patient.id}").data

    # Without consent nothing more is recorded.
    assert pat.post(f"{url}/consent/revoke").status_code == 200
    assert doc.post(f"{url}/start").status_code == 409
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ConsultRecording).where(
            ConsultRecording.appointment_id == a)) == 1


def test_withdrawing_consent_or_ending_the_consult_stops_the_recording(app, make_client, factories, login,
                                                                        media_config):
    allow_loopback_candidates()
    doctor, patient, appointment = admitted_consult(factories, app)
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    a = appointment.id
    url = f"/api/v1/consults/appointments/{a}/recording"
    pat.post(f"{url}/consent")

    async def consult() -> list[Any]:
        people = {str(doctor.id): ("red", doc), str(patient.user.id): ("green", pat)}
        parts = {pid: Participant(pid, colour) for pid, (colour, _b) in people.items()}
        try:
            for i, (pid, (_c, browser)) in enumerate(people.items()):
                await _negotiate(parts[pid], browser, a, others=i)
            await _negotiate(parts[str(doctor.id)], doc, a, others=1)
            me = parts[str(doctor.id)]
            assert await wait_for(lambda: me.frames_from(str(patient.user.id)).frames > 5, timeout=20)
            answers = [await asyncio.to_thread(doc.post, f"{url}/start")]
            await asyncio.sleep(1.5)
            answers.append(await asyncio.to_thread(pat.post, f"{url}/consent/revoke"))
            answers.append(await asyncio.to_thread(doc.get, url))
            answers.append(await asyncio.to_thread(doc.post, f"{url}/start"))  # no consent any more
            await asyncio.to_thread(pat.post, f"{url}/consent")
            answers.append(await asyncio.to_thread(doc.post, f"{url}/start"))
            await asyncio.sleep(1.0)
            answers.append(await asyncio.to_thread(doc.post, f"/api/v1/consults/appointments/{a}/end", json={}))
            return answers
        finally:
            for p in parts.values():
                await p.close()

    started, revoked, state, refused, restarted, ended = _run(consult())
    assert started.status_code == 201 and revoked.json["revoked"] is True
    assert state.json["recording"] is False and state.json["consent"] is None
    assert refused.status_code == 409
    assert restarted.status_code == 201 and ended.status_code == 200
    with app.app_context():
        rows = db.session.scalars(sa.select(ConsultRecording).where(ConsultRecording.appointment_id == a)
                                  .order_by(ConsultRecording.id)).all()
        assert [(r.status.value, r.stop_reason) for r in rows] == [("stored", "consent revoked"),
                                                                   ("stored", "consult ended")]
        assert rows[0].stopped_by_id == patient.user.id and 1.0 < rows[0].duration < 3.0


def test_byte_ranges_decrypt_only_the_chunks_they_need(app, app_ctx, tmp_path):
    """A player seeking in a multi-chunk recording gets exactly the bytes asked for."""
    import os
    from types import SimpleNamespace

    from app.consults import recordings
    from app.imaging.service import object_store
    from storage.recording_format import CHUNK, derive_key, encrypt_file

    plain = os.urandom(2 * CHUNK + 12345)
    (tmp_path / "in.webm").write_bytes(plain)
    rid = "ab" * 12
    digest, size = encrypt_file(tmp_path / "in.webm", tmp_path / "out.enc", derive_key(recordings.master_key(), rid),
                                {"recording_id": rid, "consult_id": "consult-1", "consent_id": "1"})
    with (tmp_path / "out.enc").open("rb") as fh:
        object_store().put(recordings.object_key(rid), fh)
    row = SimpleNamespace(object_key=recordings.object_key(rid), size=size, recording_id=rid)
    lay = recordings.layout(row)
    assert lay.size == len(plain) and lay.chunks == 3
    assert b"".join(recordings.plaintext(row)) == plain
    for start, stop in ((0, 10), (CHUNK - 5, CHUNK + 5), (CHUNK, 2 * CHUNK), (2 * CHUNK + 100, len(plain)),
                        (0, len(plain))):
        assert b"".join(recordings.plaintext_range(row, lay, start, stop)) == plain[start:stop], (start, stop)


def test_removing_a_relayed_participant_drops_their_relay_connection(app, make_client, factories, login,
                                                                     media_config):
    allow_loopback_candidates()
    doctor, patient, appointment = admitted_consult(factories, app)
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    a = appointment.id
    with app.app_context():
        session_id = db.session.get(Appointment, a).session.id
    state_url = f"{media_config}/relay/consult-{session_id}/state"

    def in_room() -> set[str]:
        resp = requests.get(state_url, headers={"Authorization": f"Bearer {MEDIA_SECRET}"}, timeout=5)
        return {p["participant_id"] for p in resp.json()["participants"]} if resp.ok else set()

    async def consult() -> tuple[set[str], set[str], int]:
        people = {str(doctor.id): ("red", doc), str(patient.user.id): ("green", pat)}
        parts = {pid: Participant(pid, colour) for pid, (colour, _b) in people.items()}
        try:
            for i, (pid, (_c, browser)) in enumerate(people.items()):
                await _negotiate(parts[pid], browser, a, others=i)
            before = await asyncio.to_thread(in_room)
            removed = await asyncio.to_thread(
                doc.post, f"/api/v1/consults/appointments/{a}/participants/{patient.user.id}/remove")
            assert removed.status_code == 204
            after = await asyncio.to_thread(in_room)
            again = await asyncio.to_thread(pat.post, f"/api/v1/consults/appointments/{a}/relay",
                                            json={"sdp": parts[str(patient.user.id)].pc.localDescription.sdp,
                                                  "type": "offer"})
            return before, after, again.status_code
        finally:
            for p in parts.values():
                await p.close()

    before, after, again = _run(consult())
    assert before == {str(doctor.id), str(patient.user.id)}
    assert after == {str(doctor.id)} and again == 403
    kinds = [s["kind"] for s in _signals(pat, a)]
    assert "removed" in kinds
