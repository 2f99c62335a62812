"""Phone first for patients: on a 390x844 touch phone every patient page (My health, prescriptions, consults,
booking, waiting room, the rest of the navigation) has no sideways scrolling, its main action on the first screen,
and touch targets (buttons, fields, button links, the menu's links) at least 44 px tall. The consult room itself:
tests/consults/test_room_access.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_layout import OFFSCREEN, PHONE, nav_links, people  # noqa: F401  (people: the shared fixture)

pytestmark = pytest.mark.browser

# Visible controls in the page's content smaller than a fingertip (links inside running text are exempt, as
# WCAG's target-size rule allows).
SMALL_TARGETS = """() => {
  const out = [];
  for (const el of document.querySelectorAll(`main button, main a.button, main select, main textarea,
      main input:not([type=hidden]):not([type=checkbox]):not([type=radio]), main summary, main label.slot,
      main label:has(> input[type=checkbox]), main label:has(> input[type=radio])`)) {
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height || getComputedStyle(el).visibility === "hidden") continue;
    if (r.height < 44 - 0.5) out.push(`${el.tagName.toLowerCase()} "${(el.textContent || el.name || el.id).trim()
      .slice(0, 30)}" is ${Math.round(r.height)} px tall`);
  }
  return out;
}"""


def test_every_patient_page_fits_a_phone_with_touch_sized_targets(people: dict[str, Any], live_server: str,  # noqa: F811
                                                                   new_browser: Any, browser_login: Any,
                                                                   artifacts_dir: Any) -> None:
    """The README's docs/img/phone-prescriptions.png comes from here."""
    page = new_browser(viewport=PHONE, has_touch=True, is_mobile=True).new_page()
    browser_login(page, live_server, people["patient"])
    main_action = {
        "/me": "#allergy",
        "/me/prescriptions": ".my-rx h2",
        "/consults": "a.button:has-text('Book a video consult')",
        f"/consults/book?doctor_id={people['doctor'].id}": "#slots .slot",
        f"/consults/{people['appointment'].id}/waiting": "#check-in",
    }
    urls = [f"{live_server}{path}" for path in main_action]
    urls += [u for u in nav_links(page) if u not in urls]
    problems: list[str] = []
    for url in urls:
        page.goto(url)
        page.wait_for_load_state("load")
        path = url.removeprefix(live_server)
        problems += [f"{path}: {p}" for p in page.evaluate(OFFSCREEN) + page.evaluate(SMALL_TARGETS)]
        if path in main_action:
            box = page.locator(main_action[path]).first.bounding_box()
            if not box or box["y"] < 0 or box["y"] + min(box["height"], 44) > PHONE["height"]:
                problems.append(f"{path}: {main_action[path]} is not on the first screen ({box})")
        if path == "/me/prescriptions":
            page.screenshot(path=str(artifacts_dir / "phone-prescriptions.png"))
    assert not problems, "\n".join(problems)
