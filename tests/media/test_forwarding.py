"""The encoded-frame forwarder, and the aiortc 1.16 behaviour it relies on."""

from __future__ import annotations

import asyncio
import fractions
import inspect

import aiortc
import av
import numpy as np
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.forwarding import MAX_BACKLOG, EncodedSource, ForwardedTrack, is_vp8_keyframe, vp8_dimensions

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)


def vp8_frames(count: int, width: int = 160, height: int = 120) -> list[bytes]:
    """Real VP8 frames from libvpx: the first is a keyframe, the others interframes."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.gop_size = 1000
    codec.options = {"deadline": "realtime", "lag-in-frames": "0"}
    out: list[bytes] = []
    for i in range(count):
        image = np.full((height, width, 3), (i * 20) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out[:count]


def test_aiortc_is_the_pinned_version() -> None:
    # forwarding.py reaches into aiortc 1.16 internals; a new version needs these tests re-read, not just re-run
    assert aiortc.__version__ == "1.16.0"


def test_vp8_keyframes_and_dimensions_are_recognised() -> None:
    key, delta, *_ = vp8_frames(3)
    assert is_vp8_keyframe(key) and vp8_dimensions(key) == (160, 120)
    assert not is_vp8_keyframe(delta) and vp8_dimensions(delta) is None
    assert not is_vp8_keyframe(b"")


def test_sender_packetises_a_packet_without_opening_an_encoder() -> None:
    """RTCRtpSender._next_encoded_frame hands non-Frame data to Encoder.pack: no libvpx encoder is created."""
    assert ".pack(data)" in inspect.getsource(RTCRtpSender._next_encoded_frame)
    key = vp8_frames(1)[0]
    encoder = get_encoder(VP8)
    packet = av.Packet(key)
    packet.pts, packet.time_base = 4500, fractions.Fraction(1, 90000)
    payloads, timestamp = encoder.pack(packet)
    assert timestamp == 4500
    assert b"".join(vp8_depayload(p) for p in payloads) == key
    assert encoder.codec is None  # the VP8 encoder context is only opened by encode()

    opus = get_encoder(OPUS)
    packet = av.Packet(b"\xfc\xff\xfe")
    packet.pts, packet.time_base = 960, fractions.Fraction(1, 48000)
    assert opus.pack(packet) == ([b"\xfc\xff\xfe"], 960)


def test_receiver_internals_the_tap_relies_on() -> None:
    """The receiver queues (codec, JitterFrame) for a decoder thread started in receive(), and can send a PLI."""
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in source
    assert "self.__decoder_thread = threading.Thread(" in inspect.getsource(RTCRtpReceiver.receive)
    assert "media_ssrc" in inspect.signature(RTCRtpReceiver._send_rtcp_pli).parameters
    assert "self._send_keyframe()" in inspect.getsource(RTCRtpSender._handle_rtcp_packet)


def test_track_forwards_video_from_the_first_keyframe_with_source_timing() -> None:
    async def scenario() -> None:
        key, delta1, delta2 = vp8_frames(3)
        source = EncodedSource("video", label="t")
        track = ForwardedTrack("video")
        source.on_frame(VP8, JitterFrame(key, 0))  # before anyone listens: not queued anywhere
        track.bind(source)
        source.on_frame(VP8, JitterFrame(delta1, 3000))  # mid-stream: undecodable without a keyframe
        assert track._queue.qsize() == 0 and track.dropped == 1
        assert source.keyframe_requests >= 1  # binding asked the sender for one
        source.on_frame(VP8, JitterFrame(key, 6000))
        source.on_frame(VP8, JitterFrame(delta2, 9000))
        first, second = await track.recv(), await track.recv()
        assert bytes(first) == key and first.pts == 6000 and first.time_base == fractions.Fraction(1, 90000)
        assert bytes(second) == delta2 and second.pts == 9000
        assert source.keyframes == 2 and source.dimensions == (160, 120)
        track.stop()
        assert source.subscribers == 0

    asyncio.run(scenario())


def test_audio_is_forwarded_at_once_and_foreign_codecs_are_dropped() -> None:
    async def scenario() -> None:
        audio = EncodedSource("audio")
        track = ForwardedTrack("audio")
        track.bind(audio)
        audio.on_frame(OPUS, JitterFrame(b"\xfc\x01", 960))
        packet = await track.recv()
        assert bytes(packet) == b"\xfc\x01" and packet.time_base == fractions.Fraction(1, 48000)

        video = EncodedSource("video")
        vtrack = ForwardedTrack("video")
        vtrack.bind(video)
        video.on_frame(H264, JitterFrame(b"\x00\x00\x00\x01\x65", 0))
        assert video.frames == 0 and vtrack._queue.qsize() == 0

    asyncio.run(scenario())


def test_a_lagging_receiver_skips_to_the_next_keyframe() -> None:
    async def scenario() -> None:
        key, delta = vp8_frames(2)
        source = EncodedSource("video")
        track = ForwardedTrack("video")
        track.bind(source)
        source.on_frame(VP8, JitterFrame(key, 0))
        for i in range(MAX_BACKLOG["video"] + 5):
            source.on_frame(VP8, JitterFrame(delta, 3000 * (i + 1)))
        # the backlog was dropped rather than delivered late, and the track waits for a fresh keyframe
        assert track._queue.qsize() < MAX_BACKLOG["video"]
        assert track.dropped > 0
        before = track._queue.qsize()
        source.on_frame(VP8, JitterFrame(delta, 999_000))
        assert track._queue.qsize() == before
        source.on_frame(VP8, JitterFrame(key, 1_000_000))
        assert track._queue.qsize() == before + 1

    asyncio.run(scenario())


def test_a_track_can_be_rebound_to_another_source() -> None:
    async def scenario() -> None:
        key = vp8_frames(1)[0]
        first, second = EncodedSource("video"), EncodedSource("video")
        track = ForwardedTrack("video")
        track.bind(first)
        first.close()  # its participant left: the track idles instead of ending
        assert track.source is None and track.readyState == "live"
        track.bind(second)
        first.on_frame(VP8, JitterFrame(key, 0))
        assert track._queue.qsize() == 0
        second.on_frame(VP8, JitterFrame(key, 0))
        assert track._queue.qsize() == 1
        with pytest.raises(ValueError):
            track.bind(EncodedSource("audio"))

    asyncio.run(scenario())
