"""A nurse registers a patient in a real browser and finds them in search."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.browser


def test_nurse_registers_patient_and_finds_them(live_server, live_factories, new_browser, browser_login,
                                                artifacts_dir):
    nurse = live_factories.nurse()
    family = f"Browser{uuid.uuid4().hex[:6]}"
    page = new_browser().new_page()
    browser_login(page, live_server, nurse)

    page.click("text=Register patient")
    page.fill("#given_name", "Lena")
    page.fill("#family_name", family)
    page.fill("#birth_date", "1975-04-30")
    # The field shows the device's order (04/30/1975 here); the page reads it back unambiguously.
    echo = page.inner_text("#birth_date ~ .date-echo")
    assert echo.startswith("1975-04-30") and "April" in echo and "Wednesday" in echo
    page.select_option("#sex", "female")
    page.fill("#allergies", "Sulfonamides; severe; rash")
    page.click("button:has-text('Register')")

    page.wait_for_selector("text=MRN")
    assert family.upper() in page.inner_text("h1")
    assert "Sulfonamides" in page.inner_text(".allergy-strip")

    # Marking the allergy inactive asks first; "no" keeps it on the chart.
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("#allergy button:has-text('Mark inactive')")
    assert asked and "Sulfonamides" in asked[0]
    page.reload()
    assert "Sulfonamides" in page.inner_text(".allergy-strip")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#allergy button:has-text('Mark inactive')")
    assert page.locator("#allergy button:has-text('Mark inactive')").count() == 0

    page.click("nav >> text=Patients")
    page.fill("#q", family[:8].lower())
    page.click("button:has-text('Search')")
    rows = page.locator("#patient-results tbody tr")
    assert rows.count() == 1
    assert "1975-04-30" in rows.first.inner_text()
    page.screenshot(path=str(artifacts_dir / "patient-search.png"), full_page=True)
