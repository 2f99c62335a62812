"""Joining and signaling through the app: tokens, permissions, bad input, rate limits, TURN credentials."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import threading
import time
import uuid
from datetime import timedelta

import sqlalchemy as sa

from app import create_app, db
from app.audit.models import AuditEvent, Outcome
from app.auth.models import User
from app.consults import signals
from app.consults.models import Appointment, ConsultSession
from tests.conftest import CsrfClient
from tests.consults.helpers import admitted_consult

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"


def _join(browser, appt_id):
    token = browser.post(f"/api/v1/consults/appointments/{appt_id}/token")
    assert token.status_code == 200, token.json
    resp = browser.post(f"/api/v1/consults/appointments/{appt_id}/join", json={"token": token.json["token"]})
    assert resp.status_code == 200, resp.json
    return resp.json


def _denials(user_id, action):
    return db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == user_id,
                                                          AuditEvent.action == action,
                                                          AuditEvent.outcome == Outcome.DENIED)).all()


def _setup(app, factories, make_client, login):
    doctor, patient, appt = admitted_consult(factories, app)
    ids = {"doctor": doctor.id, "patient_user": patient.user_id, "patient": patient.id, "appt": appt.id}
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    return ids, doc, pat


def test_offer_and_answer_cross_between_participants(app, make_client, factories, login):
    ids, doc, pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    joined = _join(doc, a)
    assert joined["kind"] == "doctor" and joined["participants"][0]["kind"] == "patient"
    _join(pat, a)
    hello = doc.get(f"/api/v1/consults/appointments/{a}/signals").json
    assert [m["kind"] for m in hello] == ["hello"] and hello[0]["from"] == ids["patient_user"]
    sent = doc.post(f"/api/v1/consults/appointments/{a}/signals", json={"kind": "offer", "sdp": OFFER, "gen": "g1"})
    assert sent.status_code == 201
    cand = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    assert doc.post(f"/api/v1/consults/appointments/{a}/signals",
                    json={"kind": "candidate", "candidate": cand, "gen": "g1"}).status_code == 201
    got = pat.get(f"/api/v1/consults/appointments/{a}/signals").json
    kinds = [m["kind"] for m in got]
    assert kinds[-2:] == ["offer", "candidate"] and got[-2]["sdp"] == OFFER and got[-1]["candidate"] == cand
    # the stream resumes after the last seen id
    assert pat.get(f"/api/v1/consults/appointments/{a}/signals?after={got[-1]['id']}").json == []
    # chat crosses and stays with the encounter
    assert pat.post(f"/api/v1/consults/appointments/{a}/chat", json={"body": "Can you hear me?"}).status_code == 201
    chat = [m for m in doc.get(f"/api/v1/consults/appointments/{a}/signals?after={sent.json['id']}").json
            if m["kind"] == "chat"]
    assert chat[0]["body"] == "Can you hear me?"
    assert [m["body"] for m in doc.get(f"/api/v1/consults/appointments/{a}/chat").json] == ["Can you hear me?"]
    # leave and join are audited
    assert pat.post(f"/api/v1/consults/appointments/{a}/leave").status_code == 204
    actions = db.session.scalars(sa.select(AuditEvent.action).where(
        AuditEvent.resource_type == "ConsultSession", AuditEvent.outcome == Outcome.SUCCESS,
        AuditEvent.patient_id == ids["patient"])).all()
    assert actions.count("consult.join") == 2 and "consult.leave" in actions


def test_malformed_sdp_and_bad_kinds_are_refused(app, make_client, factories, login):
    ids, doc, _pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    _join(doc, a)
    for body in ({"kind": "offer", "sdp": "hello"}, {"kind": "offer"}, {"kind": "offer", "sdp": "v=0\r\nx\r\n"},
                 {"kind": "shout", "sdp": OFFER},
                 {"kind": "candidate", "candidate": {"candidate": "<script>"}},
                 {"kind": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n" + "a=x\x00\r\nm=video 9\r\n"}):
        resp = doc.post(f"/api/v1/consults/appointments/{a}/signals", json=body)
        assert resp.status_code == 422, (body, resp.json)
        assert resp.headers["Content-Type"] == "application/problem+json"


def test_third_person_and_other_consults_get_404_and_are_audited(app, make_client, factories, login):
    ids, doc, pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    other_doctor, other_patient, other_appt = admitted_consult(factories, app)
    b = other_appt.id
    intruder = factories.doctor()
    nosy = make_client()
    login(nosy, intruder)
    assert nosy.post(f"/api/v1/consults/appointments/{a}/token").status_code == 404
    assert nosy.get(f"/api/v1/consults/appointments/{a}/events").status_code == 404
    # a rightful participant of A sending an offer to consult B
    _join(pat, a)
    assert pat.post(f"/api/v1/consults/appointments/{b}/signals",
                    json={"kind": "offer", "sdp": OFFER}).status_code == 404
    assert pat.get(f"/api/v1/consults/appointments/{b}/signals").status_code == 404
    # a token minted for consult A is refused by consult B even for B's own doctor
    token_a = doc.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
    other = make_client()
    login(other, other_doctor)
    assert other.post(f"/api/v1/consults/appointments/{b}/join", json={"token": token_a}).status_code == 403
    assert _denials(intruder.id, "appointment.read") and _denials(ids["patient_user"], "appointment.read")
    assert _denials(other_doctor.id, "consult.join")


def test_replayed_and_expired_tokens_are_refused(app, make_client, factories, login, clock):
    ids, doc, _pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    token = doc.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
    assert doc.post(f"/api/v1/consults/appointments/{a}/join", json={"token": token}).status_code == 200
    replay = doc.post(f"/api/v1/consults/appointments/{a}/join", json={"token": token})
    assert replay.status_code == 403 and "Reload" in replay.json["detail"]
    tampered = doc.post(f"/api/v1/consults/appointments/{a}/token").json["token"][:-2] + "xx"
    assert doc.post(f"/api/v1/consults/appointments/{a}/join", json={"token": tampered}).status_code == 403
    stale = doc.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
    clock.advance(timedelta(seconds=app.config["CONSULT_JOIN_TOKEN_SECONDS"] + 1))
    assert doc.post(f"/api/v1/consults/appointments/{a}/join", json={"token": stale}).status_code == 403
    clock.reset()
    whys = [e.detail["why"] for e in _denials(ids["doctor"], "consult.join")]
    assert sorted(whys) == ["bad signature", "expired", "replayed"]


def test_patient_waits_until_admitted_and_nobody_joins_a_finished_consult(app, make_client, factories, login):
    doctor, patient, appt = admitted_consult(factories, app, admit=False)
    a, patient_user, doctor_id = appt.id, patient.user, doctor.id
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient_user)
    waiting = pat.post(f"/api/v1/consults/appointments/{a}/token")
    assert waiting.status_code == 409 and "admitted" in waiting.json["detail"]
    state = pat.get(f"/api/v1/consults/appointments/{a}/state").json
    assert state["status"] == "arrived" and not state["admitted"] and "will admit you" in state["message"]
    assert doc.post(f"/api/v1/consults/appointments/{a}/admit").status_code == 200
    token = pat.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
    ended = doc.post(f"/api/v1/consults/appointments/{a}/end", json={"notes": "Fine", "diagnosis": "Well"})
    assert ended.status_code == 200 and ended.json["status"] == "finished"
    late = pat.post(f"/api/v1/consults/appointments/{a}/join", json={"token": token})
    assert late.status_code == 409 and late.json["detail"] == "This consult has ended."
    assert pat.get(f"/api/v1/consults/appointments/{a}").json["status"] == "fulfilled"
    assert _denials(patient_user.id, "consult.join")
    assert doctor_id


def test_signaling_flood_gets_429_and_the_consult_goes_on(app, make_client, factories, login):
    ids, doc, pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    _join(doc, a)
    _join(pat, a)
    old = app.config["SIGNAL_RATE_LIMIT"]
    app.config["SIGNAL_RATE_LIMIT"] = 10
    try:
        codes = [pat.post(f"/api/v1/consults/appointments/{a}/signals",
                          json={"kind": "candidate", "candidate": None}).status_code for _ in range(14)]
        assert codes.count(201) == 10 and codes[-1] == 429
        flood = pat.post(f"/api/v1/consults/appointments/{a}/signals", json={"kind": "offer", "sdp": OFFER})
        assert flood.status_code == 429 and flood.mimetype == "application/problem+json"
        assert flood.json["title"] == "Too many attempts" and flood.json["detail"] == \
            "Too many signaling messages; slow down."
        assert 1 <= int(flood.headers["Retry-After"]) <= 10
        # chat lines draw on the same budget
        chat = pat.post(f"/api/v1/consults/appointments/{a}/chat", json={"body": "hello?"})
        assert chat.status_code == 429 and chat.json["detail"] == "Too many messages; slow down."
        # the doctor is unaffected
        assert doc.post(f"/api/v1/consults/appointments/{a}/signals",
                        json={"kind": "offer", "sdp": OFFER}).status_code == 201
    finally:
        app.config["SIGNAL_RATE_LIMIT"] = old
    assert any(e.detail == {"why": "rate limit"} for e in _denials(ids["patient_user"], "consult.signal"))
    flooded = [e for e in _denials(ids["patient_user"], "consult.chat") if e.detail == {"why": "rate limit"}]
    assert flooded and flooded[-1].patient_id == ids["patient"]


def test_turn_credentials_follow_the_coturn_rest_scheme(app, make_client, factories, login):
    ids, doc, _pat = _setup(app, factories, make_client, login)
    old = {k: app.config[k] for k in ("STUN_URLS", "TURN_URLS", "TURN_SECRET", "TURN_TTL_SECONDS")}
    app.config.update(STUN_URLS="stun:stun.example.org:3478", TURN_URLS="turn:turn.example.org:3478?transport=udp",
                      TURN_SECRET="s3cret", TURN_TTL_SECONDS=600)
    try:
        before = int(time.time())
        servers = _join(doc, ids["appt"])["ice_servers"]
    finally:
        app.config.update(old)
    assert servers[0] == {"urls": ["stun:stun.example.org:3478"]}
    turn = servers[1]
    expiry, user = turn["username"].split(":")
    assert user == str(ids["doctor"]) and before + 600 <= int(expiry) <= before + 602
    expected = base64.b64encode(hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()).decode()
    assert turn["credential"] == expected


def test_with_redis_the_message_budget_is_shared_by_two_servers(test_config, factories, login, db_session):
    """Two app instances (two servers) count one sender's messages in one Redis: 5 in all, not 5 each."""
    cfg = copy.copy(test_config)
    cfg.RATELIMIT_STORAGE_URI, cfg.SIGNAL_RATE_LIMIT = "redis://127.0.0.1:6379/12", 5
    cfg.RATELIMIT_KEY_PREFIX = f"hospital-test-{uuid.uuid4().hex}"  # counts of no other run
    servers = [create_app(cfg), create_app(cfg)]
    for server in servers:
        server.test_client_class = CsrfClient
    doctor, _patient, appt = admitted_consult(factories, servers[0])
    browsers = [server.test_client() for server in servers]
    for browser in browsers:
        login(browser, doctor)
    _join(browsers[0], appt.id)
    codes = [browsers[n % 2].post(f"/api/v1/consults/appointments/{appt.id}/signals",
                                  json={"kind": "candidate", "candidate": None}).status_code for n in range(6)]
    assert codes == [201] * 5 + [429]
    refused = browsers[0].post(f"/api/v1/consults/appointments/{appt.id}/signals", json={"kind": "offer", "sdp": OFFER})
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10


def test_with_redis_streams_are_woken(app, make_client, factories, login):
    import redis

    url = "redis://127.0.0.1:6379/13"
    redis.Redis.from_url(url).flushdb()
    ids, doc, pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    old = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = url
    try:
        _join(doc, a)
        pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("hospital:consult:*")
        pubsub.get_message(timeout=1)
        assert doc.post(f"/api/v1/consults/appointments/{a}/signals",
                        json={"kind": "offer", "sdp": OFFER}).status_code == 201
        woke = pubsub.get_message(timeout=2)
        assert woke is not None and woke["data"] == b"1"
        pubsub.close()
    finally:
        app.config["REDIS_URL"] = old


def test_a_consults_signals_become_visible_in_id_order(app, live_factories):
    """A stream that has read id N must never miss a smaller id committed later: while one transaction holds
    a signal, another signal of the same consult waits for its commit."""
    doctor, patient, appt = admitted_consult(live_factories, app)
    appt_id, ids = appt.id, {"doctor": doctor.id, "patient": patient.user_id}
    held, first_committed, done = threading.Event(), threading.Event(), []
    backends: dict[str, int] = {}

    def until_the_other_waits_on(mine: int) -> None:
        """An answer still being written while its candidates are posted: hold until the doctor's waits on it."""
        deadline = time.monotonic() + 10
        with app.extensions["db_engine"].connect() as probe:  # its own connection: the held one stays untouched
            while time.monotonic() < deadline:
                other = backends.get("doctor")
                if other and probe.scalar(sa.text("SELECT :mine = ANY(pg_blocking_pids(:other))"),
                                          {"mine": mine, "other": other}):
                    return
                probe.rollback()
                time.sleep(0.01)

    def signal(who: str, hold: bool) -> None:
        with app.app_context():
            try:
                backends[who] = db.session.scalar(sa.text("SELECT pg_backend_pid()"))
                appointment = db.session.get(Appointment, appt_id)
                session = db.session.get(ConsultSession, appointment.session.id)
                message = signals.send(session, db.session.get(User, ids[who]), "candidate", {})
                if hold:
                    held.set()
                    until_the_other_waits_on(backends[who])
                    first_committed.set()
                db.session.commit()
                done.append((who, message.id, first_committed.is_set()))
            finally:
                db.session.remove()

    first = threading.Thread(target=signal, args=("patient", True))
    first.start()
    assert held.wait(10)
    second = threading.Thread(target=signal, args=("doctor", False))
    second.start()
    first.join(10)
    second.join(10)
    (who1, id1, _), (who2, id2, after_first) = done
    assert (who1, who2) == ("patient", "doctor") and id2 > id1 and after_first


def test_camera_and_audio_only_reach_the_other_side_and_bad_flags_are_refused(app, make_client, factories, login):
    ids, doc, pat = _setup(app, factories, make_client, login)
    a = ids["appt"]
    _join(doc, a)
    _join(pat, a)
    seen = max(m["id"] for m in doc.get(f"/api/v1/consults/appointments/{a}/signals").json)
    sent = pat.post(f"/api/v1/consults/appointments/{a}/signals",
                    json={"kind": "media", "camera": False, "audio_only": True, "gen": "g1"})
    assert sent.status_code == 201, sent.json
    got = doc.get(f"/api/v1/consults/appointments/{a}/signals?after={seen}").json
    assert [(m["kind"], m["camera"], m["audio_only"]) for m in got] == [("media", False, True)]
    for bad in ({"camera": "off", "audio_only": False}, {"camera": False}, {"camera": 0, "audio_only": 1}):
        resp = pat.post(f"/api/v1/consults/appointments/{a}/signals", json={"kind": "media", **bad})
        assert resp.status_code == 422, (bad, resp.json)
    assert doc.get(f"/api/v1/consults/appointments/{a}/signals?after={seen}").json == got  # nothing half-sent
