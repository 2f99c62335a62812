"""HTTP entry point of the media service (internal API, loopback by default).

``POST /echo/offer`` (pre-call device test): takes a browser's complete SDP offer, answers, and sends every
received track straight back, so the page can show what the network did to its camera and microphone.
Peer connections close on failure, after ``--echo-seconds``, and at shutdown; logs carry ids only.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

import storage
from media.recording import Recording, Uploader, setup_recording_routes
from media.relay import setup_relay_routes
from storage import recording_format

logger = logging.getLogger("media")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ids = itertools.count(1)
PEERS = web.AppKey("peers", dict)
SECRET = web.AppKey("secret", str)
SETTINGS = web.AppKey("settings", dict)


#: The app's embedded default (``app.config.DEFAULT_SECRET_KEY``), which it refuses in production.
DEFAULT_SECRET_KEY = "dev-only-secret-change-me"  # noqa: S105


def shared_secret() -> str:
    return os.environ.get("HOSPITAL_MEDIA_SECRET") or os.environ.get("SECRET_KEY") or DEFAULT_SECRET_KEY


def allow_loopback_candidates() -> None:
    """Offer 127.0.0.1 as an ICE host candidate (aioice skips it): for tests and single-machine demos."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "loopback_allowed", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return [*addresses, "127.0.0.1"] if use_ipv4 and "127.0.0.1" not in addresses else addresses

    with_loopback.loopback_allowed = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback


@web.middleware
async def require_secret(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but /health needs ``Authorization: Bearer <shared secret>``."""
    if request.path != "/health":
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(supplied.encode(), request.app[SECRET].encode()):
            return _problem(401, "Unauthorized")
    return await handler(request)


def _problem(status: int, title: str, detail: str | None = None) -> web.Response:
    return web.json_response({"title": title, "status": status, "detail": detail or title}, status=status,
                             content_type="application/problem+json")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "peers": len(request.app[PEERS])})


async def _drain(track: MediaStreamTrack) -> None:
    """Consume a track nobody else reads, so decoded frames never pile up."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        return


class EchoPeer:
    """One echo session: a peer connection that returns what it receives, closed on failure or timeout."""

    def __init__(self, app: web.Application) -> None:
        self.id = f"echo-{next(_ids)}"
        self.app = app
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.relay = MediaRelay()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            logger.info("%s track %s", self.id, track.kind)
            self.pc.addTrack(self.relay.subscribe(track))
            # A second subscriber keeps the source read even if the sender stalls.
            self._spawn(_drain(self.relay.subscribe(track, buffered=False)))

        @self.pc.on("connectionstatechange")
        async def _on_state() -> None:
            logger.info("%s connection %s", self.id, self.pc.connectionState)
            if self.pc.connectionState in ("failed", "closed"):
                await self.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, sdp: str, lifetime: float) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._spawn(self._expire(lifetime))
        return self.pc.localDescription

    async def _expire(self, lifetime: float) -> None:
        await asyncio.sleep(lifetime)
        logger.info("%s time limit reached", self.id)
        await self.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.app[PEERS].pop(self.id, None)
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        await self.pc.close()
        logger.info("%s closed", self.id)


async def echo_offer(request: web.Request) -> web.Response:
    """Answer an SDP offer with an echo of its tracks."""
    try:
        body = await request.json()
    except ValueError:
        return _problem(400, "Bad request", "Send JSON {sdp, type}.")
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str) \
            or not body["sdp"].startswith("v=0"):
        return _problem(422, "Validation failed", "Send an SDP offer.")
    settings = request.app[SETTINGS]
    if len(request.app[PEERS]) >= settings["max_sessions"]:
        return _problem(429, "Too many sessions", "The echo service is at capacity.")
    peer = EchoPeer(request.app)
    request.app[PEERS][peer.id] = peer
    try:
        answer = await asyncio.wait_for(peer.answer(body["sdp"], settings["echo_seconds"]), timeout=10)
    except Exception as exc:  # noqa: BLE001 - any bad offer ends this session only
        logger.info("%s refused offer: %s", peer.id, type(exc).__name__)
        await peer.close()
        return _problem(422, "Validation failed", "The offer could not be answered.")
    logger.info("%s answered", peer.id)
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": peer.id})


async def _close_all(app: web.Application) -> None:
    peers = list(app[PEERS].values())
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    logger.info("shutdown closed %d peer connections", len(peers))


@dataclass(frozen=True)
class RecordingSettings:
    """Where recordings are written while running and how the encrypted file leaves the media host."""

    master_key: bytes
    workdir: Path
    uploader: Uploader


def object_store_uploader(store: Any) -> Uploader:
    """An uploader that puts the encrypted file into ``store`` (a :class:`storage.base.ObjectStore`)."""
    async def upload(recording: Recording, fh: IO[bytes]) -> None:
        await asyncio.to_thread(store.put, recording_format.object_key(recording.recording_id), fh,
                                content_type="application/octet-stream", length=recording.size)
        logger.info("recording %s stored (%d bytes)", recording.recording_id, recording.size)

    return upload


def recording_master_key(secret_key: str | None = None) -> bytes:
    """``HOSPITAL_RECORDING_KEY`` (hex of 32+ bytes or any 32+ character string), else derived from SECRET_KEY,
    as the app derives it for playback (:func:`storage.recording_format.master_key`)."""
    base = secret_key or os.environ.get("SECRET_KEY") or DEFAULT_SECRET_KEY
    return recording_format.master_key(os.environ.get("HOSPITAL_RECORDING_KEY", ""), base)


def recording_settings_from_env() -> RecordingSettings:
    """Recording as configured for the app (the same environment): same object store, workdir under the
    instance path."""
    instance = Path(os.environ.get("HOSPITAL_INSTANCE_PATH", str(Path(__file__).resolve().parent.parent / "instance")))
    secret_key = os.environ.get("SECRET_KEY") or DEFAULT_SECRET_KEY
    store = storage.from_config({**storage.settings_from_env(instance), "SECRET_KEY": secret_key})
    return RecordingSettings(master_key=recording_master_key(secret_key), workdir=instance / "recordings-work",
                             uploader=object_store_uploader(store))


def create_app(secret: str | None = None, *, echo_seconds: float = 120, max_sessions: int = 50,
               relay: bool = True, ice_configuration: RTCConfiguration | None = None,
               recording: RecordingSettings | None = None) -> web.Application:
    """The media service: echo, and (``relay``) relay rooms with ``ice_configuration`` (tests: no ICE servers),
    plus recording routes when ``recording`` is given."""
    app = web.Application(middlewares=[require_secret], client_max_size=256 * 1024)
    app[SECRET] = secret or shared_secret()
    app[PEERS] = {}
    app[SETTINGS] = {"echo_seconds": echo_seconds, "max_sessions": max_sessions}
    app.router.add_get("/health", health)
    app.router.add_post("/echo/offer", echo_offer)
    app.on_shutdown.append(_close_all)
    if relay:
        setup_relay_routes(app, configuration=ice_configuration)
        if recording is not None:
            setup_recording_routes(app, master_key=recording.master_key, workdir=recording.workdir,
                                   uploader=recording.uploader)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="media", description="Town Health media service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--echo-seconds", type=float, default=float(os.environ.get("HOSPITAL_ECHO_SECONDS", 120)))
    parser.add_argument("--max-sessions", type=int, default=int(os.environ.get("HOSPITAL_MEDIA_MAX_SESSIONS", 50)))
    parser.add_argument("--allow-loopback", action="store_true",
                        default=os.environ.get("HOSPITAL_MEDIA_LOOPBACK", "") in ("1", "true", "yes"),
                        help="offer 127.0.0.1 ICE candidates (tests, single-machine demos)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s media %(levelname)s %(message)s")
    if args.allow_loopback:
        allow_loopback_candidates()
    web.run_app(create_app(echo_seconds=args.echo_seconds, max_sessions=args.max_sessions,
                           ice_configuration=RTCConfiguration(iceServers=[]),
                           recording=recording_settings_from_env()),
                host=args.host, port=args.port, print=None)
