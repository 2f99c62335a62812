"""The consult room on a 390x844 phone and by keyboard: the video fills the screen, the call's buttons sit in a
bar at the bottom within the thumb's reach (44 px or more), nothing scrolls sideways, the buttons are reached with
Tab in a sensible order with a visible focus ring, state changes are announced, and axe-core finds no critical or
serious WCAG 2.1 AA violation in a live call."""

from __future__ import annotations

from typing import Any

import pytest

from tests.a11y import axe_violations
from tests.consults.helpers import announced, page_until

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
BAR = ["#toggle-mic", "#toggle-cam", "#toggle-audio-only", "#leave"]


def test_on_a_phone_the_video_fills_the_screen_and_the_buttons_sit_at_the_bottom(consult_pages: Any,
                                                                                 artifacts_dir: Any) -> None:
    doc, pat, _ = consult_pages(patient=PHONE)
    assert pat.evaluate("() => document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    stage = pat.locator("#consult .stage").bounding_box()
    assert stage["width"] >= 385 and stage["height"] >= 0.8 * 844, stage
    assert stage["y"] >= -1 and stage["y"] < 40, stage  # on screen, not below the page's header and title
    for selector in BAR:
        box = pat.locator(selector).bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44, (selector, box)
        assert box["y"] >= 844 * 0.8 and box["y"] + box["height"] <= 844, (selector, box)  # the bottom bar
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
    pat.screenshot(path=str(artifacts_dir / "phone-consult.png"))
    pat.tap("#toggle-mic")
    assert pat.get_attribute("#toggle-mic", "aria-pressed") == "true"
    assert "Your microphone is muted." in announced(pat)
    pat.tap("#toggle-audio-only")  # the thumb's way to save bandwidth
    page_until(doc, lambda: doc.is_visible("#remote-camera-off"))
    assert pat.is_visible("#remote-camera-off") and pat.is_visible("#leave")
    pat.screenshot(path=str(artifacts_dir / "phone-consult-audio-only.png"))


def test_the_consult_room_works_by_keyboard_and_passes_axe(consult_pages: Any) -> None:
    doc, pat, _ = consult_pages()
    assert not axe_violations(pat), axe_violations(pat)
    assert not axe_violations(doc), axe_violations(doc)

    # Tab from the top of the page: the call's buttons come in order, each named, each with a visible ring
    pat.locator("body").focus()
    reached: list[str] = []
    for _ in range(40):
        pat.keyboard.press("Tab")
        focused = pat.evaluate("() => document.activeElement.id")
        if focused in {s[1:] for s in BAR} and focused not in reached:
            reached.append(focused)
            ring = pat.evaluate("""() => { const s = getComputedStyle(document.activeElement);
                return s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2; }""")
            assert ring, f"{focused} shows no focus ring"
            name = pat.evaluate("() => document.activeElement.textContent.trim()")
            assert name, f"{focused} has no name"
        if len(reached) == len(BAR):
            break
    assert reached == [s[1:] for s in BAR]

    # keys work the buttons: Space mutes, Enter turns audio only on (the doctor hears of it)
    pat.focus("#toggle-mic")
    pat.keyboard.press("Space")
    assert pat.get_attribute("#toggle-mic", "aria-pressed") == "true"
    pat.focus("#toggle-audio-only")
    pat.keyboard.press("Enter")
    page_until(doc, lambda: doc.get_attribute("#consult", "data-audio-only") == "yes")
    assert doc.inner_text("#remote-camera-off").startswith("Camera off, audio only")
    assert any(a.startswith("Audio only") for a in announced(doc))
    assert "Audio only: the cameras are off to save bandwidth." in announced(pat)

    # the end is announced too
    doc.click("#end-consult")
    page_until(pat, lambda: "The consult has ended." in announced(pat))
