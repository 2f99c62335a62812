"""Independent browser clients against the authorization server, in Chromium with web security on: each app is
served from its own loopback origin, so discovery, token, userinfo and API calls are real cross-origin
requests that need CORS. oidc-client-ts with its default settings, and SMART's fhirclient (standalone launch)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from app import db
from app.auth import oauth_service
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def _register(factories: Any, origin: Any, *, scope: str, redirect: str, web_origin: bool = True) -> str:
    client, _ = oauth_service.register_client(oauth_service.ClientInput(
        name="Pocket Health", is_public=True, redirect_uris=[f"{origin.url}/{redirect}"], scope=scope,
        grants=["authorization_code", "refresh_token"], web_origins=[origin.url] if web_origin else []),
        by=factories.admin())
    db.session.commit()
    return client.client_id


def _sign_in(page: Any, user: Any) -> None:
    page.wait_for_url("**/sign-in**")
    page.fill("#email", user.email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


def _oidc_app(live_server: str, factories: Any, origin: Any, scope: str, *, web_origin: bool = True) -> None:
    """Register the oidc-client-ts test app for ``scope``, open it in a new browser and start its sign-in."""
    origin.settings.update(issuer=live_server, scope=scope, clientId=_register(
        factories, origin, scope=scope, redirect="oidc-callback.html", web_origin=web_origin))


def _start_oidc_sign_in(new_browser: Any, origin: Any) -> Any:
    page = new_browser().new_page()
    page.goto(f"{origin.url}/oidc.html")
    page.evaluate("() => { setTimeout(signIn, 0); }")
    return page


def _outcome(page: Any) -> tuple[dict[str, Any] | None, str | None]:
    page.wait_for_function("() => document.body && (document.body.dataset.result || document.body.dataset.error)")
    result, error = page.evaluate("() => [document.body.dataset.result || null, document.body.dataset.error || null]")
    return (json.loads(result) if result else None), error


def test_oidc_client_ts_signs_in_calls_the_api_and_refreshes(live_server, live_factories, new_browser,
                                                             third_party_origin, artifacts_dir):
    origin = third_party_origin
    me = live_factories.patient(with_account=True, given_name="Corsa")
    _oidc_app(live_server, live_factories, origin, "openid profile offline_access patient/*.rs")
    page = _start_oidc_sign_in(new_browser, origin)
    _sign_in(page, me.user)
    page.wait_for_selector("#consent-scopes")
    page.click("button:has-text('Allow')")
    result, error = _outcome(page)
    page.screenshot(path=str(artifacts_dir / "oidc-client-ts-callback.png"))
    assert error is None and result is not None
    assert result["sub"] == str(me.user.id) and result["name"] == me.user.full_name  # userinfo over CORS
    assert result["apiStatus"] == 200 and result["givenName"] == "Corsa"
    assert result["hasRefresh"] and result["renewed"]  # a public client refreshes with its client_id only

    # Signing out through the end-session endpoint returns to the app.
    page.goto(f"{origin.url}/oidc.html")
    page.evaluate("() => { setTimeout(signOut, 0); }")
    page.click("#confirm-sign-out")
    page.wait_for_url(f"{origin.url}/oidc.html")
    page.goto(f"{live_server}/account/apps")
    page.wait_for_url("**/sign-in**")


def test_errors_after_sign_in_reach_the_app(live_server, live_factories, new_browser, third_party_origin):
    origin = third_party_origin
    me = live_factories.patient(with_account=True)
    _oidc_app(live_server, live_factories, origin, "openid user/*.cruds")  # clinician-wide: never for a patient
    page = _start_oidc_sign_in(new_browser, origin)
    _sign_in(page, me.user)
    result, error = _outcome(page)
    assert result is None and error is not None and error.startswith("invalid_scope|")
    assert page.url.startswith(f"{origin.url}/oidc-callback.html")


def test_an_origin_nobody_registered_gets_no_cors(live_server, live_factories, new_browser, third_party_origin):
    origin = third_party_origin
    _oidc_app(live_server, live_factories, origin, "openid patient/*.rs", web_origin=False)
    page = _start_oidc_sign_in(new_browser, origin)
    page.wait_for_function("() => document.body.dataset.error")
    assert page.url.startswith(origin.url)  # discovery was blocked by the browser: no redirect happened
    assert "fetch" in page.evaluate("document.body.dataset.error").lower()


def _smart_launch(page: Any, origin: Any, user: Any, *, pick: Any = None) -> tuple[dict[str, Any] | None, str | None]:
    page.goto(f"{origin.url}/smart-launch.html")
    _sign_in(page, user)
    page.wait_for_selector("#consent-scopes")
    if pick is not None:
        page.fill("input[name=patient_q]", pick.family_name)
        page.click("#patient-search button")
        page.check(f"input[name=patient_id][value='{pick.id}']")
    page.click("button:has-text('Allow')")
    return _outcome(page)


SMART_SCOPE = "openid fhirUser launch/patient patient/*.rs"


def test_fhirclient_standalone_launch_for_a_patient(live_server, live_factories, new_browser, third_party_origin):
    origin = third_party_origin
    me = live_factories.patient(with_account=True)
    origin.settings.update(fhir=f"{live_server}/fhir", scope=SMART_SCOPE, clientId=_register(
        live_factories, origin, scope=SMART_SCOPE, redirect="smart-callback.html"))
    result, error = _smart_launch(new_browser().new_page(), origin, me.user)
    assert error is None and result is not None
    assert result["patient"] == str(me.id) and result["serverUrl"] == f"{live_server}/fhir"
    assert result["fhirUser"] == f"Patient/{me.id}"


def test_fhirclient_launch_by_a_doctor_with_the_patient_picker(live_server, live_factories, new_browser,
                                                               third_party_origin, artifacts_dir):
    origin = third_party_origin
    doctor = live_factories.doctor()
    patient = live_factories.patient(doctor=doctor, family_name="Pickering")
    origin.settings.update(fhir=f"{live_server}/fhir", scope=SMART_SCOPE, clientId=_register(
        live_factories, origin, scope=SMART_SCOPE, redirect="smart-callback.html"))
    page = new_browser().new_page()
    result, error = _smart_launch(page, origin, doctor, pick=patient)
    assert error is None and result is not None
    assert result["patient"] == str(patient.id) and result["fhirUser"] == f"Practitioner/{doctor.id}"


@pytest.mark.skipif(importlib.util.find_spec("app.fhir") is None, reason="needs the FHIR server (app.fhir)")
def test_fhirclient_reads_the_launch_patient_from_fhir(live_server, live_factories, new_browser, third_party_origin):
    from app.patients import service as patients
    from app.prescriptions import service as rx_service
    from tests.prescriptions.conftest import rx_input

    origin = third_party_origin
    doctor = live_factories.doctor()
    me = live_factories.patient(with_account=True, doctor=doctor)
    patients.add_allergy(me, by=live_factories.nurse(), substance="Latex", severity="severe", reaction="rash")
    rx_service.sign(rx_service.create_draft(me, rx_input("AMOX500"), by=doctor), by=doctor)
    db.session.commit()
    origin.settings.update(fhir=f"{live_server}/fhir", scope=SMART_SCOPE, readPatient=True, clientId=_register(
        live_factories, origin, scope=SMART_SCOPE, redirect="smart-callback.html"))
    result, error = _smart_launch(new_browser().new_page(), origin, me.user)
    assert error is None and result is not None and "readError" not in result, result
    assert result["resourceType"] == "Patient" and result["resourceId"] == str(me.id)
    assert result["allergies"] == ["Latex"] and result["medications"] == ["active"]
