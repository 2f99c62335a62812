"""CORS for browser apps: only origins a registered, active OAuth client listed (its web origins) may call
discovery, JWKS, the token, userinfo, revocation and registration endpoints, the JSON API and FHIR.

Cross-origin calls carry bearer tokens, never cookies, so credentials are not allowed: a page on a registered
origin still cannot ride on a signed-in person's session. Other origins get no CORS headers at all.

Not flask-cors: it compiles ``origins`` once at ``init_app`` (a list of strings/regexes, no callable), while the
allowed origins change whenever a client is registered or disabled; and it answers preflights in an after-request
hook, after the bearer-token and CSRF checks that a preflight (carrying neither) must skip.
"""

from __future__ import annotations

from flask import Flask, Response, request

from app.auth import oauth_service

PATHS = ("/.well-known/", "/oauth/token", "/oauth/userinfo", "/oauth/revoke", "/oauth/introspect", "/oauth/jwks",
         "/oauth/register", "/api/", "/fhir")
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, If-Match, If-None-Exist, Prefer, X-Requested-With"
EXPOSE_HEADERS = "WWW-Authenticate, Location, Content-Location, ETag, Last-Modified"
MAX_AGE = "600"


def _applies() -> bool:
    return request.path.startswith(PATHS)


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin and _applies() and oauth_service.origin_allowed(origin) else None


def _preflight() -> Response | None:
    """Answer a CORS preflight before authentication or CSRF checks run (a preflight carries neither)."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers or not _applies():
        return None
    resp = Response(status=204)
    if _allowed_origin():
        resp.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        resp.headers["Access-Control-Max-Age"] = MAX_AGE
    return resp


def _headers(resp: Response) -> Response:
    if not _applies():
        return resp
    resp.vary.add("Origin")
    if origin := _allowed_origin():
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return resp


def init_app(app: Flask) -> None:
    """Register first, so that preflights are answered before the bearer-token and CSRF hooks."""
    app.before_request_funcs.setdefault(None, []).insert(0, _preflight)
    app.after_request(_headers)
