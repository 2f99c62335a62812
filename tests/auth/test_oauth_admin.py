"""Client registration by administrators, and "Connected apps" for the people who authorised them."""

from __future__ import annotations

import json
import re

import pytest
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


def test_admin_edits_redirect_uris_origins_and_scopes(client, factories, login):
    login(client, factories.admin())
    page = client.post("/admin/oauth-clients", data=_form(client_type="public", grants=["authorization_code"]))
    client_id = ID_RE.search(page.get_data(as_text=True)).group(1)
    row = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == client_id))
    form = client.get(f"/admin/oauth-clients/{row.id}/edit").get_data(as_text=True)
    assert "https://pharmacy.example/cb" in form and 'id="edit-client"' in form

    edited = _form(client_type="public", grants=["authorization_code", "refresh_token"],
                   redirect_uris="https://pharmacy.example/cb\nhttp://127.0.0.1/native",
                   web_origins="https://pharmacy.example", scope="openid launch/patient patient/*.rs")
    resp = client.post(f"/admin/oauth-clients/{row.id}/edit", data=edited)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:800]
    db.session.expire_all()
    row = db.session.get(OAuthClient, row.id)
    assert row.redirect_uris == ["https://pharmacy.example/cb", "http://127.0.0.1/native"]
    assert row.web_origins == ["https://pharmacy.example"] and row.allowed_scope == "openid launch/patient patient/*.rs"
    assert row.is_public and row.client_secret_hash is None  # the type did not change

    bad = client.post(f"/admin/oauth-clients/{row.id}/edit", data={**edited, "web_origins": "https://x.example/app"})
    assert bad.status_code == 422 and 'data-field="web_origins"' in bad.get_data(as_text=True)


def test_admin_registers_a_client_that_signs_with_its_own_key(client, factories, login):
    from joserfc.jwk import KeySet, RSAKey

    login(client, factories.admin())
    key = RSAKey.generate_key(2048, private=True)
    public = json.dumps(KeySet([key]).as_dict(private=False))
    private = json.dumps(KeySet([key]).as_dict(private=True))
    data = _form(auth_method="private_key_jwt", grants=["client_credentials"], scope="system/Patient.rs",
                 redirect_uris="", service_user_id=str(factories.doctor().id))
    leaked = client.post("/admin/oauth-clients", data={**data, "jwks": private})
    assert leaked.status_code == 422 and "private key" in leaked.get_data(as_text=True)
    assert client.post("/admin/oauth-clients", data={**data, "jwks": "not json"}).status_code == 422
    resp = client.post("/admin/oauth-clients", data={**data, "jwks": public})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:800]
    page = resp.get_data(as_text=True)
    assert not SECRET_RE.search(page)  # no shared secret for a client that signs its requests
    row = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == ID_RE.search(page).group(1)))
    assert row.auth_method == "private_key_jwt" and row.client_secret_hash is None and row.jwks["keys"][0]["n"]


@pytest.fixture
def hospital_cli(app, database_url, monkeypatch):
    """Run the ``hospital`` command against this run's database, as an operator would."""
    from app.cli import main

    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*argv: str) -> int:
        db.session.remove()  # the command builds its own app and binds the session to it
        try:
            return main(list(argv))
        finally:
            db.session.remove()
            db.session.configure(bind=app.extensions["db_engine"])

    return run


def test_cli_registers_and_edits_clients(hospital_cli, live_factories, capsys):
    main = hospital_cli
    admin = live_factories.admin()
    doctor = live_factories.doctor()
    code = main("oauth-client", "add", "--as", admin.email, "--name", "Pocket app", "--public",
                "--redirect-uri", "https://pocket.example/cb", "--origin", "https://pocket.example",
                "--scope", "openid launch/patient patient/*.rs")
    out = capsys.readouterr().out
    assert code == 0 and "client_secret" not in out
    client_id = out.split("client_id: ")[1].split()[0]
    assert main("oauth-client", "edit", client_id, "--as", admin.email, "--origin", "https://pocket.example",
                "--origin", "http://127.0.0.1:8765", "--redirect-uri", "https://pocket.example/cb2") == 0
    row = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == client_id))
    assert row.web_origins == ["https://pocket.example", "http://127.0.0.1:8765"]
    assert row.redirect_uris == ["https://pocket.example/cb2"] and row.allowed_scope.startswith("openid launch")
    capsys.readouterr()
    assert main("oauth-client", "edit", client_id, "--as", admin.email, "--origin", "https://x.example/path") == 1
    assert "web_origins" in capsys.readouterr().err
    assert main("oauth-client", "list", "--as", admin.email) == 0
    assert client_id in capsys.readouterr().out
    assert main("oauth-client", "list", "--as", doctor.email) == 1  # administrators only


def test_rotate_key_command_refuses_an_instance_path_that_is_not_the_servers(hospital_cli, tmp_path, monkeypatch,
                                                                           capsys):
    main = hospital_cli
    monkeypatch.setenv("HOSPITAL_INSTANCE_PATH", str(tmp_path / "elsewhere"))
    assert main("oauth-rotate-key") == 2
    assert "not the server's instance path" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere" / "oauth-jwks.json").exists()
    assert main("oauth-rotate-key", "--create") == 0
    keys = json.loads((tmp_path / "elsewhere" / "oauth-jwks.json").read_text())["keys"]
    assert [k["status"] for k in keys] == ["current", "next"]
    # The next key was only just published: clients may not have it yet, so it does not sign yet.
    assert main("oauth-rotate-key") == 3
    assert "try again in" in capsys.readouterr().err
