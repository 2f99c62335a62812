"""A media worker is killed (SIGKILL) during relayed consults. Consult X (doctor and patient in Chromium, on
different app servers, being recorded) is on the killed worker; consult Y (two aiortc participants) is on the
other one. X's pages say the connection was lost, reconnect, and X moves to the other worker and goes on; Y's
media never stops; X's recording is closed as ended early and, once the killed worker is back, kept up to the
fault and playable."""

from __future__ import annotations

import asyncio
import io
import signal
import threading
import time
from typing import Any

import av
import pytest
import sqlalchemy as sa
from aiortc import RTCSessionDescription

from app import db
from app.consults import service
from app.consults.models import ConsultRecording, ConsultSession, RecordingStatus
from app.consults.recordings import WORKER_FAILED
from tests.cluster.conftest import Browser, Cluster, consult_across_servers, sign_in
from tests.conftest import PASSWORD
from tests.consults.helpers import current_slot, page_until
from tests.media.relay_support import Participant, allow_loopback

pytestmark = [pytest.mark.cluster, pytest.mark.fault, pytest.mark.browser]


def _pin(appointment_id: int, worker: str) -> None:
    """Pin a consult to one media worker, as the first relay call would (the test chooses which)."""
    db.session.execute(sa.update(ConsultSession).where(ConsultSession.appointment_id == appointment_id)
                       .values(media_worker=worker))
    db.session.commit()


def _pinned(appointment_id: int) -> str | None:
    db.session.remove()
    return db.session.scalar(sa.select(ConsultSession.media_worker)
                             .where(ConsultSession.appointment_id == appointment_id))


def _tile_frames(page: Any) -> dict[str, int]:
    tiles = page.locator("#tiles .tile.remote")
    return {tiles.nth(i).locator("figcaption").inner_text():
            int(tiles.nth(i).locator("video").get_attribute("data-frames-decoded") or 0)
            for i in range(tiles.count())}


def _decoding(page: Any, label: str, more: int = 30, timeout: float = 60.0) -> int:
    """The remote tile ``label`` decodes ``more`` frames from now on (a tile that is replaced starts again)."""
    start = _tile_frames(page).get(label, 0)
    return page_until(page, lambda: (n := _tile_frames(page).get(label, 0)) and (n > start + more or
                                                                            start > n >= more) and n, timeout)


class AiortcConsult:
    """Consult Y: doctor and patient as aiortc clients on the relay, through the app's API, in their own thread."""

    def __init__(self, base: str, appointment_id: int, people: list[tuple[str, Browser]]) -> None:
        self.base, self.appointment_id = base, appointment_id
        self.people = people
        self.parts: list[Participant] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _join(self) -> None:
        for (pid, browser), colour in zip(self.people, ("red", "green"), strict=True):
            part = Participant(pid, colour)
            self.parts.append(part)
            await part.pc.setLocalDescription(await part.pc.createOffer())
            resp = await asyncio.to_thread(
                browser.post, f"{self.base}/api/v1/consults/appointments/{self.appointment_id}/relay",
                json={"sdp": part.pc.localDescription.sdp, "type": "offer", "restart": True})
            assert resp.status_code == 200, resp.text[:300]
            answer = resp.json()
            await part.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            part.mapping = {t["mid"]: t["participant_id"] for t in answer["tracks"] if t["kind"] == "video"}

    def start(self) -> None:
        self.run(self._join())

    def frames(self) -> tuple[int, int]:
        """Video frames each participant has decoded (all from the other: there are two of them)."""
        a, b = self.parts
        return sum(r.frames for r in a.received.values()), sum(r.frames for r in b.received.values())

    async def _close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.parts))

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _frames_grow(consult: AiortcConsult, by: int, timeout: float) -> bool:
    start = consult.frames()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = consult.frames()
        if all(n >= s + by for n, s in zip(now, start, strict=True)):
            return True
        time.sleep(0.1)
    return False


def _webm_frames(data: bytes) -> tuple[int, float, float]:
    """Decoded video frames of the first video stream of a WebM, the time of the last one, and the duration."""
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames, last = 0, 0.0
        for frame in container.decode(video):
            frames += 1
            last = max(last, float(frame.time or 0.0))
        return frames, last, (container.duration or 0) / 1e6


def test_killing_a_media_worker_moves_its_consult_and_spares_the_other(
        cluster: Cluster, app, live_factories, new_browser, browser_login, monkeypatch):
    allow_loopback(monkeypatch)
    media_a, media_b = cluster.url("media_a"), cluster.url("media_b")
    web_a, web_b = cluster.url("web_a"), cluster.url("web_b")

    # Consult Y on worker B: two aiortc participants whose media must keep flowing throughout.
    _doctor_y, appt_y, doc_y, pat_y = consult_across_servers(cluster, app, live_factories)
    _pin(appt_y.id, media_b)
    other = AiortcConsult(web_a, appt_y.id, [("doctor", doc_y), ("patient", pat_y)])

    # Consult X on worker A, recorded with the patient's consent.
    doctor = live_factories.doctor(name="Dr Fault")
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name="Faye")
    appt = current_slot(doctor, patient, by=patient.user)
    service.check_in(appt, by=patient.user)
    service.admit(appt, by=doctor)
    db.session.commit()
    _pin(appt.id, media_a)
    doctor_name, patient_name = doctor.full_name, patient.user.full_name
    try:
        other.start()
        assert _frames_grow(other, 20, 30), other.frames()

        pat, doc = new_browser().new_page(), new_browser().new_page()
        for page, base, user in ((pat, web_b, patient.user), (doc, web_a, doctor)):
            page.on("dialog", lambda d: d.accept())
            browser_login(page, base, user)
            page.goto(f"{base}/consults/{appt.id}/room")
        pat.click("#rec-give")
        pat.wait_for_selector("#rec-consent:has-text('You agreed to this consult being recorded')")
        page_until(doc, lambda: doc.is_visible("#rec-start"), 30)
        doc.click("#rec-start")
        doc.wait_for_selector("#rec-indicator", state="visible", timeout=30_000)
        _decoding(doc, patient_name)
        _decoding(pat, doctor_name, more=90)  # three seconds and more recorded
        db.session.remove()
        [row] = db.session.scalars(sa.select(ConsultRecording).where(ConsultRecording.appointment_id == appt.id))
        assert row.status is RecordingStatus.RECORDING and row.media_worker == media_a

        killed_at = time.monotonic()
        cluster.stop("media_a", signal.SIGKILL)
        # What the people in consult X see: the connection is lost and being restored.
        for page in (doc, pat):
            page.wait_for_selector("#remote-status:has-text('Connection to the media server lost')", timeout=40_000)
        told_after = time.monotonic() - killed_at
        # Consult Y, on the other worker, does not notice.
        assert _frames_grow(other, 60, 30), other.frames()

        # X comes back on worker B without anyone clicking: media flows both ways again.
        _decoding(doc, patient_name, timeout=90)
        _decoding(pat, doctor_name, timeout=90)
        resumed_after = time.monotonic() - killed_at
        assert _pinned(appt.id) == media_b
        for page in (doc, pat):
            assert "Relayed through the hospital media server" in page.inner_text("#media-mode")
        page_until(doc, lambda: not doc.is_visible("#rec-indicator"), 30)  # no longer shown as recording
        db.session.remove()
        row = db.session.get(ConsultRecording, row.id)
        assert row.status is RecordingStatus.FAILED and row.stop_reason == WORKER_FAILED and row.stopped_at
        assert _frames_grow(other, 30, 30), other.frames()

        # Worker A is restarted (systemd does so at once): it finishes what it had recorded up to the fault.
        cluster.start_media("media_a")
        viewer = sign_in(web_a, doctor.email, PASSWORD)
        status = viewer.get(f"{web_a}/api/v1/consults/appointments/{appt.id}/recording").json()
        [listed] = status["recordings"]  # listed with the consult, playable
        db.session.remove()
        row = db.session.get(ConsultRecording, row.id)
        assert row.status is RecordingStatus.STORED and row.stop_reason == WORKER_FAILED  # it ended early
        assert row.duration and row.duration >= 2.0
        played = viewer.get(f"{web_a}{listed['url']}")
        assert played.status_code == 200
        frames, last, duration = _webm_frames(played.content)
        # Decodable frame after frame up to the fault (a loaded machine's browsers send fewer than 30 a second).
        assert abs(duration - row.duration) < 1.5 and last >= row.duration - 1.5, (last, duration, row.duration)
        assert frames >= 2 * row.duration, frames
        print(f"pages said the connection was lost {told_after:.1f} s after the kill; "
              f"consult resumed on the other worker {resumed_after:.1f} s after it; "
              f"recording kept {row.duration:.1f} s, {frames} frames, the last at {last:.1f} s")
    finally:
        other.close()
        if "media_a" not in cluster.procs or cluster.procs["media_a"].poll() is not None:
            cluster.procs.pop("media_a", None)
            cluster.start_media("media_a")
