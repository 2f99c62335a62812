"""Helpers for driving the authorization server over real HTTP with independent client libraries."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask

from app import db
from app.auth import oauth_service
from app.auth.models import User
from tests.conftest import PASSWORD

CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CALLBACK = "https://app.example/callback"


def client_assertion(key: Any, client_id: str, audience: str, **overrides: Any) -> str:
    """A SMART Backend Services client assertion (private_key_jwt), signed with ``key`` (an RSA JWK)."""
    from joserfc import jwt

    claims = {"iss": client_id, "sub": client_id, "aud": audience, "exp": int(time.time()) + 120,
              "jti": uuid.uuid4().hex, **overrides}
    return jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])


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


NPM = Path(__file__).resolve().parents[1] / "npm" / "node_modules"
PAGES = Path(__file__).resolve().parent / "pages"
LIBRARIES = {
    "oidc-client-ts.min.js": NPM / "oidc-client-ts" / "dist" / "browser" / "oidc-client-ts.min.js",
    "fhir-client.min.js": NPM / "fhirclient" / "build" / "fhir-client.min.js",
}


@pytest.fixture
def third_party_origin() -> Iterator[Any]:
    """A third-party app served from its own loopback origin (another port): the test pages, the npm client
    libraries under /lib/, and /config.js with what the test sets in ``config``."""
    missing = [str(p) for p in LIBRARIES.values() if not p.exists()]
    if missing:
        pytest.fail(f"npm test clients missing ({missing[0]}): run `npm ci --prefix tests/npm`")
    config: dict[str, Any] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
            path = urlsplit(self.path).path
            if path == "/config.js":
                body, kind = f"window.CONFIG = {json.dumps(config)};".encode(), "text/javascript"
            elif path.startswith("/lib/") and path[5:] in LIBRARIES:
                body, kind = LIBRARIES[path[5:]].read_bytes(), "text/javascript"
            elif (PAGES / path.lstrip("/")).is_file() and "/" not in path.lstrip("/"):
                body, kind = (PAGES / path.lstrip("/")).read_bytes(), "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    class Origin:
        url = f"http://127.0.0.1:{server.server_port}"
        settings = config

    try:
        yield Origin()
    finally:
        server.shutdown()
        server.server_close()
