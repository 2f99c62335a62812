"""A doctor sets up an authenticator and signs in with a TOTP code in a real browser."""

from __future__ import annotations

import time

import pyotp
import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def test_doctor_enrols_and_signs_in_with_totp(live_server, live_factories, new_browser, app, monkeypatch,
                                              artifacts_dir):
    monkeypatch.setitem(app.config, "MFA_REQUIRED_ROLES", ("doctor", "pharmacist", "admin"))
    doctor = live_factories.doctor()
    page = new_browser().new_page()

    def password_step() -> None:
        page.goto(f"{live_server}/sign-in")
        page.fill("#email", doctor.email)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")

    password_step()
    page.wait_for_url("**/sign-in/set-up-code")
    assert page.locator("#totp-qr").evaluate("img => img.complete && img.naturalWidth > 0")
    secret = page.inner_text("#totp-secret")
    page.screenshot(path=str(artifacts_dir / "mfa-enrol.png"), full_page=True)
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("button:has-text('Confirm')")
    assert page.locator("#recovery-codes li").count() == 10
    page.click("#continue")
    page.wait_for_url("**/patients**")
    page.click("text=Sign out")

    password_step()
    page.wait_for_url("**/sign-in/code")
    page.fill("#code", "000000")
    page.click("button:has-text('Verify')")
    assert "not correct" in page.inner_text(".flash-error")
    page.fill("#code", pyotp.TOTP(secret).at(int(time.time()) + 30))
    page.click("button:has-text('Verify')")
    page.wait_for_url("**/patients**")
    assert doctor.full_name in page.inner_text(".who")
