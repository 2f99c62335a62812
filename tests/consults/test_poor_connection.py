"""A consult on a poor connection, in two Chromium profiles with fake cameras: DevTools network emulation
(packet loss, little bandwidth) on the patient's side makes the video step down and the page suggest audio only;
the call goes on with sound, then returns to video when the network recovers; a short offline blip reconnects
without anyone touching anything. Screen readers hear each change through the call's live region.

Chromium emulates the network for WebRTC only on peer connections made while an emulation rule exists, so the
patient's browser gets a neutral rule before joining; changing that rule later acts on the call as it runs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.consults.helpers import GOOD, OFFLINE, POOR, announced, audio_packets, emulate, frames, page_until

pytestmark = pytest.mark.browser

# What the patient's browser sends as video now (RTCRtpSender.getParameters of the call's connection).
VIDEO_ENCODING = """() => window.hospitalConsultPc.getSenders().find((s) => s.track && s.track.kind === "video")
  .getParameters().encodings[0]"""


def video_stopped(page: Any) -> int:
    """Wait until no video frame arrives for a second (those in flight are decoded); the count then."""
    def settled() -> int | None:
        count = frames(page)
        page.wait_for_timeout(1000)
        return count if frames(page) == count else None
    return page_until(page, settled, timeout=10)


@pytest.fixture
def consult(consult_pages: Any) -> tuple[Any, Any, Any]:
    return consult_pages()


def test_a_poor_connection_goes_on_as_audio_then_returns_to_video(consult: tuple[Any, Any, Any]) -> None:
    doc, pat, network = consult
    assert pat.get_attribute("#consult", "data-video-level") == "0"
    assert "Connected: you can see and hear each other." in announced(pat)
    emulate(network, POOR)

    # the video we send steps down first (smaller, fewer frames, fewer bits), then audio only is suggested
    page_until(pat, lambda: pat.get_attribute("#consult", "data-video-level") == "1", timeout=30)
    page_until(pat, lambda: pat.get_attribute("#consult", "data-video-level") == "2", timeout=30)
    encoding = pat.evaluate(VIDEO_ENCODING)
    assert (encoding["scaleResolutionDownBy"], encoding["maxFramerate"], encoding["maxBitrate"]) == (4, 8, 100_000)
    pat.wait_for_selector("#quality-suggestion:visible", timeout=30_000)
    assert "Switch to audio only?" in pat.inner_text("#quality-suggestion")
    assert pat.inner_text("#quality-accept") == "Audio only"
    assert any("Switch to audio only?" in a for a in announced(pat))
    pat.click("#quality-accept")

    # both cameras stop; the doctor sees why; the call goes on with sound
    for page in (pat, doc):
        page_until(page, lambda p=page: p.get_attribute("#consult", "data-audio-only") == "yes")
        assert page.get_attribute("#toggle-audio-only", "aria-pressed") == "true"
    doc.wait_for_selector("#remote-camera-off:visible")
    assert "Camera off, audio only" in doc.inner_text("#remote-camera-off")
    assert any("Audio only" in a for a in announced(doc))
    emulate(network, GOOD)
    heard = audio_packets(doc)
    page_until(doc, lambda: audio_packets(doc) > heard + 100)  # ~50 audio packets a second still arrive
    still = video_stopped(doc)
    doc.wait_for_timeout(2000)
    assert frames(doc) - still < 5  # and no video

    # the network is good again: the page offers video, and both cameras come back
    pat.wait_for_selector("#quality-suggestion:visible", timeout=30_000)
    assert "Turn the video back on?" in pat.inner_text("#quality-suggestion")
    pat.click("#quality-accept")
    for page in (pat, doc):
        page_until(page, lambda p=page: p.get_attribute("#consult", "data-audio-only") == "no")
    assert doc.is_hidden("#remote-camera-off")
    before = frames(doc)
    page_until(doc, lambda: frames(doc) > before + 20, timeout=15)
    assert "Video is back on." in announced(doc)


def test_either_side_turns_the_camera_off_and_the_other_sees_it(consult: tuple[Any, Any, Any]) -> None:
    doc, pat, _ = consult
    doc.click("#toggle-cam")
    assert doc.get_attribute("#toggle-cam", "aria-pressed") == "true"
    pat.wait_for_selector("#remote-camera-off:visible")
    assert pat.inner_text("#remote-camera-off") == "Camera off, audio only"
    before = video_stopped(pat)
    pat.wait_for_timeout(2000)
    assert frames(pat) - before < 5  # nothing is sent (not a black picture at full rate)
    doc.click("#toggle-cam")
    pat.wait_for_selector("#remote-camera-off", state="hidden")
    page_until(pat, lambda: frames(pat) > before + 20, timeout=15)


def test_a_short_offline_blip_reconnects_by_itself(consult: tuple[Any, Any, Any]) -> None:
    doc, pat, network = consult
    emulate(network, OFFLINE)
    page_until(pat, lambda: "Connection lost: reconnecting." in announced(pat), timeout=30)
    emulate(network, GOOD)
    before = frames(pat)
    page_until(pat, lambda: frames(pat) > before + 20, timeout=30)  # no click, no reload
    log = announced(pat)
    assert log.index("Connection lost: reconnecting.") < len(log) - 1 - log[::-1].index(
        "Connected: you can see and hear each other.")
    assert frames(doc) > 0 and pat.is_visible("#leave")
