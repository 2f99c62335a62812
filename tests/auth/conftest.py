"""Helpers for driving the authorization server over real HTTP with independent client libraries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask

from app import db
from app.auth import oauth_service
from app.auth.models import User
from tests.conftest import PASSWORD

CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CALLBACK = "https://app.example/callback"


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, html[:500]
    return match.group(1)


def browser_session(base_url: str, user: User, password: str = PASSWORD) -> requests.Session:
    """A signed-in "browser" (plain requests.Session with cookies) for the consent step."""
    s = requests.Session()
    page = s.get(f"{base_url}/sign-in")
    resp = s.post(f"{base_url}/sign-in", data={"email": user.email, "password": password,
                                                "csrf_token": csrf_from(page.text)}, allow_redirects=False)
    assert resp.status_code == 302, resp.text[:500]
    return s


def consent(browser: requests.Session, url: str, decision: str = "allow") -> requests.Response:
    """Open the authorization URL, check the consent page, press a button; returns the redirect response."""
    page = browser.get(url, allow_redirects=False)
    if page.status_code != 200:
        return page
    assert "consent-scopes" in page.text, page.text[:800]
    return browser.post(url, data={"csrf_token": csrf_from(page.text), "decision": decision},
                        allow_redirects=False)


@dataclass
class Registered:
    client_id: str
    client_secret: str | None


@pytest.fixture
def oauth_env(live_server: str, live_factories: Any, app: Flask) -> Iterator[Any]:
    """Live server plus a way to register clients (committed, as an admin would)."""

    class Env:
        base = live_server
        factories = live_factories

        def __init__(self) -> None:
            self.admin = live_factories.admin()

        def register(self, *, public: bool = False, scope: str = "openid profile fhirUser offline_access "
                     "patient/*.rs user/*.cruds", grants: list[str] | None = None,
                     redirect_uris: list[str] | None = None, service_user: User | None = None,
                     web_origins: list[str] | None = None, jwks: dict[str, Any] | None = None) -> Registered:
            data = oauth_service.ClientInput(
                name="Test app", is_public=public, redirect_uris=redirect_uris or [CALLBACK], scope=scope,
                grants=grants or ["authorization_code", "refresh_token"],
                service_user_id=service_user.id if service_user else None, web_origins=web_origins or [],
                auth_method="private_key_jwt" if jwks else "client_secret_basic", jwks=jwks)
            client, secret = oauth_service.register_client(data, by=self.admin)
            db.session.commit()
            return Registered(client.client_id, secret)

    yield Env()
