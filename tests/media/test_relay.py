"""Relay rooms with real aiortc participants on loopback: everyone sees everyone, the relay never decodes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

import aiohttp
import aiortc.rtcrtpreceiver
import pytest

from media.relay import RELAY, Room
from tests.media.relay_support import SECRET, Participant, allow_loopback, relay_server, wait_for


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    allow_loopback(monkeypatch)


@pytest.fixture
def decoders(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every decoder aiortc creates in this process, by codec."""
    created: Counter[str] = Counter()
    real = aiortc.rtcrtpreceiver.get_decoder

    def counting(codec: Any) -> Any:
        created[codec.mimeType.lower()] += 1
        return real(codec)

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", counting)
    return created


def sees(viewer: Participant, other: Participant, frames: int = 10) -> bool:
    got = viewer.frames_from(other.pid)
    return got.frames >= frames and max(got.colours, key=got.colours.get, default=None) == other.colour


async def refresh_mapping(http: aiohttp.ClientSession, url: str, *people: Participant) -> None:
    """m-lines can be rebound after an answer (someone joined or left): read the relay's current map."""
    async with http.get(f"{url}/state") as resp:
        state = await resp.json()
    by_id = {p["participant_id"]: p for p in state["participants"]}
    for person in people:
        person.mapping = {t["mid"]: t["participant_id"] for t in by_id[person.pid]["tracks"] if t["kind"] == "video"}


def relay_room(server: Any, consult_id: str) -> Room:
    return server.app[RELAY].rooms[consult_id]


def test_three_participants_each_decode_every_others_video_and_the_relay_decodes_nothing(
        decoders: Counter[str]) -> None:
    async def scenario() -> None:
        async with relay_server() as (server, http):
            url = str(server.make_url("/relay/consult-1"))
            a, b, c = Participant("a", "red"), Participant("b", "green"), Participant("c", "blue")
            try:
                await a.negotiate(http, url, others=0)
                await b.negotiate(http, url, others=1)
                answer = await c.negotiate(http, url, others=2)
                assert answer["missing"] == 0
                async with http.get(f"{url}/state") as resp:
                    state = await resp.json()
                assert {p["participant_id"]: p["missing"] for p in state["participants"]} == {"a": 1 * 2, "b": 2,
                                                                                               "c": 0}
                for person in (a, b):  # told by the state that c has no m-line yet: re-offer with one more pair
                    assert (await person.negotiate(http, url, others=2))["missing"] == 0
                await refresh_mapping(http, url, a, b, c)
                pairs = [(x, y) for x in (a, b, c) for y in (a, b, c) if x is not y]
                assert await wait_for(lambda: all(sees(x, y) for x, y in pairs), timeout=15), {
                    (x.pid, y.pid): vars(x.frames_from(y.pid)) for x, y in pairs}
                assert all(p.audio_frames > 0 for p in (a, b, c))

                # Each client decodes the two videos it receives; the relay added no decoder of its own.
                assert decoders["video/vp8"] == 6
                room = relay_room(server, "consult-1")
                for participant in room.participants.values():
                    for slot in participant.slots:
                        assert slot.track.forwarded > 0
                        encoder = slot.transceiver.sender._RTCRtpSender__encoder
                        if slot.kind == "video":  # never encoded a frame: libvpx context never opened
                            assert encoder is None or encoder.codec is None
            finally:
                for person in (a, b, c):
                    await person.close()

    asyncio.run(scenario())


def test_a_late_joiner_receives_video_within_two_seconds() -> None:
    async def scenario() -> None:
        async with relay_server() as (server, http):
            url = str(server.make_url("/relay/consult-2"))
            a, b, late = Participant("a", "red"), Participant("b", "green"), Participant("late", "blue")
            try:
                await a.negotiate(http, url, others=0)
                await b.negotiate(http, url, others=1)
                await refresh_mapping(http, url, a)
                assert await wait_for(lambda: sees(a, b) and sees(b, a), timeout=10)
                await asyncio.sleep(1.0)  # the senders' last keyframe is now long gone (aiortc: one per 3000 frames)
                start = time.monotonic()
                await late.negotiate(http, url, others=2)
                assert await wait_for(lambda: sees(late, a, 1) and sees(late, b, 1), timeout=5)
                for other in (a, b):
                    first = late.frames_from(other.pid).first_at
                    assert first is not None and first - start < 2.0, first - start
                room = relay_room(server, "consult-2")
                assert all(s.keyframe_requests > 0 for pid in ("a", "b") for s in room.participants[pid].sources
                           if s.kind == "video")
            finally:
                for person in (a, b, late):
                    await person.close()

    asyncio.run(scenario())


def test_a_receivers_picture_loss_report_reaches_the_original_sender() -> None:
    async def scenario() -> None:
        async with relay_server() as (server, http):
            url = str(server.make_url("/relay/consult-3"))
            a, b = Participant("a", "red"), Participant("b", "green")
            try:
                await a.negotiate(http, url, others=0)
                await b.negotiate(http, url, others=1)
                assert await wait_for(lambda: sees(b, a), timeout=10)
                room = relay_room(server, "consult-3")
                a_video = next(s for s in room.participants["a"].sources if s.kind == "video")
                await asyncio.sleep(0.5)
                before = a_video.keyframes
                mid = next(m for m, p in b.mapping.items() if p == "a")
                receiver = next(t.receiver for t in b.pc.getTransceivers() if t.mid == mid)
                ssrc = receiver.getSynchronizationSources()[0].source
                await receiver._send_rtcp_pli(ssrc)  # what a browser's decoder does after losing a picture
                assert await wait_for(lambda: a_video.keyframes > before, timeout=2)

                # the relay's UDP sockets got large receive buffers (aioice internals, see enlarge_udp_buffers)
                pc = room.participants["a"].pc
                ice = pc.getTransceivers()[0].receiver.transport.transport
                sock = ice._connection._protocols[0].transport.get_extra_info("socket")
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1024 * 1024
            finally:
                await a.close()
                await b.close()

    asyncio.run(scenario())


def test_leaving_frees_the_m_line_for_the_next_joiner_without_renegotiation() -> None:
    async def scenario() -> None:
        async with relay_server() as (server, http):
            url = str(server.make_url("/relay/consult-4"))
            a, b, c = Participant("a", "red"), Participant("b", "green"), Participant("c", "blue")
            d = Participant("d", "blue")
            relay_pcs: list[Any] = []
            try:
                await a.negotiate(http, url, others=0)
                await b.negotiate(http, url, others=1)
                await c.negotiate(http, url, others=2)
                await a.negotiate(http, url, others=2)
                async with http.post(f"{url}/leave", json={"participant_id": "c"}) as resp:
                    assert resp.status == 200
                await c.close()
                async with http.get(f"{url}/state") as resp:
                    state = await resp.json()
                assert [p["participant_id"] for p in state["participants"]] == ["a", "b"]
                await d.negotiate(http, url, others=2)
                await refresh_mapping(http, url, a)
                assert "d" in a.mapping.values()  # c's old m-line now carries d
                assert await wait_for(lambda: sees(a, d) and sees(d, a), timeout=10)
                async with http.post(f"{url}/leave", json={"participant_id": "c"}) as resp:
                    assert resp.status == 404

                await b.close()  # gone without saying so: its closed connection takes it out of the room
                assert await wait_for(lambda: "b" not in relay_room(server, "consult-4").participants, timeout=5)
                relay_pcs = [p.pc for p in relay_room(server, "consult-4").participants.values()]
            finally:
                for person in (a, b, c, d):
                    await person.close()
        # shutting the media service down closed every remaining relay connection
        assert relay_pcs and all(pc.connectionState == "closed" for pc in relay_pcs)
        assert not server.app[RELAY].rooms

    asyncio.run(scenario())


def test_a_reloaded_page_rejoins_with_a_fresh_connection() -> None:
    async def scenario() -> None:
        async with relay_server() as (server, http):
            url = str(server.make_url("/relay/consult-6"))
            a, b = Participant("a", "red"), Participant("b", "green")
            b_again = Participant("b", "blue")  # same person, new page, new peer connection
            try:
                await a.negotiate(http, url, others=0)
                await b.negotiate(http, url, others=1)
                await refresh_mapping(http, url, a)
                assert await wait_for(lambda: sees(a, b), timeout=10)
                old_pc = relay_room(server, "consult-6").participants["b"].pc
                await b_again.negotiate(http, url, others=1, restart=True)
                assert old_pc.connectionState == "closed"
                await refresh_mapping(http, url, a)
                assert await wait_for(lambda: sees(b_again, a) and a.frames_from("b").colours.get("blue", 0) > 2,
                                      timeout=10), vars(a.frames_from("b"))
            finally:
                for person in (a, b, b_again):
                    await person.close()

    asyncio.run(scenario())


def test_the_relay_api_refuses_bad_requests() -> None:
    async def scenario() -> None:
        async with relay_server() as (server, http):
            url = str(server.make_url("/relay/consult-5"))
            async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{url}/state") as resp:
                assert resp.status == 401
            async with http.post(f"{url}/join", data=b"not json") as resp:
                assert resp.status == 400
            async with http.post(f"{url}/join", json={"participant_id": "a", "sdp": "v=0", "type": "answer"}) as r:
                assert r.status == 400
            async with http.post(f"{url}/join", json={"participant_id": "a", "sdp": "garbage", "type": "offer"}) as r:
                assert r.status == 400
                assert r.headers["Content-Type"].startswith("application/problem+json")
            async with http.post(f"{url}/join", json={"participant_id": "../x", "sdp": "v=0", "type": "offer"}) as r:
                assert r.status == 400
            async with http.get(f"{url}/state") as resp:
                assert resp.status == 404  # the rejected offer left no room behind
            async with http.get(str(server.make_url("/relay/bad id/state"))) as resp:
                assert resp.status == 404
            assert SECRET not in str(server.app[RELAY].rooms)

    asyncio.run(scenario())
