"""Client registration by administrators, and "Connected apps" for the people who authorised them."""

from __future__ import annotations

import re

import requests
import sqlalchemy as sa
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from app import db
from app.auth.oauth_models import OAuthClient, digest
from tests.auth.conftest import CALLBACK, browser_session, consent, csrf_from

SECRET_RE = re.compile(r'id="new-client-secret">([^<]+)<')
ID_RE = re.compile(r'id="new-client-id">([^<]+)<')


def _form(**overrides):
    data = {"name": "Pharmacy system", "client_type": "confidential", "redirect_uris": "https://pharmacy.example/cb",
            "scope": "openid offline_access user/MedicationRequest.rs", "grants": ["authorization_code",
                                                                                  "refresh_token"]}
    data.update(overrides)
    return data


def test_admin_registers_a_client_and_rotates_its_secret(client, factories, login):
    login(client, factories.admin())
    resp = client.post("/admin/oauth-clients", data=_form())
    assert resp.status_code == 200, resp.get_data(as_text=True)[:800]
    page = resp.get_data(as_text=True)
    secret, client_id = SECRET_RE.search(page).group(1), ID_RE.search(page).group(1)
    row = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == client_id))
    assert row.client_secret_hash == digest(secret) and secret not in (row.client_secret_hash or "")
    assert row.redirect_uris == ["https://pharmacy.example/cb"]
    assert secret not in client.get("/admin/oauth-clients").get_data(as_text=True)  # shown once

    rotated = client.post(f"/admin/oauth-clients/{row.id}/rotate-secret").get_data(as_text=True)
    new_secret = SECRET_RE.search(rotated).group(1)
    row = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == client_id))
    assert new_secret != secret and row.check_client_secret(new_secret) and not row.check_client_secret(secret)


def test_redirect_uris_and_scopes_are_validated(client, factories, login):
    login(client, factories.admin())
    for uri in ("http://pharmacy.example/cb", "https://pharmacy.example/cb#frag", "https://*.example/cb",
                "relative/path"):
        resp = client.post("/admin/oauth-clients", data=_form(redirect_uris=uri))
        assert resp.status_code == 422, uri
        assert 'data-field="redirect_uris"' in resp.get_data(as_text=True)
    assert client.post("/admin/oauth-clients", data=_form(redirect_uris="http://127.0.0.1:8080/cb")).status_code == 200
    bad_scope = client.post("/admin/oauth-clients", data=_form(scope="openid user/Nonsense.rs"))
    assert bad_scope.status_code == 422
    no_account = client.post("/admin/oauth-clients", data=_form(grants=["client_credentials"], scope="system/*.rs"))
    assert no_account.status_code == 422 and 'data-field="service_user_id"' in no_account.get_data(as_text=True)


def test_only_admins_manage_clients(client, factories, login):
    login(client, factories.doctor())
    assert client.get("/admin/oauth-clients").status_code == 403
    assert client.post("/admin/oauth-clients", data=_form()).status_code == 403


def test_person_sees_and_revokes_an_authorised_app(oauth_env):
    env = oauth_env
    me = env.factories.patient(with_account=True)
    reg = env.register(public=True)
    browser = browser_session(env.base, me.user)
    app_client = OAuth2Session(reg.client_id, scope="openid offline_access patient/Patient.rs",
                               redirect_uri=CALLBACK, code_challenge_method="S256", token_endpoint_auth_method="none")
    verifier = generate_token(48)
    url, _ = app_client.create_authorization_url(f"{env.base}/oauth/authorize", code_verifier=verifier, nonce="x")
    page = browser.get(url).text
    assert "Read, search your patient record" in page and "own record" in page
    location = consent(browser, url).headers["Location"]
    token = app_client.fetch_token(f"{env.base}/oauth/token", authorization_response=location,
                                   code_verifier=verifier)
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(f"{env.base}/api/v1/me/record", headers=headers, timeout=10).status_code == 200

    apps = browser.get(f"{env.base}/account/apps").text
    assert "Test app" in apps and f'data-client="{reg.client_id}"' in apps
    browser.post(f"{env.base}/account/apps/{reg.client_id}/revoke", data={"csrf_token": csrf_from(apps)})
    assert requests.get(f"{env.base}/api/v1/me/record", headers=headers, timeout=10).status_code == 401
    assert 'id="no-apps"' in browser.get(f"{env.base}/account/apps").text
    refreshed = requests.post(f"{env.base}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": reg.client_id},
        timeout=10)
    assert refreshed.json()["error"] == "invalid_grant"
