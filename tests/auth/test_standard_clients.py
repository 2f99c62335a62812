"""What standard OAuth 2 / OpenID Connect / SMART App Launch clients expect of the authorization server, over
real HTTP: CORS, prompt=none and remembered consent, public refresh, loopback ports, SMART launch context and
audiences, introspection of refresh tokens, narrowing by meaning, truthful metadata, RFC 9207, request objects,
end-session, private_key_jwt with SMART Backend Services, and dynamic registration."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
import sqlalchemy as sa
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc.jwk import KeySet, RSAKey

from app import db
from app.auth.oauth_models import OAuthClient
from tests.auth.conftest import CALLBACK, browser_session, client_assertion, consent, csrf_from
from tests.conftest import PASSWORD

APP_ORIGIN = "https://app.example"
SMART_SCOPE = "openid fhirUser launch/patient patient/*.rs"


def _query(resp: requests.Response) -> dict[str, str]:
    assert resp.status_code in (302, 303), (resp.status_code, resp.text[:300])
    return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}


def _authorize_url(env, client_id, *, scope="openid patient/*.rs", redirect_uri=CALLBACK, **extra):
    client = OAuth2Session(client_id, scope=scope, redirect_uri=redirect_uri, code_challenge_method="S256")
    verifier = generate_token(48)
    url, _state = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, **extra)
    return url, verifier


def _exchange(env, client_id, location, verifier, redirect_uri=CALLBACK):
    code = parse_qs(urlsplit(location).query)["code"][0]
    resp = requests.post(f"{env.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
        "code_verifier": verifier}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _offline_patient_token(env, reg, user):
    """A patient's tokens (with a refresh token) for ``reg``, after consent in a signed-in browser."""
    url, verifier = _authorize_url(env, reg.client_id, scope="openid offline_access patient/*.rs")
    return _exchange(env, reg.client_id, consent(browser_session(env.base, user), url).headers["Location"], verifier)


def _bearer(env, token, path):
    return requests.get(f"{env.base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


# ---------------------------------------------------------------- CORS


@pytest.mark.smoke
def test_cors_is_open_only_to_registered_web_origins(oauth_env):
    env = oauth_env
    env.register(public=True, web_origins=[APP_ORIGIN])
    for path, method in (("/oauth/token", "POST"), ("/oauth/userinfo", "GET"), ("/api/v1/me/record", "GET"),
                         ("/.well-known/openid-configuration", "GET"), ("/oauth/revoke", "POST")):
        pre = requests.options(f"{env.base}{path}", headers={
            "Origin": APP_ORIGIN, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization"}, timeout=10)
        assert pre.status_code == 204, path
        assert pre.headers["Access-Control-Allow-Origin"] == APP_ORIGIN, path
        assert method in pre.headers["Access-Control-Allow-Methods"]
        assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in pre.headers  # tokens, never the person's cookies
        evil = requests.options(f"{env.base}{path}", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": method}, timeout=10)
        assert "Access-Control-Allow-Origin" not in evil.headers, path
    for path in ("/.well-known/openid-configuration", "/.well-known/smart-configuration", "/oauth/jwks",
                 "/fhir/.well-known/smart-configuration"):
        resp = requests.get(f"{env.base}{path}", headers={"Origin": APP_ORIGIN}, timeout=10)
        assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN, path
        assert "Origin" in resp.headers["Vary"]
        other = requests.get(f"{env.base}{path}", headers={"Origin": "https://evil.example"}, timeout=10)
        assert "Access-Control-Allow-Origin" not in other.headers
    # A token error is readable by the app too (the browser would hide it otherwise).
    bad = requests.post(f"{env.base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x",
                                                          "client_id": "nope"}, headers={"Origin": APP_ORIGIN},
                        timeout=10)
    assert bad.status_code in (400, 401) and bad.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    # Pages never get CORS headers.
    assert "Access-Control-Allow-Origin" not in requests.get(f"{env.base}/sign-in", headers={
        "Origin": APP_ORIGIN}, timeout=10).headers


def test_cors_follows_clients_registered_and_disabled_while_running(oauth_env):
    """The allowed origins change with the client list, with no restart; a preflight gets back only the request
    headers and methods the API allows, and says how long it may be cached."""
    from app.auth import oauth_service

    env = oauth_env
    origin = "https://later-app.example"

    def preflight(headers: str = "authorization") -> requests.Response:
        return requests.options(f"{env.base}/api/v1/me/record", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": headers},
            timeout=10)

    assert "Access-Control-Allow-Origin" not in preflight().headers
    registered = env.register(public=True, web_origins=[origin])
    allowed = preflight("authorization, x-not-allowed")
    assert allowed.headers["Access-Control-Allow-Origin"] == origin
    assert allowed.headers["Access-Control-Allow-Headers"].lower() == "authorization"
    assert allowed.headers["Access-Control-Max-Age"] == "600"
    client = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == registered.client_id))
    oauth_service.set_active(client, False, by=env.admin)
    db.session.commit()
    assert "Access-Control-Allow-Origin" not in preflight().headers


def test_web_origins_are_validated(oauth_env):
    from app.auth import oauth_service
    from app.errors import ValidationFailed

    env = oauth_env
    for origin in ("https://app.example/path", "http://app.example", "https://*.example", "ftp://x.example"):
        with pytest.raises(ValidationFailed) as exc:
            env.register(public=True, web_origins=[origin])
        assert "web_origins" in exc.value.errors, origin
    assert oauth_service.origin_problem("http://127.0.0.1:8123") is None


# ---------------------------------------------------------------- prompt=none and remembered consent


def test_prompt_none_and_remembered_consent(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    anonymous = requests.Session()
    url, _ = _authorize_url(env, reg.client_id, prompt="none", state="s1")
    answer = _query(anonymous.get(url, allow_redirects=False))
    assert answer["error"] == "login_required" and answer["state"] == "s1" and answer["iss"] == env.base

    browser = browser_session(env.base, me.user)
    answer = _query(browser.get(url, allow_redirects=False))
    assert answer["error"] == "consent_required" and answer["iss"] == env.base

    url, verifier = _authorize_url(env, reg.client_id, scope="openid patient/*.rs offline_access")
    first = consent(browser, url)
    assert _query(first)["iss"] == env.base
    _exchange(env, reg.client_id, first.headers["Location"], verifier)

    # Consent is remembered: no page the second time, also for a narrower scope, and prompt=none gets a code.
    url, verifier = _authorize_url(env, reg.client_id, scope="openid patient/Patient.rs")
    again = browser.get(url, allow_redirects=False)
    assert "code" in _query(again)
    assert _exchange(env, reg.client_id, again.headers["Location"], verifier)["scope"] == "openid patient/Patient.rs"
    url, _ = _authorize_url(env, reg.client_id, prompt="none")
    assert "code" in _query(browser.get(url, allow_redirects=False))
    # prompt=consent asks again; a wider scope asks again.
    url, _ = _authorize_url(env, reg.client_id, prompt="consent")
    assert browser.get(url, allow_redirects=False).status_code == 200
    url, _ = _authorize_url(env, reg.client_id, scope="openid profile patient/*.rs", prompt="none")
    assert _query(browser.get(url, allow_redirects=False))["error"] == "consent_required"

    # Withdrawn under "Connected apps": asked again.
    apps = browser.get(f"{env.base}/account/apps")
    assert reg.client_id in apps.text
    browser.post(f"{env.base}/account/apps/{reg.client_id}/revoke", data={"csrf_token": csrf_from(apps.text)})
    url, _ = _authorize_url(env, reg.client_id, prompt="none")
    assert _query(browser.get(url, allow_redirects=False))["error"] == "consent_required"


def test_prompt_login_and_max_age_ask_for_a_fresh_sign_in(oauth_env):
    from app import db

    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    browser = browser_session(env.base, me.user)
    url, _ = _authorize_url(env, reg.client_id, max_age="600")
    assert browser.get(url, allow_redirects=False).status_code == 200  # signed in just now: consent page
    for extra in ({"prompt": "login"}, {"max_age": "600"}):
        db.session.refresh(me.user)
        me.user.last_sign_in_at -= timedelta(minutes=15)  # the person signed in a while ago
        db.session.commit()
        url, _ = _authorize_url(env, reg.client_id, **extra)
        resp = browser.get(url, allow_redirects=False)
        sign_in = urljoin(env.base, resp.headers["Location"])
        assert urlsplit(sign_in).path == "/sign-in", extra
        assert browser.get(f"{env.base}/account/apps", allow_redirects=False).status_code == 302  # signed out
        page = browser.get(sign_in)
        signed = browser.post(sign_in, data={"email": me.user.email, "password": PASSWORD,
                                             "csrf_token": csrf_from(page.text)}, allow_redirects=False)
        again = browser.get(urljoin(env.base, signed.headers["Location"]), allow_redirects=False)
        assert again.status_code == 200 and "consent-scopes" in again.text, extra  # the request goes on


# ---------------------------------------------------------------- public clients, native apps


def test_public_client_refreshes_with_client_id_only(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    token = _offline_patient_token(env, reg, me.user)
    resp = requests.post(f"{env.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": reg.client_id},
        timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["refresh_token"] != token["refresh_token"]
    assert resp.json()["patient"] == str(me.id)
    # Without client_id the token endpoint does not know the client.
    assert requests.post(f"{env.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": resp.json()["refresh_token"]}, timeout=10).status_code == 401


def test_loopback_redirect_uris_accept_any_port(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True, redirect_uris=["http://127.0.0.1/callback", "https://app.example/cb"])
    browser = browser_session(env.base, me.user)
    native = "http://127.0.0.1:53127/callback"
    url, verifier = _authorize_url(env, reg.client_id, redirect_uri=native)
    resp = consent(browser, url)
    assert resp.headers["Location"].startswith(f"{native}?")
    assert _exchange(env, reg.client_id, resp.headers["Location"], verifier, redirect_uri=native)["access_token"]
    # Only loopback: another port of an https address, or another loopback path, is refused.
    for uri in ("https://app.example:8443/cb", "http://127.0.0.1:53127/other"):
        url, _ = _authorize_url(env, reg.client_id, redirect_uri=uri)
        refused = browser.get(url, allow_redirects=False)
        assert refused.status_code == 400 and "Location" not in refused.headers, uri


# ---------------------------------------------------------------- SMART launch context and audiences


@pytest.mark.smoke
def test_staff_pick_the_patient_and_the_token_reaches_only_that_record(oauth_env):
    env = oauth_env
    doctor = env.factories.doctor()
    mine = env.factories.patient(doctor=doctor, given_name="Picka")
    stranger = env.factories.patient(given_name="Strangera")
    reg = env.register(public=True, scope=SMART_SCOPE)
    browser = browser_session(env.base, doctor)
    fhir = f"{env.base}/fhir"
    url, verifier = _authorize_url(env, reg.client_id, scope=SMART_SCOPE, aud=fhir)

    page = browser.get(url)
    assert page.status_code == 200 and 'id="patient-picker"' in page.text and "Picka" in page.text
    assert "Strangera" not in page.text  # only patients this doctor may see
    searched = browser.get(f"{url}&patient_q=Picka")
    assert "Picka" in searched.text
    # A patient outside the doctor's reach cannot be forced in.
    refused = browser.post(url, data={"csrf_token": csrf_from(page.text), "decision": "allow",
                                      "patient_id": str(stranger.id)}, allow_redirects=False)
    assert refused.status_code == 422 and 'id="launch-error"' in refused.text
    chosen = browser.post(url, data={"csrf_token": csrf_from(page.text), "decision": "allow",
                                     "patient_id": str(mine.id)}, allow_redirects=False)
    token = _exchange(env, reg.client_id, chosen.headers["Location"], verifier)
    assert token["patient"] == str(mine.id)

    # The token is for the FHIR server: the JSON API refuses it, and on FHIR it stays within the patient.
    api = _bearer(env, token["access_token"], f"/api/v1/patients/{mine.id}")
    assert api.status_code == 401 and "another resource server" in api.headers["WWW-Authenticate"]
    other = _bearer(env, token["access_token"], f"/fhir/Patient/{stranger.id}")
    assert other.status_code == 403 and 'error="insufficient_scope"' in other.headers["WWW-Authenticate"]
    assert _bearer(env, token["access_token"], f"/fhir/Observation?patient={stranger.id}").status_code == 403
    assert _bearer(env, token["access_token"], f"/fhir/Patient/{mine.id}").status_code not in (401, 403)
    assert _bearer(env, token["access_token"], f"/fhir/Observation?patient={mine.id}").status_code not in (401, 403)

    # prompt=none cannot pick a patient.
    url, _ = _authorize_url(env, reg.client_id, scope=SMART_SCOPE, aud=fhir, prompt="none")
    assert _query(browser.get(url, allow_redirects=False))["error"] == "interaction_required"


def test_patient_scopes_for_staff_need_launch_patient(oauth_env):
    env = oauth_env
    doctor = env.factories.doctor()
    reg = env.register(public=True, scope=SMART_SCOPE)
    url, _ = _authorize_url(env, reg.client_id, scope="openid patient/*.rs")
    answer = _query(browser_session(env.base, doctor).get(url, allow_redirects=False))
    assert answer["error"] == "invalid_scope" and "launch/patient" in answer["error_description"]


def test_audience_is_checked_at_authorize_and_on_every_request(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True, scope=f"{SMART_SCOPE} offline_access")
    browser = browser_session(env.base, me.user)

    url, _ = _authorize_url(env, reg.client_id, scope=SMART_SCOPE, aud="https://evil.example/fhir", state="x")
    answer = _query(browser.get(url, allow_redirects=False))
    assert answer["error"] == "invalid_target" and answer["state"] == "x" and answer["iss"] == env.base

    url, verifier = _authorize_url(env, reg.client_id, scope=f"{SMART_SCOPE} offline_access", aud=f"{env.base}/fhir")
    fhir_token = _exchange(env, reg.client_id, consent(browser, url).headers["Location"], verifier)
    assert fhir_token["patient"] == str(me.id)  # a patient's own record, no picker
    assert _bearer(env, fhir_token["access_token"], "/api/v1/me/record").status_code == 401
    assert _bearer(env, fhir_token["access_token"], f"/fhir/Patient/{me.id}").status_code not in (401, 403)
    introspected = requests.post(f"{env.base}/oauth/introspect", data={"token": fhir_token["access_token"]},
                                 timeout=10)
    assert introspected.status_code == 401  # public clients cannot introspect; the audience shows below
    refreshed = requests.post(f"{env.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": fhir_token["refresh_token"], "client_id": reg.client_id},
        timeout=10).json()
    assert _bearer(env, refreshed["access_token"], "/api/v1/me/record").status_code == 401  # audience kept

    # RFC 8707 ``resource`` naming the JSON API gives a token for the API and not for FHIR.
    url, verifier = _authorize_url(env, reg.client_id, scope="openid patient/*.rs", resource=env.base)
    api_token = _exchange(env, reg.client_id, browser.get(url, allow_redirects=False).headers["Location"], verifier)
    assert _bearer(env, api_token["access_token"], "/api/v1/me/record").status_code == 200
    assert _bearer(env, api_token["access_token"], f"/fhir/Patient/{me.id}").status_code == 401


# ---------------------------------------------------------------- introspection and refresh scope


def test_introspection_reports_a_refresh_tokens_own_state(oauth_env):
    env = oauth_env
    doctor = env.factories.doctor()
    reg = env.register(public=False)
    url, verifier = _authorize_url(env, reg.client_id, scope="openid offline_access user/Patient.rs")
    code = parse_qs(urlsplit(consent(browser_session(env.base, doctor), url).headers["Location"]).query)["code"][0]
    auth = (reg.client_id, reg.client_secret)
    token = requests.post(f"{env.base}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": verifier},
        auth=auth, timeout=10).json()

    def introspect(value, hint=None):
        data = {"token": value, **({"token_type_hint": hint} if hint else {})}
        return requests.post(f"{env.base}/oauth/introspect", data=data, auth=auth, timeout=10).json()

    # A refresh token is never a bearer credential.
    assert _bearer(env, token["refresh_token"], "/api/v1/patients").status_code == 401
    access, refresh = introspect(token["access_token"]), introspect(token["refresh_token"], "refresh_token")
    assert access["active"] and refresh["active"]
    assert refresh["token_type"] == "refresh_token" and access["token_type"] == "Bearer"
    assert refresh["exp"] - access["exp"] > 24 * 3600  # the refresh token's own (days-long) lifetime
    assert introspect(token["refresh_token"], "access_token")["exp"] == refresh["exp"]  # a wrong hint is fine

    # Revoking the access token leaves the refresh token active; rotating the refresh token ends it.
    requests.post(f"{env.base}/oauth/revoke", data={"token": token["access_token"],
                                                    "token_type_hint": "access_token"}, auth=auth, timeout=10)
    assert introspect(token["access_token"]) == {"active": False}
    assert introspect(token["refresh_token"])["active"] is True
    new = requests.post(f"{env.base}/oauth/token", data={"grant_type": "refresh_token",
                                                         "refresh_token": token["refresh_token"]},
                        auth=auth, timeout=10).json()
    assert introspect(token["refresh_token"]) == {"active": False}
    assert introspect(new["refresh_token"])["active"] is True


def test_refresh_narrows_scope_by_meaning(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    token = _offline_patient_token(env, reg, me.user)

    def refresh(rt, scope):
        return requests.post(f"{env.base}/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": rt, "client_id": reg.client_id, "scope": scope},
            timeout=10)

    wider = refresh(token["refresh_token"], "patient/Patient.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    narrow = refresh(token["refresh_token"], "offline_access patient/Patient.rs patient/MedicationRequest.read")
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["scope"] == "offline_access patient/Patient.rs patient/MedicationRequest.read"
    assert _bearer(env, narrow.json()["access_token"], "/api/v1/me/record").status_code == 200
    assert _bearer(env, narrow.json()["access_token"], "/api/v1/me/access-log").status_code == 403


# ---------------------------------------------------------------- metadata and authorization requests


def test_metadata_tells_the_truth(oauth_env, app):
    env = oauth_env
    oidc = requests.get(f"{env.base}/.well-known/openid-configuration", timeout=10).json()
    assert requests.get(f"{env.base}/.well-known/oauth-authorization-server", timeout=10).json() == oidc
    keys = requests.get(oidc["jwks_uri"], timeout=10).json()["keys"]
    assert set(oidc["id_token_signing_alg_values_supported"]) == {k["alg"] for k in keys} == {"RS256"}
    assert oidc["authorization_response_iss_parameter_supported"] is True
    assert oidc["request_parameter_supported"] is False and oidc["request_uri_parameter_supported"] is False
    assert "private_key_jwt" in oidc["token_endpoint_auth_methods_supported"]
    assert "registration_endpoint" not in oidc  # off by default
    assert requests.get(oidc["end_session_endpoint"], timeout=10, allow_redirects=False).status_code == 302
    for url in (f"{env.base}/.well-known/smart-configuration", f"{env.base}/fhir/.well-known/smart-configuration"):
        smart = requests.get(url, timeout=10).json()
        assert smart["issuer"] == env.base and "launch-standalone" in smart["capabilities"]
        assert "client-confidential-asymmetric" in smart["capabilities"]
        assert not {"launch-ehr", "authorize-post"} & set(smart["capabilities"])  # not offered, so not claimed
        assert "context-standalone-patient" in smart["capabilities"]


def test_authorization_request_rules(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    browser = browser_session(env.base, me.user)
    url, _ = _authorize_url(env, reg.client_id, request="eyJhbGciOiJub25lIn0.e30.", state="r")
    answer = _query(browser.get(url, allow_redirects=False))
    assert answer["error"] == "request_not_supported" and answer["state"] == "r" and answer["iss"] == env.base
    url, _ = _authorize_url(env, reg.client_id, request_uri="https://app.example/req.jwt")
    assert _query(browser.get(url, allow_redirects=False))["error"] == "request_uri_not_supported"
    # redirect_uri is required even when only one is registered: an error page, never a redirect.
    bare = f"{env.base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": reg.client_id, "scope": "openid", "code_challenge": "x" * 43,
        "code_challenge_method": "S256"})
    resp = browser.get(bare, allow_redirects=False)
    assert resp.status_code == 400 and "redirect_uri" in resp.text and "Location" not in resp.headers


def test_end_session_signs_out_and_returns_to_the_app(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    browser = browser_session(env.base, me.user)
    url, verifier = _authorize_url(env, reg.client_id)
    token = _exchange(env, reg.client_id, consent(browser, url).headers["Location"], verifier)
    logout = f"{env.base}/oauth/logout?" + urlencode({"id_token_hint": token["id_token"], "state": "bye",
                                                        "post_logout_redirect_uri": CALLBACK})
    page = browser.get(logout)
    assert page.status_code == 200 and 'id="confirm-sign-out"' in page.text
    done = browser.post(logout, data={"csrf_token": csrf_from(page.text)}, allow_redirects=False)
    assert done.headers["Location"] == f"{CALLBACK}?state=bye"
    assert browser.get(f"{env.base}/account/apps", allow_redirects=False).status_code == 302  # signed out
    # The app may POST its logout request too; the person still confirms.
    browser = browser_session(env.base, me.user)
    params = {"client_id": reg.client_id, "post_logout_redirect_uri": CALLBACK}
    page = browser.post(f"{env.base}/oauth/logout", data=params)
    assert page.status_code == 200 and 'id="confirm-sign-out"' in page.text
    done = browser.post(f"{env.base}/oauth/logout", data={**params, "csrf_token": csrf_from(page.text)},
                        allow_redirects=False)
    assert done.headers["Location"] == CALLBACK
    # An address the app never registered is not a destination.
    browser = browser_session(env.base, me.user)
    logout = f"{env.base}/oauth/logout?" + urlencode({"client_id": reg.client_id,
                                                        "post_logout_redirect_uri": "https://evil.example/"})
    page = browser.get(logout)
    done = browser.post(logout, data={"csrf_token": csrf_from(page.text)}, allow_redirects=False)
    assert "evil.example" not in done.headers["Location"]


# ---------------------------------------------------------------- private_key_jwt and SMART Backend Services


@pytest.mark.smoke
def test_backend_services_with_private_key_jwt(oauth_env):
    env = oauth_env
    key = RSAKey.generate_key(2048, parameters={"kid": "backend-1"}, private=True)
    public = KeySet([key]).as_dict(private=False)
    account = env.factories.doctor(name="Lab integration")
    reg = env.register(scope="system/Patient.rs", grants=["client_credentials"], redirect_uris=[],
                       service_user=account, jwks=public)
    assert reg.client_secret is None  # it proves itself with its key, not with a shared secret
    smart = requests.get(f"{env.base}/fhir/.well-known/smart-configuration", timeout=10).json()
    token_url = smart["token_endpoint"]
    assertion = client_assertion(key, reg.client_id, token_url)
    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    resp = requests.post(token_url, data=form, timeout=10)
    assert resp.status_code == 200, resp.text
    token = resp.json()
    assert "refresh_token" not in token and token["scope"] == "system/Patient.rs"
    assert _bearer(env, token["access_token"], "/api/v1/patients").status_code == 200
    assert _bearer(env, token["access_token"], "/fhir/Patient").status_code not in (401, 403)
    assert _bearer(env, token["access_token"], "/api/v1/audit/events").status_code == 403

    foreign = requests.post(token_url, data={**form, "resource": "https://other.example/fhir",
                                             "client_assertion": client_assertion(key, reg.client_id, token_url)},
                            timeout=10)
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_target"
    fhir_only = requests.post(token_url, data={**form, "resource": f"{env.base}/fhir",
                                               "client_assertion": client_assertion(key, reg.client_id, token_url)},
                              timeout=10).json()
    assert _bearer(env, fhir_only["access_token"], "/api/v1/patients").status_code == 401
    replay = requests.post(token_url, data=form, timeout=10)
    assert replay.json()["error"] == "invalid_client" and "used" in replay.json()["error_description"]
    stranger = RSAKey.generate_key(2048, parameters={"kid": "backend-1"}, private=True)
    forged = requests.post(token_url, data={**form, "client_assertion": client_assertion(stranger, reg.client_id,
                                                                                   token_url)}, timeout=10)
    assert forged.json()["error"] == "invalid_client"
    wrong_aud = requests.post(token_url, data={**form, "client_assertion": client_assertion(
        key, reg.client_id, "https://other.example/token")}, timeout=10)
    assert wrong_aud.json()["error"] == "invalid_client"
    secret_style = requests.post(token_url, data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
                                 auth=(reg.client_id, "guess"), timeout=10)
    assert secret_style.status_code == 401
    not_system = requests.post(token_url, timeout=10, data={
        **form, "client_assertion": client_assertion(key, reg.client_id, token_url), "scope": "user/Patient.rs"})
    assert not_system.status_code == 400 and not_system.json()["error"] == "invalid_scope"


# ---------------------------------------------------------------- dynamic registration


def test_dynamic_registration_is_off_by_default_and_limited_when_on(oauth_env, app):
    env = oauth_env
    metadata = {"client_name": "Pocket Health", "redirect_uris": ["https://pocket.example/cb"],
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
                "scope": "openid fhirUser launch/patient offline_access patient/*.rs"}
    off = requests.post(f"{env.base}/oauth/register", json=metadata, timeout=10)
    assert off.status_code == 404 and off.json()["error"] == "registration_not_supported"
    app.config["OAUTH_DYNAMIC_REGISTRATION"] = True
    try:
        meta = requests.get(f"{env.base}/.well-known/openid-configuration", timeout=10).json()
        created = requests.post(meta["registration_endpoint"], json=metadata, timeout=10)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["token_endpoint_auth_method"] == "none" and "client_secret" not in body
        for bad in ({"scope": "user/*.cruds"}, {"token_endpoint_auth_method": "client_secret_basic"},
                    {"grant_types": ["client_credentials"]}, {"redirect_uris": ["http://pocket.example/cb"]}):
            refused = requests.post(meta["registration_endpoint"], json={**metadata, **bad}, timeout=10)
            assert refused.status_code == 400, bad
            assert refused.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
        # The new app signs a patient in like any other.
        me = env.factories.patient(with_account=True)
        client = OAuth2Session(body["client_id"], scope="openid launch/patient patient/*.rs",
                               redirect_uri="https://pocket.example/cb", code_challenge_method="S256")
        verifier = generate_token(48)
        url, _ = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier)
        location = consent(browser_session(env.base, me.user), url).headers["Location"]
        token = _exchange(env, body["client_id"], location, verifier, redirect_uri="https://pocket.example/cb")
        assert token["patient"] == str(me.id)
    finally:
        app.config["OAUTH_DYNAMIC_REGISTRATION"] = False
