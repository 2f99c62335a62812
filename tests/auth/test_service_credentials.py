"""Machine peers (a clinic's PACS) syncing over DICOMweb: admin-issued HTTP Basic credentials that do not expire,
can be revoked, carry only the rights given, and leave every use in the audit trail; and bearer tokens whose
scope allows search (``.s``) can search."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.audit.models import AuditEvent, Outcome
from app.auth.service_credentials import ServiceCredential
from tests.imaging.dicomgen import ct_slice, stow_body


def _basic(key_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()}


def _issue(client: Any, facility_id: int, **access: str) -> tuple[str, str]:
    page = client.post("/admin/dicomweb-peers", data={"name": "Riverside PACS", "facility_id": facility_id,
                                                      **access})
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    html = page.get_data(as_text=True)
    key_id = re.search(r'id="new-key-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="new-secret">([^<]+)<', html).group(1)
    return key_id, secret


@pytest.fixture
def clinic_study(client: Any, factories: Any, login: Any) -> dict[str, Any]:
    """One study sent by a nurse of a clinic, and one of another clinic; nobody stays signed in."""
    nurse = factories.nurse()
    stranger = factories.nurse(facility=factories.facility())
    facility_id = nurse.facility_id
    studies = {}
    for who in (nurse, stranger):
        login(client, who)
        studies[who.id] = generate_uid()
        body, ctype = stow_body([ct_slice(patient_id=f"PEER-{who.id}", study_uid=studies[who.id])])
        assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
        client.post("/sign-out")
    return {"facility_id": facility_id, "study": studies[nurse.id], "other": studies[stranger.id]}


def test_read_only_peer_searches_and_retrieves_its_clinic_until_revoked(
        client: Any, make_client: Any, factories: Any, login: Any, clinic_study: dict[str, Any]) -> None:
    admin = factories.admin()
    login(client, admin)
    key_id, secret = _issue(client, clinic_study["facility_id"], may_read="y")
    pacs = make_client()
    pacs.send_csrf = False  # a machine peer has no browser session and sends no CSRF token
    found = pacs.get("/dicomweb/studies", headers=_basic(key_id, secret))
    assert found.status_code == 200
    uids = {s["0020000D"]["Value"][0] for s in found.get_json()}
    assert clinic_study["study"] in uids and clinic_study["other"] not in uids  # its clinic's studies only
    retrieved = pacs.get(f"/dicomweb/studies/{clinic_study['study']}", headers=_basic(key_id, secret))
    assert retrieved.status_code == 200 and b"DICM" in retrieved.data
    body, ctype = stow_body([ct_slice(patient_id="PEER-X")])
    refused = pacs.post("/dicomweb/studies", data=body, content_type=ctype, headers=_basic(key_id, secret))
    assert refused.status_code == 403 and "system/ImagingStudy.c" in refused.get_json()["detail"]
    searched = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "imaging.study.search",
                                                              AuditEvent.actor_name == "DICOMweb peer: Riverside PACS"))
    assert searched.first() is not None  # the audit trail names the peer
    credential = db.session.scalar(sa.select(ServiceCredential).where(ServiceCredential.key_id == key_id))
    assert credential.last_used_at is not None and credential.secret_hash != secret

    wrong = pacs.get("/dicomweb/studies", headers=_basic(key_id, secret + "x"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic ")
    page = client.get("/admin/dicomweb-peers").get_data(as_text=True)
    assert f'data-key="{key_id}"' in page and "Riverside PACS" in page
    assert client.post(f"/admin/dicomweb-peers/{credential.id}/revoke").status_code == 302
    revoked = pacs.get("/dicomweb/studies", headers=_basic(key_id, secret))
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["detail"]
    denials = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "auth.service_credential.use",
                                                             AuditEvent.outcome == Outcome.DENIED)).all()
    assert {d.detail["reason"] for d in denials} >= {"Unknown key id or wrong secret.",
                                                     "This peer credential was revoked."}
    assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "auth.service_credential.revoke",
                                                         AuditEvent.actor_id == admin.id))


def test_store_only_peer_stores_but_cannot_search(client: Any, make_client: Any, factories: Any,
                                                  login: Any) -> None:
    login(client, factories.admin())
    clinic_id = factories.clinic.id
    key_id, secret = _issue(client, clinic_id, may_store="y")
    pacs = make_client()
    pacs.send_csrf = False
    study = generate_uid()
    body, ctype = stow_body([ct_slice(patient_id="PEER-S", study_uid=study)])
    stored = pacs.post("/dicomweb/studies", data=body, content_type=ctype, headers=_basic(key_id, secret))
    assert stored.status_code == 200
    assert pacs.get("/dicomweb/studies", headers=_basic(key_id, secret)).status_code == 403
    assert pacs.get(f"/dicomweb/studies/{study}/metadata", headers=_basic(key_id, secret)).status_code == 403


def test_only_admins_issue_and_the_form_explains_what_is_missing(client: Any, factories: Any,
                                                                  login: Any) -> None:
    login(client, factories.nurse())
    assert client.get("/admin/dicomweb-peers").status_code == 403
    client.post("/sign-out")
    login(client, factories.admin())
    empty = client.post("/admin/dicomweb-peers", data={"name": "Lab PACS", "facility_id": ""})
    assert empty.status_code == 422
    assert "Choose what the peer may do." in empty.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ServiceCredential)) == 0


def test_a_token_with_search_scope_can_search(oauth_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from oauthlib.oauth2 import BackendApplicationClient
    from requests_oauthlib import OAuth2Session

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the live test server speaks plain HTTP
    account = oauth_env.factories.nurse(name="Archive sync")
    reg = oauth_env.register(scope="system/ImagingStudy.s", grants=["client_credentials"], redirect_uris=[],
                             service_user=account)
    session = OAuth2Session(client=BackendApplicationClient(client_id=reg.client_id))
    session.fetch_token(f"{oauth_env.base}/oauth/token", client_id=reg.client_id, client_secret=reg.client_secret,
                        scope=["system/ImagingStudy.s"])
    assert session.get(f"{oauth_env.base}/dicomweb/studies", timeout=10).status_code == 200
    assert session.get(f"{oauth_env.base}/dicomweb/studies/1.2.3/series", timeout=10).status_code == 200
    retrieve = session.get(f"{oauth_env.base}/dicomweb/studies/1.2.3", timeout=10)
    assert retrieve.status_code == 403 and "ImagingStudy.r" in retrieve.json()["detail"]
    assert isinstance(retrieve, requests.Response)
