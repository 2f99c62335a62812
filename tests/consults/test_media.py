"""Real media: aiortc peers through the app's signaling API, and the media service's echo."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import requests
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

from media.server import allow_loopback_candidates
from tests.consults.conftest import MEDIA_SECRET
from tests.consults.helpers import admitted_consult

FRAMES = 10


def _run(coro: Any) -> Any:
    """asyncio.run in a fresh thread: Playwright's sync API may already own this thread's event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _peer() -> RTCPeerConnection:
    allow_loopback_candidates()
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def _count_frames(pc: RTCPeerConnection, got: asyncio.Future[int]) -> None:
    """On the remote video track, read (and so drain) frames until FRAMES arrived."""

    @pc.on("track")
    def _on_track(track: Any) -> None:
        async def read() -> None:
            frames = 0
            try:
                while True:
                    frame = await track.recv()
                    frames += 1
                    if frames == FRAMES and not got.done():
                        got.set_result(frame.width)
            except MediaStreamError:
                return

        asyncio.ensure_future(read())


def _signals(browser: Any, appt: int, after: int = 0) -> list[dict[str, Any]]:
    resp = browser.get(f"/api/v1/consults/appointments/{appt}/signals?after={after}")
    assert resp.status_code == 200
    return resp.json


async def _wait_for(browser: Any, appt: int, kind: str) -> dict[str, Any]:
    for _ in range(100):
        for message in _signals(browser, appt):
            if message["kind"] == kind:
                return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} arrived")


def test_two_aiortc_peers_exchange_video_through_the_app(app, make_client, factories, login):
    doctor, patient, appointment = admitted_consult(factories, app)
    a = appointment.id
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient.user)
    for browser in (doc, pat):
        token = browser.post(f"/api/v1/consults/appointments/{a}/token").json["token"]
        assert browser.post(f"/api/v1/consults/appointments/{a}/join", json={"token": token}).status_code == 200

    async def consult() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        doctor_got, patient_got = loop.create_future(), loop.create_future()
        doctor_pc, patient_pc = _peer(), _peer()
        _count_frames(doctor_pc, doctor_got)
        _count_frames(patient_pc, patient_got)
        try:
            doctor_pc.addTrack(VideoStreamTrack())
            await doctor_pc.setLocalDescription(await doctor_pc.createOffer())
            sent = doc.post(f"/api/v1/consults/appointments/{a}/signals",
                            json={"kind": "offer", "sdp": doctor_pc.localDescription.sdp, "gen": "1"})
            assert sent.status_code == 201, sent.json
            offer = await _wait_for(pat, a, "offer")
            await patient_pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            patient_pc.addTrack(VideoStreamTrack())
            await patient_pc.setLocalDescription(await patient_pc.createAnswer())
            assert pat.post(f"/api/v1/consults/appointments/{a}/signals",
                            json={"kind": "answer", "sdp": patient_pc.localDescription.sdp, "gen": "1"}
                            ).status_code == 201
            answer = await _wait_for(doc, a, "answer")
            await doctor_pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            return await asyncio.wait_for(asyncio.gather(doctor_got, patient_got), timeout=30)
        finally:
            await doctor_pc.close()
            await patient_pc.close()

    widths = _run(consult())
    assert widths == [640, 640]


async def _echo_round_trip(post_offer: Any) -> int:
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    pc = _peer()
    _count_frames(pc, got)
    try:
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        answer = await loop.run_in_executor(None, post_offer, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return await asyncio.wait_for(got, timeout=30)
    finally:
        await pc.close()


def test_echo_service_returns_frames_through_the_app(app, make_client, factories, login, media_config):
    patient = factories.patient(with_account=True)
    browser = make_client()
    login(browser, patient.user)

    def post_offer(sdp: str) -> dict[str, Any]:
        resp = browser.post("/api/v1/consults/echo/offer", json={"sdp": sdp, "type": "offer"})
        assert resp.status_code == 200, resp.json
        return resp.json

    assert _run(_echo_round_trip(post_offer)) == 640
    # bad offers never reach the media service
    bad = browser.post("/api/v1/consults/echo/offer", json={"sdp": "nonsense", "type": "offer"})
    assert bad.status_code == 422


def test_echo_service_directly_needs_the_secret_and_closes_sessions(media_service):
    assert requests.post(f"{media_service}/echo/offer", json={"sdp": "v=0", "type": "offer"},
                         timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {MEDIA_SECRET}"}
    assert requests.post(f"{media_service}/echo/offer", data=b"{", headers=auth, timeout=5).status_code == 400
    garbage = requests.post(f"{media_service}/echo/offer", json={"sdp": "v=0\r\nm=bogus\r\n", "type": "offer"},
                            headers=auth, timeout=5)
    assert garbage.status_code == 422

    def post_offer(sdp: str) -> dict[str, Any]:
        resp = requests.post(f"{media_service}/echo/offer", json={"sdp": sdp, "type": "offer"}, headers=auth,
                             timeout=15)
        assert resp.status_code == 200
        return resp.json()

    assert _run(_echo_round_trip(post_offer)) == 640
    # the client hung up: the service closes its side and forgets the session
    for _ in range(50):
        if requests.get(f"{media_service}/health", timeout=2).json()["peers"] == 0:
            break
        time.sleep(0.2)
    assert requests.get(f"{media_service}/health", timeout=2).json()["peers"] == 0


def test_app_reports_media_service_down_as_503(app, make_client, factories, login):
    patient = factories.patient(with_account=True)
    browser = make_client()
    login(browser, patient.user)
    old = app.config["MEDIA_URL"]
    app.config["MEDIA_URL"] = "http://127.0.0.1:9"
    try:
        offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        resp = browser.post("/api/v1/consults/echo/offer", json={"sdp": offer, "type": "offer"})
    finally:
        app.config["MEDIA_URL"] = old
    assert resp.status_code == 503 and resp.json["type"] == "/problems/media-unavailable"
