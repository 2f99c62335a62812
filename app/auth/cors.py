"""CORS for browser apps, with flask-cors writing the headers.

Who may call from another origin:
- the OAuth endpoints, the JSON API and FHIR: the web origins of registered, active OAuth clients;
- DICOMweb: those too (a viewer such as OHIF signing in through the platform), plus ``DICOMWEB_CORS_ORIGINS``.
Other origins get no CORS headers at all. Cross-origin calls carry bearer tokens, never cookies, so credentials
are never allowed: a page on a registered origin still cannot ride on a signed-in person's session.

The allowed origins live in the database and change whenever a client is registered or disabled, while
flask-cors's ``CORS`` extension compiles its origin list once at start-up. So the decision (which origin, which
policy) is made here on each request, and flask-cors's own header logic (``get_cors_options`` and
``set_cors_headers``: preflight method and header matching, max age, exposed headers, ``Vary``) writes the answer.
Preflights are answered before the bearer-token and CSRF checks, which a preflight (carrying neither) must skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, request
from flask_cors.core import get_cors_options, set_cors_headers

from app.auth import oauth_service


def _dicomweb_origins() -> list[str]:
    return [o.strip() for o in current_app.config["DICOMWEB_CORS_ORIGINS"].split(",") if o.strip()]


@dataclass(frozen=True)
class Policy:
    """What cross-origin callers of some paths may do, and which origins besides the OAuth clients' may call."""

    prefixes: tuple[str, ...]
    methods: str
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    configured_origins: Callable[[], list[str]] = field(default=lambda: [])

    def allows(self, origin: str) -> bool:
        configured = self.configured_origins()
        return origin in configured or "*" in configured or oauth_service.origin_allowed(origin)


API = Policy(
    prefixes=("/.well-known/", "/oauth/token", "/oauth/userinfo", "/oauth/revoke", "/oauth/introspect",
              "/oauth/jwks", "/oauth/register", "/api/", "/fhir"),
    methods="GET, POST, PUT, PATCH, DELETE, OPTIONS",
    allow_headers=("Authorization", "Content-Type", "Accept", "If-Match", "If-None-Exist", "Prefer",
                   "X-Requested-With"),
    expose_headers=("WWW-Authenticate", "Location", "Content-Location", "ETag", "Last-Modified"))
DICOMWEB = Policy(
    prefixes=("/dicomweb",), methods="GET, POST, OPTIONS",
    allow_headers=("Accept", "Content-Type", "Authorization", "X-CSRFToken"),
    expose_headers=("Content-Type", "Content-Length", "Warning", "ETag"),
    configured_origins=_dicomweb_origins)
POLICIES = (API, DICOMWEB)
MAX_AGE = 600


def _policy() -> Policy | None:
    return next((p for p in POLICIES if request.path.startswith(p.prefixes)), None)


def _preflight() -> Response | None:
    """Answer a CORS preflight before authentication or CSRF checks run (a preflight carries neither)."""
    if request.method != "OPTIONS" or "Origin" not in request.headers or _policy() is None:
        return None
    return Response(status=204)


def _headers(resp: Response) -> Response:
    policy = _policy()
    if policy is None:
        return resp
    resp.vary.add("Origin")  # the answer depends on the caller, allowed or not
    origin = request.headers.get("Origin")
    if origin and policy.allows(origin):
        set_cors_headers(resp, get_cors_options(None, {
            "origins": [origin], "methods": policy.methods, "allow_headers": list(policy.allow_headers),
            "expose_headers": list(policy.expose_headers), "max_age": MAX_AGE, "supports_credentials": False,
            "send_wildcard": False}))
    return resp


def init_app(app: Flask) -> None:
    """Register first, so that preflights are answered before the bearer-token and CSRF hooks."""
    app.before_request_funcs.setdefault(None, []).insert(0, _preflight)
    app.after_request(_headers)
