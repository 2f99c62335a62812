"""OAuth2 / OpenID Connect end to end over real HTTP, driven by independent client libraries:
Authlib's requests client for code + PKCE and refresh, requests-oauthlib for client credentials, and
joserfc to check ID tokens against the published JWKS."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session as OAuthlibSession

from app import db
from app.auth.oauth_models import OAuthToken
from tests.auth.conftest import CALLBACK, browser_session, consent

PATIENT_SCOPE = "openid profile fhirUser offline_access patient/*.rs"


def _code_flow(env, reg, user, *, scope=PATIENT_SCOPE, public=True):
    """Run the authorization code + PKCE flow with Authlib's client; returns (session, token, nonce)."""
    client = OAuth2Session(reg.client_id, reg.client_secret, scope=scope, redirect_uri=CALLBACK,
                           code_challenge_method="S256",
                           token_endpoint_auth_method="none" if public else "client_secret_basic")
    verifier = generate_token(48)
    nonce = generate_token(16)
    url, _state = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, nonce=nonce)
    resp = consent(browser_session(env.base, user), url)
    assert resp.status_code == 302 and "code=" in resp.headers["Location"], resp.headers.get("Location")
    token = client.fetch_token(f"{env.base}/oauth/token", authorization_response=resp.headers["Location"],
                               code_verifier=verifier)
    return client, token, nonce


def _api(env, token, path, method="GET", **kw):
    return requests.request(method, f"{env.base}{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=10, **kw)


def _jwks(env):
    return KeySet.import_key_set(requests.get(f"{env.base}/oauth/jwks", timeout=10).json())


@pytest.mark.smoke
def test_patient_app_code_pkce_id_token_and_own_record_only(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True, given_name="Owna")
    other = env.factories.patient(given_name="Othera")
    reg = env.register(public=True)
    _client, token, nonce = _code_flow(env, reg, me.user)

    assert token["token_type"].lower() == "bearer" and token["refresh_token"] and token["id_token"]
    assert token["patient"] == str(me.id)
    # The ID token verifies against the published JWKS with a separate JOSE library.
    decoded = jwt.decode(token["id_token"], _jwks(env))
    assert decoded.header["alg"] == "RS256"
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": env.base}, aud={"essential": True, "value": reg.client_id},
                          nonce={"essential": True, "value": nonce}).validate(decoded.claims)
    assert decoded.claims["sub"] == str(me.user.id)
    assert decoded.claims["fhirUser"].endswith(f"Patient/{me.id}")

    info = _api(env, token["access_token"], "/oauth/userinfo").json()
    assert info["sub"] == str(me.user.id) and info["name"] == me.user.full_name

    own = _api(env, token["access_token"], "/api/v1/me/record")
    assert own.status_code == 200 and own.json()["given_name"] == "Owna"
    assert _api(env, token["access_token"], f"/api/v1/patients/{me.id}").status_code == 200
    # Another patient's record is out of reach of a patient token.
    assert _api(env, token["access_token"], f"/api/v1/patients/{other.id}").status_code == 404
    # patient/*.rs does not allow creating anything.
    denied = _api(env, token["access_token"], "/api/v1/patients", "POST", json={})
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
    assert denied.headers["Content-Type"].startswith("application/problem+json")


def test_tampered_id_token_is_rejected(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    _client, token, _nonce = _code_flow(env, env.register(public=True), me.user)
    header, payload, signature = token["id_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "1"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignatureError):
        jwt.decode(f"{header}.{forged}.{signature}", _jwks(env))


def test_refresh_rotates_and_reuse_revokes_the_family(oauth_env):
    env = oauth_env
    doctor = env.factories.doctor()
    reg = env.register(public=False)
    client, token, _ = _code_flow(env, reg, doctor, scope="openid offline_access user/Patient.rs", public=False)
    first_refresh = token["refresh_token"]
    assert _api(env, token["access_token"], "/api/v1/patients").status_code == 200

    new = client.refresh_token(f"{env.base}/oauth/token", refresh_token=first_refresh)
    assert new["refresh_token"] != first_refresh and new["access_token"] != token["access_token"]
    assert _api(env, new["access_token"], "/api/v1/patients").status_code == 200
    assert _api(env, token["access_token"], "/api/v1/patients").status_code == 401  # rotated away

    # Someone replays the old refresh token: refused, and the whole family dies.
    with pytest.raises(OAuthError) as exc:
        client.refresh_token(f"{env.base}/oauth/token", refresh_token=first_refresh)
    assert exc.value.error == "invalid_grant"
    revoked = _api(env, new["access_token"], "/api/v1/patients")
    assert revoked.status_code == 401 and 'error="invalid_token"' in revoked.headers["WWW-Authenticate"]
    with pytest.raises(OAuthError):
        client.refresh_token(f"{env.base}/oauth/token", refresh_token=new["refresh_token"])

    # Asking for more scope on refresh is refused (escalation).
    _c2, t2, _ = _code_flow(env, reg, doctor, scope="openid offline_access user/Patient.rs", public=False)
    with pytest.raises(OAuthError) as exc:
        client.refresh_token(f"{env.base}/oauth/token", refresh_token=t2["refresh_token"], scope="user/*.cruds")
    assert exc.value.error == "invalid_scope"


def test_introspection_and_revocation(oauth_env):
    env = oauth_env
    doctor = env.factories.doctor()
    reg = env.register(public=False)
    client, token, _ = _code_flow(env, reg, doctor, scope="openid offline_access user/Patient.rs", public=False)
    auth = (reg.client_id, reg.client_secret)
    info = requests.post(f"{env.base}/oauth/introspect", data={"token": token["access_token"]}, auth=auth,
                         timeout=10).json()
    assert info["active"] is True and info["sub"] == str(doctor.id) and info["scope"] == token["scope"]
    assert info["client_id"] == reg.client_id and info["exp"] > info["iat"]
    # Another client may not introspect it, and a wrong secret is refused.
    other = env.register(public=False)
    assert requests.post(f"{env.base}/oauth/introspect", data={"token": token["access_token"]},
                         auth=(other.client_id, other.client_secret), timeout=10).json() == {"active": False}
    assert requests.post(f"{env.base}/oauth/introspect", data={"token": token["access_token"]},
                         auth=(reg.client_id, "wrong"), timeout=10).status_code == 401

    client.revoke_token(f"{env.base}/oauth/revoke", token=token["access_token"], token_type_hint="access_token")
    assert requests.post(f"{env.base}/oauth/introspect", data={"token": token["access_token"]}, auth=auth,
                         timeout=10).json() == {"active": False}
    assert _api(env, token["access_token"], "/api/v1/patients").status_code == 401
    # Revoking the refresh token ends the grant.
    client.revoke_token(f"{env.base}/oauth/revoke", token=token["refresh_token"], token_type_hint="refresh_token")
    with pytest.raises(OAuthError):
        client.refresh_token(f"{env.base}/oauth/token", refresh_token=token["refresh_token"])


def test_client_credentials_for_a_machine_client(oauth_env, monkeypatch):
    env = oauth_env
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the live test server speaks plain HTTP
    account = env.factories.doctor(name="Lab integration")
    reg = env.register(scope="system/Patient.rs", grants=["client_credentials"], redirect_uris=[],
                       service_user=account)
    session = OAuthlibSession(client=BackendApplicationClient(client_id=reg.client_id))
    token = session.fetch_token(f"{env.base}/oauth/token", client_id=reg.client_id,
                                client_secret=reg.client_secret, scope=["system/Patient.rs"])
    assert "refresh_token" not in token
    assert session.get(f"{env.base}/api/v1/patients", timeout=10).status_code == 200
    assert session.get(f"{env.base}/api/v1/audit/events", timeout=10).status_code == 403
    with pytest.raises(Exception, match="invalid_scope"):
        OAuthlibSession(client=BackendApplicationClient(client_id=reg.client_id)).fetch_token(
            f"{env.base}/oauth/token", client_id=reg.client_id, client_secret=reg.client_secret,
            scope=["user/*.cruds"])


def test_authorization_request_negatives(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    browser = browser_session(env.base, me.user)
    client = OAuth2Session(reg.client_id, scope=PATIENT_SCOPE, redirect_uri=CALLBACK, code_challenge_method="S256",
                           token_endpoint_auth_method="none")
    verifier = generate_token(48)

    # Wrong redirect URI: an error page here, never a redirect to the unregistered address.
    bad = OAuth2Session(reg.client_id, scope=PATIENT_SCOPE, redirect_uri="https://evil.example/cb",
                        code_challenge_method="S256")
    url, _ = bad.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, nonce="n")
    resp = browser.get(url, allow_redirects=False)
    assert resp.status_code == 400 and "evil.example" not in resp.headers.get("Location", "")

    # A public client without PKCE is sent back with an error.
    plain = OAuth2Session(reg.client_id, scope=PATIENT_SCOPE, redirect_uri=CALLBACK)
    url, _ = plain.create_authorization_url(f"{env.base}/oauth/authorize", nonce="n")
    resp = browser.get(url, allow_redirects=False)
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["invalid_request"]

    # The code flow needs no nonce (OpenID Connect requires it only for implicit and hybrid flows).
    url, _ = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier)
    resp = browser.get(url, allow_redirects=False)
    assert resp.status_code == 200 and "consent-scopes" in resp.text

    # A patient cannot take clinician-wide scopes (escalation).
    greedy = OAuth2Session(reg.client_id, scope="openid user/*.cruds", redirect_uri=CALLBACK,
                           code_challenge_method="S256")
    url, _ = greedy.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, nonce="n")
    resp = browser.get(url, allow_redirects=False)
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["invalid_scope"]

    # Denying consent tells the app so.
    url, _ = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, nonce="n1")
    resp = consent(browser, url, decision="deny")
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["access_denied"]

    # Missing and wrong PKCE verifiers, then code reuse.
    url, _ = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, nonce="n2")
    location = consent(browser, url).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    token_url = f"{env.base}/oauth/token"
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "client_id": reg.client_id}
    assert requests.post(token_url, data=base, timeout=10).json()["error"] == "invalid_request"
    wrong = requests.post(token_url, data={**base, "code_verifier": generate_token(48)}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    good = requests.post(token_url, data={**base, "code_verifier": verifier}, timeout=10)
    assert good.status_code == 200, good.text
    access = good.json()["access_token"]
    assert _api(env, access, "/api/v1/me/record").status_code == 200
    again = requests.post(token_url, data={**base, "code_verifier": verifier}, timeout=10)
    assert again.json()["error"] == "invalid_grant"
    assert _api(env, access, "/api/v1/me/record").status_code == 401  # the replay revoked what the code gave


def test_expired_token_and_deactivated_user(oauth_env, app):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    _c, token, _ = _code_flow(env, reg, me.user)
    _c, token2, _ = _code_flow(env, reg, me.user)
    row = db.session.scalar(sa.select(OAuthToken).order_by(OAuthToken.id.desc()).limit(2).offset(1))
    row.issued_at = row.issued_at - timedelta(hours=2)
    db.session.commit()
    expired = _api(env, token["access_token"], "/api/v1/me/record")
    assert expired.status_code == 401 and "expired" in expired.headers["WWW-Authenticate"]

    assert _api(env, token2["access_token"], "/api/v1/me/record").status_code == 200
    me.user.active = False
    db.session.commit()
    gone = _api(env, token2["access_token"], "/api/v1/me/record")
    assert gone.status_code == 401 and 'error="invalid_token"' in gone.headers["WWW-Authenticate"]
    with pytest.raises(OAuthError):
        OAuth2Session(reg.client_id, token_endpoint_auth_method="none").refresh_token(
            f"{env.base}/oauth/token", refresh_token=token2["refresh_token"])


def test_password_reset_ends_app_access(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    _c, token, _ = _code_flow(env, reg, me.user)
    assert _api(env, token["access_token"], "/api/v1/me/record").status_code == 200
    me.user.session_epoch += 1  # what an admin password reset or the person's own password change does
    db.session.commit()
    assert _api(env, token["access_token"], "/api/v1/me/record").status_code == 401
    with pytest.raises(OAuthError):
        OAuth2Session(reg.client_id, token_endpoint_auth_method="none").refresh_token(
            f"{env.base}/oauth/token", refresh_token=token["refresh_token"])


def test_missing_token_gets_a_bearer_challenge(oauth_env):
    env = oauth_env
    resp = requests.get(f"{env.base}/api/v1/patients", timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    bogus = _api(env, "not-a-token", "/api/v1/patients")
    assert bogus.status_code == 401 and 'error="invalid_token"' in bogus.headers["WWW-Authenticate"]


def test_discovery_and_key_rotation_keep_old_tokens_verifiable(oauth_env, app):
    env = oauth_env
    meta = requests.get(f"{env.base}/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == env.base and meta["code_challenge_methods_supported"] == ["S256"]
    assert requests.get(meta["jwks_uri"], timeout=10).json()["keys"]
    assert "d" not in requests.get(meta["jwks_uri"], timeout=10).json()["keys"][0]  # no private parts

    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    _c, before, _ = _code_flow(env, reg, me.user)
    from app.auth.oauth2 import KeyRotationTooSoon, rotate_signing_key

    published = {k["kid"] for k in requests.get(meta["jwks_uri"], timeout=10).json()["keys"]}
    signer = jwt.decode(before["id_token"], _jwks(env)).header["kid"]
    assert len(published) >= 2  # the next key is published ahead of signing anything
    # Clients may still hold a key set without the next key: rotating now would strand them.
    with pytest.raises(KeyRotationTooSoon):
        rotate_signing_key()
    new_kid = rotate_signing_key(now=int(time.time()) + app.config["OAUTH_JWKS_MAX_AGE"])
    assert new_kid in published and new_kid != signer
    _c, after, _ = _code_flow(env, reg, me.user)
    keys = _jwks(env)
    assert jwt.decode(after["id_token"], keys).header["kid"] == new_kid
    old = jwt.decode(before["id_token"], keys)  # the retired key is still published
    assert old.header["kid"] != new_kid


def test_concurrent_refreshes_with_one_token_cannot_both_win(oauth_env):
    import threading

    env = oauth_env
    doctor = env.factories.doctor()
    reg = env.register(public=False)
    _client, token, _ = _code_flow(env, reg, doctor, scope="openid offline_access user/Patient.rs", public=False)
    barrier = threading.Barrier(2)
    results: list[requests.Response] = []

    def refresh() -> None:
        barrier.wait()
        results.append(requests.post(f"{env.base}/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
            auth=(reg.client_id, reg.client_secret), timeout=20))

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in results]
    # The loser looked like a replay of a rotated token, so the family (the winner's tokens too) is gone.
    assert _api(env, winners[0].json()["access_token"], "/api/v1/patients").status_code == 401


def test_unknown_scopes_are_refused(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    browser = browser_session(env.base, me.user)
    for scope in ("openid patient/Bogus.rs", "openid admin", "openid patient/Patient.xyz"):
        client = OAuth2Session(reg.client_id, scope=scope, redirect_uri=CALLBACK, code_challenge_method="S256")
        url, _ = client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=generate_token(48),
                                                 nonce="n")
        resp = browser.get(url, allow_redirects=False)
        assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["invalid_scope"], scope
