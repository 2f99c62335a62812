"""WCAG 2.1 AA in Chromium: axe-core (tests/npm) checks every navigation page of every role, plus the patient's
booking page and waiting room and the staff's patient chart, on a desktop and on a 390x844 phone (menu open), and
finds no critical or serious violation. The consult room in a call: tests/consults/test_room_access.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.a11y import axe_violations
from tests.test_layout import PHONE, nav_links, people  # noqa: F401  (people: the shared fixture)

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("role", ["patient", "clinic staff", "doctor", "pharmacist", "admin"])
def test_every_main_page_of_every_role_has_no_serious_accessibility_violation(
        role: str, people: dict[str, Any], live_server: str, new_browser: Any,  # noqa: F811
        browser_login: Any) -> None:
    page = new_browser().new_page()
    browser_login(page, live_server, people[role])
    urls = nav_links(page)
    if role == "patient":
        urls += [f"{live_server}/consults/{people['appointment'].id}/waiting",
                 f"{live_server}/consults/book?doctor_id={people['doctor'].id}"]
    if role in ("clinic staff", "doctor"):
        urls += [f"{live_server}/patients/{people['record'].id}"]
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
