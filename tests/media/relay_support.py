"""Real aiortc participants for relay tests: coloured synthetic video, loopback-only ICE, an HTTP relay server."""

from __future__ import annotations

import asyncio
import fractions
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import (
    AudioStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from media.server import create_app

SECRET = "relay-test-secret"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice skips 127.0.0.1; offer only loopback host candidates so the test needs no network."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def rtc_config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class ColourTrack(VideoStreamTrack):
    """A solid colour with a moving bar, so every participant's video is recognisable after decoding."""

    def __init__(self, colour: tuple[int, int, int], width: int = 320, height: int = 240) -> None:
        super().__init__()
        self._image = np.zeros((height, width, 3), np.uint8)
        self._image[:, :] = colour
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self._image.copy()
        x = (self._n * 4) % image.shape[1]
        image[:, x:x + 8] = 255
        self._n += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def dominant(frame: av.VideoFrame) -> str:
    """Which test colour a decoded frame shows."""
    mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda name: float(np.abs(mean - np.array(COLOURS[name])).sum()))


@dataclass
class Received:
    frames: int = 0
    first_at: float | None = None
    colours: dict[str, int] = field(default_factory=dict)


class Participant:
    """An aiortc client: sends its colour + silence, decodes everything the relay sends it."""

    def __init__(self, pid: str, colour: str) -> None:
        self.pid = pid
        self.colour = colour
        self.pc = RTCPeerConnection(rtc_config())
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(ColourTrack(COLOURS[colour]))
        self.mapping: dict[str, str | None] = {}
        self.received: dict[str, Received] = {}  # by mid
        self.audio_frames = 0
        self.missing = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
        self._tasks.append(asyncio.ensure_future(self._consume(mid, track)))

    async def _consume(self, mid: str, track: Any) -> None:
        stats = self.received.setdefault(mid, Received())
        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    self.audio_frames += 1
                    continue
                stats.frames += 1
                if stats.first_at is None:
                    stats.first_at = time.monotonic()
                if stats.frames % 5 == 1:
                    name = dominant(frame)
                    stats.colours[name] = stats.colours.get(name, 0) + 1
        except MediaStreamError:
            pass

    async def negotiate(self, http: aiohttp.ClientSession, url: str, *, others: int,
                        restart: bool = False) -> dict[str, Any]:
        """Offer own media plus enough recvonly pairs for ``others`` participants, apply the relay's answer."""
        pairs = sum(1 for t in self.pc.getTransceivers() if t.kind == "video")
        while pairs < max(1, others):
            self.pc.addTransceiver("audio", direction="recvonly")
            self.pc.addTransceiver("video", direction="recvonly")
            pairs += 1
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        async with http.post(f"{url}/join", json={"participant_id": self.pid, "sdp": offer.sdp,
                                                  "type": offer.type, "restart": restart}) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        self.mapping = {t["mid"]: t["participant_id"] for t in answer["tracks"] if t["kind"] == "video"}
        self.missing = answer["missing"]
        return answer

    def frames_from(self, pid: str) -> Received:
        """What arrived on the m-line that (now) carries ``pid``'s video."""
        mid = next((m for m, p in self.mapping.items() if p == pid), None)
        return self.received.get(mid, Received()) if mid else Received()

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


@asynccontextmanager
async def relay_server(setup: Callable[[web.Application], None] | None = None,
                       ) -> AsyncIterator[tuple[TestServer, aiohttp.ClientSession]]:
    """The media service app with the relay (and ``setup``'s routes) mounted, and a client sending the secret."""
    with warnings.catch_warnings():  # media.server may still use plain string app keys
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app = create_app(SECRET, ice_configuration=rtc_config())
    if setup is not None:
        setup(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {SECRET}"})
    try:
        yield server, http
    finally:
        await http.close()
        await server.close()


async def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def packet(data: bytes, pts: int = 0) -> av.Packet:
    p = av.Packet(data)
    p.pts, p.time_base = pts, fractions.Fraction(1, 90000)
    return p
