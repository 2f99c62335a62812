"""Media relay CPU: encoded forwarding (media.relay) against aiortc's stock MediaRelay (decode + re-encode).

Each two-way consult is two aiortc participants that each send one 640x480 30 fps VP8 stream to the relay and
receive the other's. The relay runs in its own process (``--serve``) so its CPU (time.process_time, all threads)
is measured alone. Participants send a pre-encoded VP8 clip (moving content, looped, keyframe on request) and
count the frames they receive without decoding them, so they stay cheap and the same streams feed both relays.

    .venv/bin/python benchmarks/media.py [--consults 1 2 4] [--seconds 10]

The machine's CPU is shared with whatever else runs: figures are one run, not a controlled lab measure.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import aioice.ice  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
from aiohttp import web  # noqa: E402
from aiortc import (  # noqa: E402
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay  # noqa: E402
from aiortc.mediastreams import MediaStreamTrack  # noqa: E402

from media.forwarding import EncodedSource, drain  # noqa: E402
from media.relay import RELAY, enlarge_udp_buffers, setup_relay_routes  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 480, 30
CLIP_FRAMES = 150


def loopback_only() -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


# --------------------------------------------------------------------------- relay process
async def cpu_view(request: web.Request) -> web.Response:
    """Relay process CPU, and for the encoded relay the frames it received and forwarded (to locate drops)."""
    received = forwarded = 0
    registry = request.app.get(RELAY)
    for room in registry.rooms.values() if registry else ():
        for participant in room.participants.values():
            received += sum(s.frames for s in participant.sources)
            forwarded += sum(slot.track.forwarded for slot in participant.slots)
    return web.json_response({"cpu": time.process_time(), "wall": time.monotonic(), "received": received,
                              "forwarded": forwarded})


def stock_routes(app: web.Application) -> None:
    """The stock way: decode each incoming track, MediaRelay fans out frames, every sender re-encodes."""
    relay = MediaRelay()
    rooms: dict[str, list[dict]] = {}
    pcs: set[RTCPeerConnection] = set()

    async def join(request: web.Request) -> web.Response:
        data = await request.json()
        room = rooms.setdefault(request.match_info["consult_id"], [])
        pc = RTCPeerConnection(config())
        pcs.add(pc)
        me: dict = {"pc": pc, "track": None, "senders": []}

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            me["track"] = track
            for other in room:
                for sender in other["senders"]:
                    sender.replaceTrack(relay.subscribe(track))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
        for transceiver in pc.getTransceivers():
            transceiver.direction = "sendrecv"
            me["senders"].append(transceiver.sender)
            for other in room:
                if other["track"] is not None:
                    transceiver.sender.replaceTrack(relay.subscribe(other["track"]))
        room.append(me)
        await pc.setLocalDescription(await pc.createAnswer())
        enlarge_udp_buffers(pc)  # same socket buffers as the encoded relay: compare codecs work, not drops
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def close(_app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in pcs))

    app.router.add_post("/stock/{consult_id}/join", join)
    app.on_shutdown.append(close)


def serve(mode: str, port: int) -> None:
    loopback_only()
    app = web.Application()
    app.router.add_get("/cpu", cpu_view)
    if mode == "encoded":
        setup_relay_routes(app, configuration=config())
    else:
        stock_routes(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# --------------------------------------------------------------------------- participants
def encode_clip() -> list[bytes]:
    """A looped VP8 clip with moving content, at aiortc's default bitrate; frame 0 is the only keyframe."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = fractions.Fraction(1, FPS)
    codec.bit_rate = 500_000
    codec.gop_size = 3000
    codec.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0"}
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    packets: list[bytes] = []
    for i in range(CLIP_FRAMES):
        image = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, ((x + y) // 2 + 6 * i) % 256], axis=-1)
        frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


class ClipTrack(MediaStreamTrack):
    """Sends the pre-encoded clip as av.Packets at 30 fps; a keyframe request restarts it at its keyframe."""

    kind = "video"

    def __init__(self, clip: list[bytes]) -> None:
        super().__init__()
        self._clip, self._i, self._n, self._start = clip, 0, 0, None

    def restart(self) -> None:
        self._i = 0

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n / FPS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        packet = av.Packet(self._clip[self._i % len(self._clip)])
        packet.pts, packet.time_base = self._n * 3000, fractions.Fraction(1, 90000)
        self._i += 1
        self._n += 1
        return packet


class Client:
    def __init__(self, clip: list[bytes]) -> None:
        self.pc = RTCPeerConnection(config())
        self.track = ClipTrack(clip)
        sender = self.pc.addTrack(self.track)
        sender._send_keyframe = self.track.restart
        self.source: EncodedSource | None = None

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
            self.source = EncodedSource("video", receiver)  # count encoded frames; no decoding here
            asyncio.ensure_future(drain(track))

    @property
    def frames(self) -> int:
        return self.source.frames if self.source else 0

    async def join(self, http: aiohttp.ClientSession, url: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"participant_id": f"p{id(self)}", "sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with http.post(url, json=body) as resp:
            answer = await resp.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        enlarge_udp_buffers(self.pc)


def udp_receive_buffer_drops() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full (whole machine)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")]) if len(lines) == 2 else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(mode: str, consults: int, seconds: float, clip: list[bytes]) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", mode, "--port", str(port)])  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    clients: list[Client] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/cpu"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            prefix = "relay" if mode == "encoded" else "stock"
            for c in range(consults):
                for _ in range(2):
                    client = Client(clip)
                    await client.join(http, f"{base}/{prefix}/bench-{c}/join")
                    clients.append(client)
            await asyncio.sleep(4)  # connect, first keyframes, encoder warm-up
            async with http.get(f"{base}/cpu") as resp:
                before = await resp.json()
            frames_before = [c.frames for c in clients]
            sent_before = sum(c.track._n for c in clients)
            drops = udp_receive_buffer_drops()
            harness_cpu = time.process_time()
            await asyncio.sleep(seconds)
            async with http.get(f"{base}/cpu") as resp:
                after = await resp.json()
            harness_cpu = time.process_time() - harness_cpu
            frames_after = [c.frames for c in clients]
            sent = sum(c.track._n for c in clients) - sent_before
            drops = udp_receive_buffer_drops() - drops
    finally:
        await asyncio.gather(*(c.pc.close() for c in clients))
        proc.terminate()
        proc.wait(timeout=10)
    wall = after["wall"] - before["wall"]
    streams = 2 * consults
    fps = [(b - a) / wall for a, b in zip(frames_before, frames_after, strict=True)]
    cpu_per_stream = 100 * (after["cpu"] - before["cpu"]) / wall / streams
    fps_mean = sum(fps) / len(fps)
    return {"mode": mode, "consults": consults, "streams": streams, "cpu_per_stream": cpu_per_stream,
            # CPU a stream would cost at the full 30 fps (a relay that drops frames looks cheaper than it is)
            "cpu_at_30": cpu_per_stream * FPS / fps_mean if fps_mean else float("nan"),
            "fps_min": min(fps), "fps_mean": fps_mean, "harness": 100 * harness_cpu / wall,
            "sent_fps": sent / wall / streams, "udp_drops": drops,
            "relay_in_fps": (after["received"] - before["received"]) / wall / streams,
            "relay_out_fps": (after["forwarded"] - before["forwarded"]) / wall / streams}


async def run(levels: list[int], seconds: float, modes: list[str]) -> None:
    loopback_only()
    clip = encode_clip()
    print(f"clip: {len(clip)} VP8 frames {WIDTH}x{HEIGHT}, {sum(map(len, clip)) * 8 * FPS / len(clip) / 1000:.0f} "
          f"kbit/s; {os.cpu_count()} CPUs shared with other work; {seconds:.0f} s per measure")
    rows = []
    for consults in levels:
        for mode in modes:
            rows.append(await measure(mode, consults, seconds, clip))
            r = rows[-1]
            inside = (f" (participants sent {r['sent_fps']:.1f}, relay received {r['relay_in_fps']:.1f},"
                      f" forwarded {r['relay_out_fps']:.1f} fps/stream)"
                      if mode == "encoded" else "") + f", {r['udp_drops']} UDP datagrams dropped by the kernel"
            print(f"  measured {mode:8} {consults} consult(s): {r['cpu_per_stream']:.1f} %/stream, "
                  f"{r['fps_min']:.1f} fps min{inside}", flush=True)
    print()
    print(f"{'relay':8} {'consults':>8} {'streams':>7} {'CPU %/stream':>12} {'@30fps':>7} {'fps min':>8}"
          f" {'fps mean':>8} {'consults/core':>13} {'harness CPU %':>13}")
    for r in rows:
        per_consult = 2 * r["cpu_at_30"]  # a two-way consult is two relayed streams
        capacity = int(100 / per_consult) if per_consult > 0 else 0
        print(f"{r['mode']:8} {r['consults']:>8} {r['streams']:>7} {r['cpu_per_stream']:>12.1f} {r['cpu_at_30']:>7.1f}"
              f" {r['fps_min']:>8.1f} {r['fps_mean']:>8.1f} {capacity:>13} {r['harness']:>13.0f}")
    print("consults/core: 100 % / (2 x CPU per stream at 30 fps), an extrapolation from the measured cost;"
          " harness CPU: the participants' process (sending + counting), not part of the relay")
    for consults in levels if len(modes) == 2 else []:
        stock, enc = (next(r for r in rows if r["mode"] == m and r["consults"] == consults)
                      for m in ("stock", "encoded"))
        if enc["cpu_per_stream"] > 0:
            ratio = stock["cpu_at_30"] / enc["cpu_at_30"]
            print(f"{consults} consult(s): encoded forwarding uses {ratio:.1f}x less CPU per stream than stock"
                  f" MediaRelay at 30 fps (fps min: stock {stock['fps_min']:.1f}, encoded {enc['fps_min']:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=("stock", "encoded"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--consults", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--modes", nargs="+", choices=("stock", "encoded"), default=["stock", "encoded"])
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
    else:
        asyncio.run(run(args.consults, args.seconds, args.modes))


if __name__ == "__main__":
    main()
