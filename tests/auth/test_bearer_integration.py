"""How bearer tokens sit beside browser sessions: CSRF still guards cookies, routes declare their scopes,
and the second sign-in step sends people back into an app's authorization request."""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, quote, urlsplit

import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from app import db
from app.auth import bearer, oauth_service
from app.auth import scopes as smart
from tests.conftest import PASSWORD


def test_cookie_requests_still_need_csrf(client, factories, login):
    login(client, factories.nurse())
    client.send_csrf = False
    resp = client.post("/api/v1/patients", json={"given_name": "A", "family_name": "B",
                                                 "birth_date": "1990-01-01", "sex": "female"})
    assert resp.status_code == 400 and resp.json["type"] == "/problems/csrf-failed"


@pytest.mark.parametrize(("method", "path", "resource", "permission"), [
    ("GET", "/api/v1/patients", "Patient", "s"),
    ("GET", "/api/v1/patients/5", "Patient", "r"),
    ("POST", "/api/v1/patients", "Patient", "c"),
    ("PUT", "/api/v1/patients/5", "Patient", "u"),
    ("DELETE", "/api/v1/medication-requests/7", "MedicationRequest", "d"),  # no such method: 405 after the scope
    ("GET", "/dicomweb/studies", "ImagingStudy", "s"),
    ("GET", "/dicomweb/studies/1.2.3/series", "ImagingStudy", "s"),
    ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances", "ImagingStudy", "s"),
    ("GET", "/dicomweb/instances", "ImagingStudy", "s"),
    ("GET", "/dicomweb/studies/1.2.3", "ImagingStudy", "r"),
    ("GET", "/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1", "ImagingStudy", "r"),
    ("POST", "/dicomweb/studies/1.2.3", "ImagingStudy", "c"),
    ("GET", "/api/v1/me", None, "r"),
    ("GET", "/api/v1/me/medication-requests", "MedicationRequest", "s"),
    ("GET", "/api/v1/medication-requests/3", "MedicationRequest", "r"),
    ("POST", "/api/v1/medication-dispenses/3/handover", "MedicationDispense", "c"),
    ("GET", "/api/v1/formulary", "Medication", "s"),
    ("GET", "/api/v1/some-new-domain/1", "*", "r"),
    ("GET", "/api/v1/consults/appointments", "Appointment", "r"),
    ("GET", "/api/v1/pharmacy/queue", "MedicationDispense", "r"),
    ("GET", "/api/v1/me/record", "Patient", "s"),
    ("GET", "/api/v1/patients/5/medication-requests", "Patient", "r"),
    ("POST", "/api/v1/medication-requests/3/dispenses", "MedicationRequest", "c"),
    ("GET", "/api/v1/users", "*", "r"),
    ("GET", "/fhir/Condition", "Condition", "s"),
    ("GET", "/fhir/Patient/5/$everything", "Patient", "r"),
    ("DELETE", "/fhir/Patient/5", "Patient", "d"),
])
def test_scope_needed_per_route(app, method, path, resource, permission):
    with app.test_request_context(path, method=method):
        needed = bearer.need()
    assert (needed.resource, needed.permission) == (resource, permission)


def test_every_token_route_declares_its_scope_or_is_deliberately_open(app):
    """A new /api, /dicomweb or /fhir route must say which resource type it serves; left undeclared it would
    need a wildcard scope, which no app is given for one resource."""
    undeclared = sorted(rule.rule for rule in app.url_map.iter_rules()
                        if rule.rule.startswith(bearer.PROTECTED_PREFIXES)
                        and bearer.declaration_for(app, rule.endpoint) is None)
    assert undeclared == []
    with app.test_request_context("/fhir/metadata"):
        assert bearer.need() is None  # the capability statement is open to anyone


def test_a_path_no_route_declares_needs_a_wildcard_scope(client, factories, bearer_for):
    nurse = factories.nurse()
    narrow = bearer_for(nurse, "user/Patient.cruds")
    denied = client.get("/api/v1/some-new-domain/1", headers={"Authorization": f"Bearer {narrow}"})
    assert denied.status_code == 403 and 'scope="user/*.r"' in denied.headers["WWW-Authenticate"]
    wide = bearer_for(nurse, "user/*.rs")
    assert client.get("/api/v1/some-new-domain/1", headers={"Authorization": f"Bearer {wide}"}).status_code == 404


def test_a_bearer_token_wins_over_a_session_cookie_sent_alongside(client, factories, login, bearer_for):
    nurse, patient = factories.nurse(), factories.patient(with_account=True)
    patient_user, patient_id = patient.user, patient.id
    login(client, nurse)
    assert client.get("/api/v1/me").json["id"] == nurse.id
    token = bearer_for(patient_user, "patient/Patient.rs")
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["id"] == patient_user.id
    # The token's scopes, not the nurse's session, decide: it does not reach prescriptions.
    denied = client.get("/api/v1/me/medication-requests", headers={"Authorization": f"Bearer {token}"})
    assert denied.status_code == 403
    client.send_csrf = False  # and a write with the token needs no CSRF token, the cookie beside it nonetheless
    wrote = client.put(f"/api/v1/patients/{patient_id}", json={}, headers={"Authorization": f"Bearer {token}"})
    assert wrote.status_code == 403 and wrote.json["type"] == "/problems/insufficient-scope"


def test_scope_grammar():
    assert smart.grants(["patient/*.rs"], "MedicationRequest", "r")
    assert not smart.grants(["patient/Patient.rs"], "MedicationRequest", "r")
    assert not smart.grants(["user/*.rs"], "Patient", "c")
    assert smart.grants(["user/Patient.write"], "Patient", "u")
    assert smart.covers(["user/*.cruds"], "user/ImagingStudy.rs")
    assert not smart.covers(["user/*.rs"], "user/ImagingStudy.cruds")
    assert not smart.covers(["user/*.cruds"], "patient/Patient.rs")
    assert smart.parse("patient/Bogus.rs") is None and smart.parse("patient/Patient.xyz") is None


def test_second_step_returns_to_the_apps_authorization_request(client, factories, app, monkeypatch):
    monkeypatch.setitem(app.config, "MFA_REQUIRED_ROLES", ("doctor",))
    doctor = factories.doctor()
    admin = factories.admin()
    with app.test_request_context():
        reg, client_secret = oauth_service.register_client(oauth_service.ClientInput(
            name="Clinic kiosk", is_public=False, redirect_uris=["https://kiosk.example/cb"],
            scope="openid user/Patient.rs", grants=["authorization_code"]), by=admin)
        client_id = reg.client_id
        db.session.commit()
    authorize = (f"/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri="
                 f"{quote('https://kiosk.example/cb', safe='')}&scope=openid&nonce=n1&state=s1")
    to_sign_in = client.get(authorize)
    assert to_sign_in.status_code == 302 and "/sign-in" in to_sign_in.headers["Location"]
    next_url = to_sign_in.headers["Location"]
    resp = client.post(urlsplit(next_url).path + "?" + urlsplit(next_url).query,
                       data={"email": doctor.email, "password": PASSWORD})
    assert resp.headers["Location"].endswith("/sign-in/set-up-code")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', client.get("/sign-in/set-up-code").get_data(as_text=True))
    done = client.post("/sign-in/set-up-code", data={"code": pyotp.TOTP(secret.group(1)).now()})
    continue_to = re.search(r'id="continue" href="([^"]+)"', done.get_data(as_text=True)).group(1)
    assert continue_to.startswith("/oauth/authorize?")
    page = client.get(continue_to.replace("&amp;", "&"))
    assert page.status_code == 200 and "Clinic kiosk" in page.get_data(as_text=True)
    allow = client.post(continue_to.replace("&amp;", "&"), data={"decision": "allow"})
    assert allow.status_code == 302 and allow.headers["Location"].startswith("https://kiosk.example/cb?code=")
    assert "state=s1" in allow.headers["Location"]

    # The ID token says a second factor was used (RFC 8176 "amr"), for apps that insist on it.
    code = parse_qs(urlsplit(allow.headers["Location"]).query)["code"][0]
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    token = client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": "https://kiosk.example/cb"},
                        headers={"Authorization": f"Basic {basic}"}).json
    assert "id_token" in token, token
    claims = jwt.decode(token["id_token"], KeySet.import_key_set(client.get("/oauth/jwks").json)).claims
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["nonce"] == "n1"
