"""Record a relay room, with consent only: mux the forwarded encoded packets (no decoding, no re-encoding) into a
WebM file, encrypt it with AES-GCM in chunks, and hand the ciphertext to an uploader.

- No consent id, no recording (:class:`RecordingRefused`); the app checks the patient's consent and passes
  its id, which is written into the encrypted file's authenticated header.
- The file holds one VP8 video and one Opus audio stream per participant present when recording starts
  (``participants`` tells which stream is whose). Timing comes from each source's RTP clock, anchored to its
  arrival time, so streams stay in step.
- The plaintext file lives only in ``workdir`` while recording, is encrypted to ``<name>.enc`` and removed.
  Encrypted format: ``MAGIC | header length (4) | header JSON | chunks``; each chunk is
  ``length (4) | AES-256-GCM(chunk)`` with nonce ``prefix (8) | counter (4)`` and AAD ``header | counter |
  last-flag`` (:mod:`storage.recording_format`, which the app reads for playback).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import av
from aiohttp import web
from aiortc.mediastreams import MediaStreamError

from media.forwarding import EncodedSource, ForwardedTrack, vp8_dimensions
from media.relay import RELAY, Room
from storage.recording_format import derive_key, encrypt_file

logger = logging.getLogger(__name__)

#: How long to wait for each participant's first video keyframe before starting the file without it.
FIRST_KEYFRAME_TIMEOUT = 3.0


class RecordingRefused(Exception):
    """Recording was asked for without the patient's consent."""


@dataclass
class Recording:
    """What the uploader receives: the encrypted file and what is needed to account for it."""

    recording_id: str
    consult_id: str
    consent_id: str
    path: Path
    size: int
    sha256: str
    duration: float
    participants: list[str] = field(default_factory=list)


Uploader = Callable[[Recording, IO[bytes]], Awaitable[None]]


@dataclass(eq=False)
class _Feed:
    participant_id: str
    source: EncodedSource
    track: ForwardedTrack
    first: av.Packet | None = None
    first_at: float = 0.0
    stream: Any = None
    last_pts: int | None = None


class RoomRecorder:
    """Records one room until :meth:`stop`; create it with :func:`start_recording`."""

    def __init__(self, room: Room, *, consent_id: str, master_key: bytes, workdir: Path,
                 uploader: Uploader) -> None:
        self.room = room
        self.consent_id = consent_id
        self.recording_id = secrets.token_hex(12)
        self._key = derive_key(master_key, self.recording_id)
        self._workdir = workdir
        self._uploader = uploader
        self._feeds: list[_Feed] = []
        self._container: Any = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.path = workdir / f"{self.recording_id}.webm"
        self.sidecar = workdir / f"{self.recording_id}.json"  # what salvage needs if this process dies
        self._sidecar_fh: IO[str] | None = None

    async def _start(self) -> None:
        for participant in list(self.room.participants.values()):
            for source in participant.sources:
                if source.closed:
                    continue
                track = ForwardedTrack(source.kind)
                track.bind(source)
                self._feeds.append(_Feed(participant.id, source, track))
        if not self._feeds:
            raise RecordingRefused("nothing to record yet")
        self._started_at = time.monotonic()
        # Held locked while recording: a worker salvaging after a restart leaves a live recording alone (two
        # workers on one host share the work directory); the kernel drops the lock when this process dies.
        self._sidecar_fh = self.sidecar.open("w")
        fcntl.flock(self._sidecar_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._sidecar_fh.write(json.dumps({
            "recording_id": self.recording_id, "consult_id": self.room.consult_id, "consent_id": self.consent_id,
            "participants": list(dict.fromkeys(f.participant_id for f in self._feeds))}))
        self._sidecar_fh.flush()
        self._task = asyncio.ensure_future(self._run())
        logger.info("recording %s of relay %s started", self.recording_id, self.room.consult_id)

    async def _first_packets(self) -> None:
        async def first(feed: _Feed) -> None:
            with contextlib.suppress(asyncio.TimeoutError, MediaStreamError):
                feed.first = await asyncio.wait_for(feed.track.recv(), FIRST_KEYFRAME_TIMEOUT)
                feed.first_at = time.monotonic()

        await asyncio.gather(*(first(feed) for feed in self._feeds))
        self._feeds = [feed for feed in self._feeds if feed.first is not None]

    def _open(self) -> None:
        # Clusters of at most a second, written out as they close: a worker killed mid-recording leaves a file
        # that :func:`salvage` can finish up to about a second before the fault.
        self._container = av.open(str(self.path), "w", format="webm",
                                  options={"cluster_time_limit": "1000", "flush_packets": "1"})
        for feed in self._feeds:
            if feed.source.kind == "video":
                width, height = vp8_dimensions(bytes(feed.first)) or feed.source.dimensions or (640, 480)
                stream = self._container.add_stream("libvpx", rate=30)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            else:
                stream = self._container.add_stream("libopus", rate=48000)
                stream.codec_context.layout = "stereo"
            stream.time_base = feed.first.time_base
            stream.metadata["title"] = feed.participant_id
            feed.stream = stream

    def _mux(self, feed: _Feed, packet: av.Packet) -> None:
        assert feed.first is not None
        offset = round((feed.first_at - self._started_at) / packet.time_base)
        pts = packet.pts - feed.first.pts + offset
        if feed.last_pts is not None and pts <= feed.last_pts:
            pts = feed.last_pts + 1
        feed.last_pts = pts
        out = av.Packet(bytes(packet))
        out.pts = out.dts = pts
        out.time_base = packet.time_base
        out.stream = feed.stream
        try:
            self._container.mux(out)
        except av.FFmpegError as exc:  # one bad packet must not end the recording
            logger.warning("recording %s: packet skipped (%s)", self.recording_id, type(exc).__name__)

    async def _run(self) -> None:
        await self._first_packets()
        if not self._feeds:
            return
        self._open()
        for feed in self._feeds:
            self._mux(feed, feed.first)

        async def pump(feed: _Feed) -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    packet = await feed.track.recv()
                    self._mux(feed, packet)

        pumps = [asyncio.ensure_future(pump(feed)) for feed in self._feeds]
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait([stop, *pumps], return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *pumps):
            task.cancel()

    async def stop(self) -> Recording | None:
        """Finish the file, encrypt it, upload it; None if nothing was captured."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        for feed in self._feeds:
            feed.track.stop()
        duration = time.monotonic() - self._started_at
        if self._container is None:
            self._release_sidecar()
            return None
        self._container.close()
        encrypted = self.path.with_suffix(".enc")
        header = {"recording_id": self.recording_id, "consult_id": self.room.consult_id,
                  "consent_id": self.consent_id, "format": "webm", "duration": round(duration, 3),
                  "participants": list(dict.fromkeys(f.participant_id for f in self._feeds))}
        try:
            digest, size = await asyncio.to_thread(encrypt_file, self.path, encrypted, self._key, header)
        finally:
            self.path.unlink(missing_ok=True)
        recording = Recording(self.recording_id, self.room.consult_id, self.consent_id, encrypted, size, digest,
                              duration, header["participants"])
        try:
            with encrypted.open("rb") as fh:
                await self._uploader(recording, fh)
        finally:
            encrypted.unlink(missing_ok=True)
        self._release_sidecar()
        logger.info("recording %s of relay %s stored (%d bytes)", self.recording_id, self.room.consult_id, size)
        return recording

    def _release_sidecar(self) -> None:
        self.sidecar.unlink(missing_ok=True)
        if self._sidecar_fh is not None:
            self._sidecar_fh.close()
            self._sidecar_fh = None


def _remux_readable_part(src: Path, dst: Path) -> float:
    """Copy every packet that can still be read from a WebM cut short into a complete WebM; its duration."""
    last = 0.0
    with av.open(str(src)) as cut, av.open(str(dst), "w", format="webm") as whole:
        streams = {s.index: whole.add_stream_from_template(s) for s in cut.streams if s.type in ("audio", "video")}
        for stream in cut.streams:
            if stream.index in streams:
                streams[stream.index].metadata["title"] = stream.metadata.get("title", "")
        try:
            for packet in cut.demux(*[cut.streams[i] for i in streams]):
                if packet.dts is None or packet.size == 0:
                    continue
                if packet.pts is not None and packet.time_base is not None:
                    last = max(last, float(packet.pts * packet.time_base))
                packet.stream = streams[packet.stream.index]
                whole.mux(packet)
        except (av.FFmpegError, EOFError):
            pass  # the cut: everything before it is kept
    return last


async def _salvage_one(workdir: Path, meta: dict[str, Any], *, master_key: bytes,
                       uploader: Uploader) -> Recording | None:
    """One left-over recording; its work files go once it is uploaded (kept for the next start otherwise)."""
    recording_id = str(meta["recording_id"])
    partial, whole = workdir / f"{recording_id}.webm", workdir / f"{recording_id}.salvaged.webm"
    encrypted, sidecar = workdir / f"{recording_id}.enc", workdir / f"{recording_id}.json"
    try:
        if not partial.exists() or partial.stat().st_size == 0:
            logger.warning("recording %s: nothing was written before the fault", recording_id)
            partial.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            return None
        duration = await asyncio.to_thread(_remux_readable_part, partial, whole)
        header = {"recording_id": recording_id, "consult_id": meta["consult_id"], "consent_id": meta["consent_id"],
                  "format": "webm", "duration": round(duration, 3), "participants": meta["participants"],
                  "ended_early": True}
        key = derive_key(master_key, recording_id)
        digest, size = await asyncio.to_thread(encrypt_file, whole, encrypted, key, header)
        recording = Recording(recording_id, meta["consult_id"], meta["consent_id"], encrypted, size, digest,
                              duration, meta["participants"])
        with encrypted.open("rb") as fh:
            await uploader(recording, fh)
    except Exception:  # noqa: BLE001 - one damaged file must not keep the worker from starting
        logger.exception("recording %s could not be salvaged; trying again at the next start", recording_id)
        return None
    finally:
        whole.unlink(missing_ok=True)
        encrypted.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    logger.warning("recording %s of relay %s salvaged after a fault: %.1f s kept", recording_id, meta["consult_id"],
                   duration)
    return recording


async def salvage(workdir: Path, *, master_key: bytes, uploader: Uploader) -> list[Recording]:
    """Finish the recordings a killed worker left in ``workdir``: keep what was written up to the fault,
    encrypt it and upload it like a recording stopped normally, with ``ended_early`` in its header."""
    if not workdir.is_dir():
        return []
    saved = []
    for sidecar in sorted(workdir.glob("*.json")):
        with sidecar.open() as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # still being recorded by a live worker
            try:
                meta = json.loads(fh.read())
            except ValueError:
                continue  # a recording starting this very moment, before its sidecar is written
            recording = await _salvage_one(workdir, meta, master_key=master_key, uploader=uploader)
        if recording is not None:
            saved.append(recording)
    return saved


async def start_recording(room: Room, *, consent_id: str | None, master_key: bytes, workdir: Path,
                          uploader: Uploader) -> RoomRecorder:
    """Start recording ``room``; the file key is :func:`derive_key` (``master_key``, recording id).

    :raises RecordingRefused: without a consent id, or when the room has no media yet.
    """
    if not consent_id:
        raise RecordingRefused("no recording without the patient's consent")
    if len(master_key) < 32:
        raise ValueError("master key must be at least 32 bytes")
    workdir.mkdir(parents=True, exist_ok=True)
    recorder = RoomRecorder(room, consent_id=consent_id, master_key=master_key, workdir=workdir, uploader=uploader)
    await recorder._start()
    return recorder


# --------------------------------------------------------------------------- HTTP
RECORDERS = web.AppKey("recorders", dict)


def setup_recording_routes(app: web.Application, *, master_key: bytes, workdir: Path, uploader: Uploader) -> None:
    """Mount ``POST /relay/<consult_id>/recording`` ``{consent_id}`` (start) and ``DELETE`` (stop, upload).

    Call after :func:`media.relay.setup_relay_routes`. One recording per room at a time; recordings still
    running at shutdown are finished and uploaded.
    """
    recorders: dict[str, RoomRecorder] = {}
    app[RECORDERS] = recorders

    def problem(status: int, title: str) -> web.Response:
        return web.json_response({"title": title, "status": status}, status=status,
                                 content_type="application/problem+json")

    async def start(request: web.Request) -> web.Response:
        consult_id = request.match_info["consult_id"]
        room = request.app[RELAY].room(consult_id)
        if room is None:
            return problem(404, "Not Found")
        try:
            data = await request.json()
        except ValueError:
            data = None
        consent_id = data.get("consent_id") if isinstance(data, dict) else None
        if consult_id in recorders:
            return problem(409, "already recording")
        try:
            recorder = await start_recording(room, consent_id=consent_id if isinstance(consent_id, str) else None,
                                             master_key=master_key, workdir=workdir, uploader=uploader)
        except RecordingRefused as exc:
            return problem(403 if "consent" in str(exc) else 409, str(exc))
        recorders[consult_id] = recorder
        return web.json_response({"recording_id": recorder.recording_id}, status=201)

    async def stop(request: web.Request) -> web.Response:
        recorder = recorders.pop(request.match_info["consult_id"], None)
        if recorder is None:
            return problem(404, "Not Found")
        recording = await recorder.stop()
        if recording is None:
            return problem(409, "nothing was recorded")
        return web.json_response({"recording_id": recording.recording_id, "size": recording.size,
                                  "sha256": recording.sha256, "duration": round(recording.duration, 3),
                                  "participants": recording.participants})

    async def finish_all(_app: web.Application) -> None:
        for consult_id in list(recorders):
            with contextlib.suppress(Exception):
                await recorders.pop(consult_id).stop()

    async def salvage_left_over(_app: web.Application) -> None:
        await salvage(workdir, master_key=master_key, uploader=uploader)

    app.router.add_post("/relay/{consult_id}/recording", start)
    app.router.add_delete("/relay/{consult_id}/recording", stop)
    app.on_startup.append(salvage_left_over)  # before the first request: a killed worker's recordings first
    app.on_shutdown.insert(0, finish_all)
