"""WCAG 2.1 AA in Chromium: axe-core (tests/npm) checks every navigation page of every role, and the patient's
waiting room and consult room, on a desktop and on a 390x844 phone (menu open), and finds no critical or serious
violation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_layout import PHONE, nav_links, people  # noqa: F401  (people: the shared fixture)

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "npm" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

RUN_AXE = """async (tags) => {
  const result = await axe.run(document, { runOnly: { type: "tag", values: tags }, resultTypes: ["violations"] });
  return result.violations.filter((v) => v.impact === "critical" || v.impact === "serious").map((v) =>
    `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ") + " " +
      (n.failureSummary || "").split("\\n").slice(1, 2).join("")).join(" | ")}`);
}"""


def axe_violations(page: Any) -> list[str]:
    """Run axe-core in the page (evaluated through DevTools, so the page's CSP does not stop it)."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    return page.evaluate(RUN_AXE, WCAG_AA)


@pytest.fixture(scope="module", autouse=True)
def _axe_installed() -> None:
    if not AXE.exists():
        pytest.fail(f"{AXE} missing: run `npm ci --prefix tests/npm` (make test does)")


@pytest.mark.parametrize("role", ["patient", "clinic staff", "doctor", "pharmacist", "admin"])
def test_every_main_page_of_every_role_has_no_serious_accessibility_violation(
        role: str, people: dict[str, Any], live_server: str, new_browser: Any,  # noqa: F811
        browser_login: Any) -> None:
    page = new_browser().new_page()
    browser_login(page, live_server, people[role])
    urls = nav_links(page)
    if role == "patient":
        appt = people["appointment"]
        urls += [f"{live_server}/consults/{appt.id}/waiting"]
    problems: list[str] = []
    for size in ({"width": 1280, "height": 900}, PHONE):
        page.set_viewport_size(size)
        for url in urls:
            page.goto(url)
            page.wait_for_load_state("load")
            if size == PHONE:
                page.locator(".menu-toggle").click()  # the navigation, opened, is checked too
            problems += [f"{size['width']}px {url}: {v}" for v in axe_violations(page)]
    assert not problems, "\n".join(problems)
