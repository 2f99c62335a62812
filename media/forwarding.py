"""Forward encoded media between aiortc peer connections without decoding or re-encoding it.

aiortc's stock ``MediaRelay`` decodes every incoming track and re-encodes it once per receiver. A packet
forwarder only has to move bytes: this module taps the encoded frames an ``RTCRtpReceiver`` reassembles in its
jitter buffer and hands them, as ``av.Packet``, to ``RTCRtpSender``s, which packetise pre-encoded packets
without touching an encoder (``RTCRtpSender._next_encoded_frame`` → ``Encoder.pack``).

This relies on aiortc internals, pinned to aiortc 1.16 and checked by ``tests/media/test_forwarding.py``:

- ``RTCRtpReceiver._handle_rtp_packet`` puts ``(codec, JitterFrame)`` on the private ``__decoder_queue``, whose
  consumer (a ``decoder_worker`` thread started by ``receive()``) creates the decoder lazily on the first frame.
  :func:`tap_receiver` swaps that queue, before ``receive()`` runs, for one that hands frames to a callback on
  the event loop; the decoder thread then idles until shutdown and never creates a decoder.
- ``JitterFrame.timestamp`` is the RTP timestamp re-based to 0 in the codec's clock rate; it becomes the packet
  pts, so senders keep the source's timing.
- ``RTCRtpSender._handle_rtcp_packet`` answers PLI and FIR by calling ``self._send_keyframe()``; an instance
  attribute overrides it (:func:`attach_sender`) to ask the source for a keyframe instead of an encoder.
- ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)`` sends a PLI upstream.

Only VP8 video and Opus audio are forwarded (the relay negotiates just those): for VP8 a keyframe is recognised
from the first byte of the frame (RFC 6386 §9.1, ``P`` bit clear), so a receiver that joins mid-stream is fed
from the next keyframe on, and one is requested at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

logger = logging.getLogger(__name__)

#: Codecs the forwarder understands (mime types, lower case).
FORWARDABLE = {"video": "video/vp8", "audio": "audio/opus"}
#: A source sends at most one PLI upstream per this many seconds (receivers' requests are coalesced).
KEYFRAME_MIN_INTERVAL = 0.3
#: Frames a slow receiver may lag behind before its backlog is dropped (about one second).
MAX_BACKLOG = {"video": 45, "audio": 60}


def is_vp8_keyframe(data: bytes) -> bool:
    """Whether an encoded VP8 frame (payload descriptors stripped) is a keyframe: the ``P`` bit of byte 0 is 0."""
    return bool(data) and not data[0] & 0x01


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 §9.1), or None for an interframe."""
    if not is_vp8_keyframe(data) or len(data) < 10 or data[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF


class _EncodedFrameTap(queue.Queue):
    """Stands in for a receiver's decoder queue: frames go to a callback, only the stop marker is queued."""

    def __init__(self, on_frame: Callable[[RTCRtpCodecParameters, JitterFrame], None]) -> None:
        super().__init__()
        self._on_frame = on_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # stop marker: lets the idle decoder thread exit and end the remote track
            super().put(None, block, timeout)
            return
        codec, frame = item
        self._on_frame(codec, frame)


def tap_receiver(receiver: RTCRtpReceiver, on_frame: Callable[[RTCRtpCodecParameters, JitterFrame], None]) -> None:
    """Divert a receiver's reassembled encoded frames to ``on_frame`` (called on the event loop) instead of a decoder.

    Must run before the receiver starts (``RTCRtpReceiver.receive``), e.g. in the peer connection's ``track``
    handler, which aiortc emits inside ``setRemoteDescription``.
    """
    if getattr(receiver, "_RTCRtpReceiver__decoder_thread", "missing") is not None:
        raise RuntimeError("receiver already started (or aiortc internals changed): cannot tap it")
    if not isinstance(getattr(receiver, "_RTCRtpReceiver__decoder_queue", None), queue.Queue):
        raise RuntimeError("aiortc internals changed: RTCRtpReceiver has no decoder queue")
    receiver._RTCRtpReceiver__decoder_queue = _EncodedFrameTap(on_frame)  # type: ignore[attr-defined]


class EncodedSource:
    """One incoming track's encoded frames, fanned out to any number of :class:`ForwardedTrack` s."""

    def __init__(self, kind: str, receiver: RTCRtpReceiver | None = None, *, label: str = "") -> None:
        self.kind = kind
        self.label = label
        self._receiver = receiver
        self._tracks: set[ForwardedTrack] = set()
        self._last_pli = 0.0
        self._pli_pending = False
        self.frames = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.dimensions: tuple[int, int] | None = None
        self.clock_rate: int | None = None
        self.closed = False
        self._warned = False
        self._pending: set[asyncio.Future[None]] = set()
        if receiver is not None:
            tap_receiver(receiver, self.on_frame)

    def on_frame(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        """Wrap one encoded frame in an ``av.Packet`` (shared, read-only) and queue it for every track."""
        if codec.mimeType.lower() != FORWARDABLE.get(self.kind):
            if not self._warned:
                self._warned = True
                logger.warning("source %s: cannot forward %s, dropping it", self.label, codec.mimeType)
            return
        keyframe = self.kind == "audio" or is_vp8_keyframe(frame.data)
        if self.kind == "video" and keyframe:
            self.keyframes += 1
            self.dimensions = vp8_dimensions(frame.data) or self.dimensions
        self.frames += 1
        self.clock_rate = codec.clockRate
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        for track in tuple(self._tracks):
            track._push(packet, keyframe)

    def request_keyframe(self) -> None:
        """Ask the sending peer for a keyframe (RTCP PLI), at most once per :data:`KEYFRAME_MIN_INTERVAL`."""
        if self.kind != "video" or self.closed:
            return
        self.keyframe_requests += 1
        now = time.monotonic()
        if now - self._last_pli < KEYFRAME_MIN_INTERVAL:
            if not self._pli_pending:  # coalesce: one PLI at the end of the interval
                self._pli_pending = True
                asyncio.get_running_loop().call_later(KEYFRAME_MIN_INTERVAL - (now - self._last_pli), self._send_pli)
            return
        self._send_pli()

    def _send_pli(self) -> None:
        self._pli_pending = False
        self._last_pli = time.monotonic()
        receiver = self._receiver
        if receiver is None or self.closed:
            return
        for source in receiver.getSynchronizationSources():
            task = asyncio.ensure_future(receiver._send_rtcp_pli(source.source))
            self._pending.add(task)  # keep a reference until sent
            task.add_done_callback(self._pending.discard)

    def subscribe(self, track: ForwardedTrack) -> None:
        self._tracks.add(track)

    def unsubscribe(self, track: ForwardedTrack) -> None:
        self._tracks.discard(track)

    @property
    def subscribers(self) -> int:
        return len(self._tracks)

    def close(self) -> None:
        """Detach every track (they idle until bound to another source) and stop requesting keyframes."""
        self.closed = True
        for track in tuple(self._tracks):
            track.unbind()


class ForwardedTrack(MediaStreamTrack):
    """A track whose ``recv()`` returns encoded ``av.Packet`` s of whichever source it is bound to.

    It outlives its source: when a participant leaves, the track idles (the sender waits) and can be rebound to
    another participant's source later, so the receiving peer keeps its m-line. Video is only forwarded from a
    keyframe on; binding requests one.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.source: EncodedSource | None = None
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self._need_keyframe = kind == "video"
        self._started = False
        self.forwarded = 0
        self.dropped = 0

    def bind(self, source: EncodedSource) -> None:
        if source.kind != self.kind:
            raise ValueError(f"cannot forward {source.kind} on a {self.kind} track")
        self.unbind()
        self.source = source
        self._need_keyframe = self.kind == "video"
        source.subscribe(self)
        source.request_keyframe()

    def unbind(self) -> None:
        if self.source is not None:
            self.source.unsubscribe(self)
            self.source = None
        self._clear()

    def request_keyframe(self) -> None:
        """Forward a receiver's keyframe request (PLI/FIR) to the source."""
        if self.source is not None:
            self.source.request_keyframe()

    def _clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def _push(self, packet: av.Packet, keyframe: bool) -> None:
        if self.readyState != "live":
            return
        if self._need_keyframe:
            if not keyframe:
                self.dropped += 1
                return
            self._need_keyframe = False
        if self._queue.qsize() >= MAX_BACKLOG[self.kind]:
            # The receiver's sender is not keeping up: skip to fresh media rather than build latency.
            self.dropped += self._queue.qsize()
            self._clear()
            if self.kind == "video":
                self._need_keyframe = True
                self.request_keyframe()
                self.dropped += 1
                return
        self._queue.put_nowait(packet)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:
            self._started = True
            if self._need_keyframe:  # the sender just started (e.g. DTLS connected): get it a keyframe soon
                self.request_keyframe()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.forwarded += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self.unbind()
            self._queue.put_nowait(None)
        super().stop()


def attach_sender(sender: RTCRtpSender, track: ForwardedTrack) -> None:
    """Send ``track`` on ``sender`` and route the sender's keyframe requests (PLI/FIR from its peer) to the source."""
    sender.replaceTrack(track)
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]


async def drain(track: MediaStreamTrack) -> None:
    """Consume a track until it ends (a tapped receiver's track only ever yields its end)."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()
