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


def test_patient_authorises_an_app_and_later_revokes_it(live_server, live_factories, new_browser, browser_login,
                                                        artifacts_dir):
    from authlib.common.security import generate_token
    from authlib.integrations.requests_client import OAuth2Session

    from app import db
    from app.auth import oauth_service

    patient = live_factories.patient(with_account=True)
    reg, _ = oauth_service.register_client(oauth_service.ClientInput(
        name="MyMeds phone app", is_public=True, redirect_uris=["https://mymeds.example/cb"],
        scope="openid fhirUser offline_access patient/*.rs", grants=["authorization_code", "refresh_token"]),
        by=live_factories.admin())
    db.session.commit()
    app_client = OAuth2Session(reg.client_id, scope="openid fhirUser patient/MedicationRequest.rs",
                               redirect_uri="https://mymeds.example/cb", code_challenge_method="S256",
                               token_endpoint_auth_method="none")
    verifier = generate_token(48)
    url, _ = app_client.create_authorization_url(f"{live_server}/oauth/authorize", code_verifier=verifier,
                                                 nonce=generate_token(12))
    page = new_browser().new_page()
    browser_login(page, live_server, patient.user)
    callbacks: list[str] = []

    def _callback(route):
        callbacks.append(route.request.url)
        route.fulfill(status=200, body="app received the code", content_type="text/plain")

    page.route("https://mymeds.example/**", _callback)
    page.goto(url)
    assert "MyMeds phone app" in page.inner_text("h1")
    scopes = page.inner_text("#consent-scopes")
    assert "prescriptions in your own record only" in scopes
    page.screenshot(path=str(artifacts_dir / "oauth-consent.png"), full_page=True)
    page.click("button:has-text('Allow')")
    page.wait_for_function("() => document.body.innerText.includes('app received the code')")
    token = app_client.fetch_token(f"{live_server}/oauth/token", authorization_response=callbacks[0],
                                   code_verifier=verifier)
    assert token["patient"] == str(patient.id)

    page.goto(f"{live_server}/account/apps")
    assert "MyMeds phone app" in page.inner_text(".app-grant")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("button:has-text('Revoke access')")
    page.wait_for_selector("#no-apps")
    assert asked and "MyMeds phone app" in asked[0]  # asked before revoking
    import requests

    resp = requests.get(f"{live_server}/api/v1/me/record", timeout=10,
                        headers={"Authorization": f"Bearer {token['access_token']}"})
    assert resp.status_code == 401
