"""Chromium (fake camera) and two aiortc participants in one relayed consult: everyone decodes everyone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.media.relay_support import SECRET, Participant, allow_loopback, relay_server, wait_for

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><html><body><script src="/relay.js"></script></body></html>"""

# The browser side of the client protocol in docs/media-relay.md, with non-trickle ICE (aiortc answers once).
SCRIPT = """
window.joinRelay = async (url, secret, others) => {
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  window.pc = pc;
  const media = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 320, height: 240}});
  media.getTracks().forEach((t) => pc.addTrack(t, media));
  for (let i = 1; i < others; i++) {
    pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.addTransceiver('video', {direction: 'recvonly'});
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
  });
  const resp = await fetch(url + '/join', {method: 'POST', headers: {
      'Authorization': 'Bearer ' + secret, 'Content-Type': 'application/json'},
    body: JSON.stringify({participant_id: 'browser', sdp: pc.localDescription.sdp, type: 'offer'})});
  const answer = await resp.json();
  await pc.setRemoteDescription({type: answer.type, sdp: answer.sdp});
  return answer.tracks;
};
window.decodedByMid = async () => {
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out[s.mid] = s.framesDecoded || 0;
  });
  return out;
};
"""


class Loop:
    """An asyncio loop in a thread: the relay and the aiortc participants live there, Playwright stays sync."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Loop, str, Any]]:
    allow_loopback(monkeypatch)
    loop = Loop()
    ready: dict[str, Any] = {}
    stop = asyncio.Event()

    def pages(app: web.Application) -> None:
        async def page(_request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def script(_request: web.Request) -> web.Response:
            return web.Response(text=SCRIPT, content_type="application/javascript")

        app.router.add_get("/page", page)
        app.router.add_get("/relay.js", script)

    async def serve() -> None:
        async with relay_server(pages) as (server, http):
            ready["server"], ready["http"] = server, http
            await stop.wait()

    future = asyncio.run_coroutine_threadsafe(serve(), loop.loop)
    loop.run(wait_for(lambda: "server" in ready, timeout=10))
    base = str(ready["server"].make_url(""))
    try:
        yield loop, base, ready["http"]
    finally:
        loop.loop.call_soon_threadsafe(stop.set)
        future.result(15)
        loop.close()


def test_chromium_and_aiortc_participants_see_each_other_through_the_relay(relay: Any, new_browser: Any) -> None:
    loop, base, http = relay
    url = f"{base}/relay/consult-b"
    async def people() -> tuple[Participant, Participant]:  # aiortc objects belong to the loop's thread
        return Participant("a", "red"), Participant("b", "green")

    a, b = loop.run(people())
    try:
        loop.run(a.negotiate(http, url, others=0))
        loop.run(b.negotiate(http, url, others=1))

        page = new_browser().new_page()
        page.set_extra_http_headers({"Authorization": f"Bearer {SECRET}"})
        page.goto(f"{base}/page")
        tracks = page.evaluate("([u, s]) => joinRelay(u, s, 2)", [url, SECRET])
        video_mids = {t["participant_id"]: t["mid"] for t in tracks if t["kind"] == "video"}
        assert set(video_mids) == {"a", "b"}

        loop.run(a.negotiate(http, url, others=2))  # the browser joined: the others re-offer for its media
        loop.run(b.negotiate(http, url, others=2))

        def browser_decodes_both() -> bool:
            decoded = page.evaluate("() => decodedByMid()")
            return all(decoded.get(mid, 0) >= 10 for mid in video_mids.values())

        async def aiortc_decode_browser() -> bool:
            return await wait_for(lambda: a.frames_from("browser").frames >= 10
                                  and b.frames_from("browser").frames >= 10, timeout=15)

        assert loop.run(aiortc_decode_browser(), timeout=20), (vars(a.frames_from("browser")),
                                                                vars(b.frames_from("browser")))
        for _ in range(60):
            if browser_decodes_both():
                break
            page.wait_for_timeout(250)
        assert browser_decodes_both(), page.evaluate("() => decodedByMid()")
    finally:
        loop.run(a.close())
        loop.run(b.close())
