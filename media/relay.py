"""Relay rooms: each participant of a consult holds one peer connection to the media service, which forwards
every participant's audio and video to all the others as encoded packets (see :mod:`media.forwarding`).

Signalling is offer/answer from the participant, repeated whenever the room changes (the relay never offers):

- The participant offers its own audio + video (``sendrecv``) plus one ``recvonly`` audio + video pair for
  every further participant it wants to receive (``others - 1`` extra pairs: its own m-lines carry one other).
- The relay answers, binding other participants' media to the m-lines it may send on, and returns
  ``tracks`` (mid → participant) and ``missing`` (how many sources found no m-line: re-offer with more pairs).
- When someone joins or leaves, the others see it in ``GET /relay/<consult_id>/state`` (``missing`` per
  participant) and re-offer on their existing connection with the same ``participant_id``. m-lines freed by a
  leaver are reused for the next joiner.

Routes (the shared-secret middleware of ``media.server`` guards them):
``POST /relay/<consult_id>/join`` ``{participant_id, sdp, type[, restart]}`` → ``{sdp, type, tracks, missing}``;
``POST /relay/<consult_id>/leave`` ``{participant_id}``; ``GET /relay/<consult_id>/state``.
Logs carry consult and participant ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from media.forwarding import FORWARDABLE, EncodedSource, ForwardedTrack, attach_sender, drain

logger = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_SDP = 64 * 1024


class RelayError(Exception):
    """A join the relay cannot accept (bad offer, unsupported codecs)."""


@dataclass(eq=False)
class Slot:
    """One m-line the relay sends on to a participant, with the track that forwards another's media onto it."""

    transceiver: RTCRtpTransceiver
    track: ForwardedTrack

    @property
    def kind(self) -> str:
        return self.track.kind

    @property
    def source(self) -> EncodedSource | None:
        return self.track.source


@dataclass(eq=False)
class Participant:
    id: str
    pc: RTCPeerConnection
    sources: list[EncodedSource] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Room:
    """One consult's participants and the forwarding between them. Methods run on the event loop."""

    def __init__(self, consult_id: str, *, configuration: RTCConfiguration | None = None,
                 on_empty: Callable[[Room], None] | None = None) -> None:
        self.consult_id = consult_id
        self.participants: dict[str, Participant] = {}
        self._configuration = configuration
        self._lock = asyncio.Lock()
        self._on_empty = on_empty
        self._source_owner: dict[EncodedSource, str] = {}

    # ----------------------------------------------------------------- signalling
    async def join(self, participant_id: str, sdp: str, type_: str, *, restart: bool = False) -> dict[str, Any]:
        """Apply a participant's offer (first join or renegotiation) and return the answer.

        ``restart`` replaces the participant's connection (e.g. a reloaded page): aiortc cannot do ICE restarts.
        """
        if type_ != "offer":
            raise RelayError("expected an SDP offer")
        async with self._lock:
            participant = self.participants.get(participant_id)
            if participant is not None and restart:
                await self._drop(participant, keep_room=True)
                participant = None
            if participant is None:
                participant = self._new_participant(participant_id)
            pc = participant.pc
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=type_))
            except Exception as exc:  # aiortc raises ValueError/OperationError/InvalidStateError on bad offers
                if not participant.slots:
                    await self._drop(participant)
                raise RelayError("offer rejected") from exc
            # Codecs and slots are settled before the answer: senders and receivers start only once DTLS is up.
            try:
                if not any(t.kind in FORWARDABLE for t in pc.getTransceivers()):
                    raise RelayError("offer has no audio or video")
                self._restrict_codecs(pc)
            except RelayError:
                await self._drop(participant)
                raise
            self._open_slots(participant)
            self._bind_idle_slots()
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            enlarge_udp_buffers(pc)
            task = asyncio.ensure_future(_start_media(pc))
            participant.tasks.add(task)
            task.add_done_callback(participant.tasks.discard)
            logger.info("relay %s: participant %s negotiated (%d in room)", self.consult_id, participant_id,
                        len(self.participants))
            return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                    "tracks": self._track_map(participant), "missing": self._missing(participant)}

    async def leave(self, participant_id: str) -> bool:
        async with self._lock:
            participant = self.participants.get(participant_id)
            if participant is None:
                return False
            await self._drop(participant)
            logger.info("relay %s: participant %s left", self.consult_id, participant_id)
            return True

    def state(self) -> dict[str, Any]:
        return {
            "consult_id": self.consult_id,
            "participants": [
                {"participant_id": p.id, "connection": p.pc.connectionState,
                 "sending": sorted(s.kind for s in p.sources),
                 "tracks": self._track_map(p), "missing": self._missing(p)}
                for p in self.participants.values()
            ],
        }

    async def close(self) -> None:
        async with self._lock:
            for participant in list(self.participants.values()):
                await self._drop(participant)

    # ----------------------------------------------------------------- internals
    def _new_participant(self, participant_id: str) -> Participant:
        # One transport for all m-lines, whatever the offer's shape: with aiortc's default (balanced) policy an
        # m-line added later can get a transport of its own that never connects.
        configuration = self._configuration or RTCConfiguration()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=configuration.iceServers,
                                                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        participant = Participant(participant_id, pc)
        self.participants[participant_id] = participant

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
            source = EncodedSource(track.kind, receiver, label=f"{self.consult_id}/{participant_id}/{track.kind}")
            participant.sources.append(source)
            self._source_owner[source] = participant_id
            task = asyncio.ensure_future(drain(track))
            participant.tasks.add(task)
            task.add_done_callback(participant.tasks.discard)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and self.participants.get(participant_id) is participant:
                level = logging.WARNING if pc.connectionState == "failed" else logging.INFO
                logger.log(level, "relay %s: participant %s connection %s", self.consult_id, participant_id,
                           pc.connectionState)
                await self.leave(participant_id)

        return participant

    @staticmethod
    def _restrict_codecs(pc: RTCPeerConnection) -> None:
        """Negotiate only VP8 (+ its RTX) and Opus: forwarded bytes must be decodable by every receiver."""
        for transceiver in pc.getTransceivers():
            wanted = FORWARDABLE.get(transceiver.kind)
            if wanted is None or not transceiver._codecs:
                continue
            keep = [c for c in transceiver._codecs if c.mimeType.lower() == wanted]
            pts = {c.payloadType for c in keep}
            keep += [c for c in transceiver._codecs
                     if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in pts]
            if not keep:
                raise RelayError(f"offer has no {wanted} for {transceiver.kind}")
            transceiver._codecs = keep

    def _open_slots(self, participant: Participant) -> None:
        """Turn every m-line the participant will receive on into a (still idle) forwarding slot."""
        known = {slot.transceiver for slot in participant.slots}
        for transceiver in participant.pc.getTransceivers():
            if transceiver in known or transceiver.kind not in FORWARDABLE:
                continue
            if transceiver._offerDirection not in ("sendrecv", "sendonly"):
                continue
            track = ForwardedTrack(transceiver.kind)
            attach_sender(transceiver.sender, track)
            transceiver.direction = "sendrecv"
            participant.slots.append(Slot(transceiver, track))

    def _bind_idle_slots(self) -> None:
        """Give every participant each other participant's sources, as far as its idle slots go."""
        for participant in self.participants.values():
            placed = {slot.source for slot in participant.slots if slot.source is not None}
            for other in self.participants.values():
                if other is participant:
                    continue
                for source in other.sources:
                    if source in placed or source.closed:
                        continue
                    slot = next((s for s in participant.slots if s.source is None and s.kind == source.kind), None)
                    if slot is not None:
                        slot.track.bind(source)
                        placed.add(source)

    def _track_map(self, participant: Participant) -> list[dict[str, Any]]:
        return [{"mid": slot.transceiver.mid, "kind": slot.kind,
                 "participant_id": self._source_owner.get(slot.source) if slot.source else None}
                for slot in participant.slots]

    def _missing(self, participant: Participant) -> int:
        """Other participants' sources with no m-line towards this participant (it should re-offer)."""
        placed = {slot.source for slot in participant.slots}
        return sum(1 for p in self.participants.values() if p is not participant
                   for s in p.sources if not s.closed and s not in placed)

    async def _drop(self, participant: Participant, *, keep_room: bool = False) -> None:
        self.participants.pop(participant.id, None)
        for source in participant.sources:
            source.close()
            self._source_owner.pop(source, None)
        for slot in participant.slots:
            slot.track.stop()
        await participant.pc.close()
        for task in list(participant.tasks):
            task.cancel()
        self._bind_idle_slots()  # a freed slot elsewhere may now carry a source that had no m-line
        if not self.participants and self._on_empty is not None and not keep_room:
            self._on_empty(self)


#: Socket buffer for each relay UDP socket: a busy host that is late to read by a few hundred ms must not have
#: the kernel drop media (the default ~200 KB is ~200 ms of 16 streams). Linux caps it at net.core.rmem_max.
UDP_BUFFER = 4 * 1024 * 1024


def enlarge_udp_buffers(pc: RTCPeerConnection) -> None:
    """Best effort: grow the receive/send buffers of the peer connection's ICE sockets (aioice internals)."""
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        connection = getattr(transceiver.receiver.transport.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", ()):
            sock = protocol.transport.get_extra_info("socket") if getattr(protocol, "transport", None) else None
            if sock is None or sock.fileno() in seen:
                continue
            seen.add(sock.fileno())
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)


async def _start_media(pc: RTCPeerConnection, timeout: float = 30.0) -> None:
    """Start every negotiated sender and receiver once DTLS is up.

    aiortc 1.16 starts them in ``RTCPeerConnection.__connect``, scheduled by both ``setRemoteDescription`` and
    ``setLocalDescription``; the two runs race, and an m-line whose transport is "connecting" when a run reaches
    it is skipped by both, leaving that sender silent. ``send``/``receive`` ignore repeated calls, so calling
    them again here is safe.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pc.connectionState not in ("connected", "failed", "closed") and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if pc.connectionState != "connected":
        return
    local_rtp = pc._RTCPeerConnection__localRtp  # type: ignore[attr-defined]
    remote_rtp = pc._RTCPeerConnection__remoteRtp  # type: ignore[attr-defined]
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.transport.state != "connected":
            continue
        if transceiver.currentDirection in ("sendonly", "sendrecv"):
            await transceiver.sender.send(local_rtp(transceiver))
        if transceiver.currentDirection in ("recvonly", "sendrecv"):
            await transceiver.receiver.receive(remote_rtp(transceiver))


class RelayRegistry:
    """Rooms of this media worker, by consult id."""

    def __init__(self, configuration: RTCConfiguration | None = None) -> None:
        self.rooms: dict[str, Room] = {}
        self.configuration = configuration

    def room(self, consult_id: str, *, create: bool = False) -> Room | None:
        room = self.rooms.get(consult_id)
        if room is None and create:
            room = self.rooms[consult_id] = Room(consult_id, configuration=self.configuration,
                                                 on_empty=lambda r: self.rooms.pop(r.consult_id, None))
        return room

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()


# --------------------------------------------------------------------------- HTTP
RELAY = web.AppKey("relay", RelayRegistry)


def _problem(status: int, title: str) -> web.Response:
    return web.json_response({"title": title, "status": status}, status=status,
                             content_type="application/problem+json")


def _consult_id(request: web.Request) -> str:
    consult_id = request.match_info["consult_id"]
    if not ID_RE.match(consult_id):
        raise web.HTTPNotFound
    return consult_id


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RelayError("body must be a JSON object")
    return data


async def join_view(request: web.Request) -> web.Response:
    registry: RelayRegistry = request.app[RELAY]
    try:
        consult_id = _consult_id(request)
        data = await _json(request)
        participant_id, sdp, type_ = data.get("participant_id"), data.get("sdp"), data.get("type")
        if not isinstance(participant_id, str) or not ID_RE.match(participant_id):
            raise RelayError("participant_id is required")
        if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP or not isinstance(type_, str):
            raise RelayError("sdp and type are required")
        room = registry.room(consult_id, create=True)
        assert room is not None
        return web.json_response(await room.join(participant_id, sdp, type_, restart=data.get("restart") is True))
    except RelayError as exc:
        return _problem(400, str(exc))


async def leave_view(request: web.Request) -> web.Response:
    registry: RelayRegistry = request.app[RELAY]
    try:
        consult_id = _consult_id(request)
        data = await _json(request)
    except RelayError as exc:
        return _problem(400, str(exc))
    room = registry.room(consult_id)
    participant_id = data.get("participant_id")
    if room is None or not isinstance(participant_id, str) or not await room.leave(participant_id):
        return _problem(404, "Not Found")
    return web.json_response({"left": participant_id})


async def state_view(request: web.Request) -> web.Response:
    registry: RelayRegistry = request.app[RELAY]
    room = registry.room(_consult_id(request))
    if room is None:
        return _problem(404, "Not Found")
    return web.json_response(room.state())


def setup_relay_routes(app: web.Application, *, configuration: RTCConfiguration | None = None) -> None:
    """Mount the relay API on the media service's aiohttp app and close every relay peer connection on shutdown."""
    registry = RelayRegistry(configuration)
    app[RELAY] = registry
    app.router.add_post("/relay/{consult_id}/join", join_view)
    app.router.add_post("/relay/{consult_id}/leave", leave_view)
    app.router.add_get("/relay/{consult_id}/state", state_view)

    async def close_relays(_app: web.Application) -> None:
        await registry.close()

    app.on_shutdown.append(close_relays)
