"""One error hierarchy, shown as RFC 9457 problem details to API clients and as a friendly page to people.

``detail`` never carries patient data: it names fields and ids, not values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, jsonify, render_template, request
from flask_babel import gettext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app import db
from app.catalogue import N_

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

Renderer = Callable[[int, dict[str, Any], dict[str, str]], Response]
RENDERERS: list[tuple[str, Renderer]] = []
"""Path prefix -> how errors under it are written, for APIs with their own error format (FHIR's OperationOutcome)."""


def register_renderer(prefix: str, renderer: Renderer) -> None:
    """Write errors for paths under ``prefix`` with ``renderer(status, problem_body, headers)``."""
    if all(p != prefix for p, _ in RENDERERS):
        RENDERERS.append((prefix, renderer))


class AppError(Exception):
    """A failure the user can act on; subclasses fix status, slug and title."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, *, errors: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        # Shown to the person who made the request, in their language (unchanged outside a request, or when the
        # catalogue has no such text).
        self.detail = gettext(detail or self.title)
        self.errors = {k: [gettext(m) for m in v] for k, v in errors.items()} if errors else errors
        self.headers = headers or {}
        self.extra = extra


class ValidationFailed(AppError):
    status, slug, title = 422, "validation-failed", N_("Some fields need attention")


class NotFound(AppError):
    status, slug, title = 404, "not-found", N_("Not found")


class Forbidden(AppError):
    status, slug, title = 403, "forbidden", N_("You do not have access to this")


class Unauthorized(AppError):
    status, slug, title = 401, "unauthorized", N_("Sign-in required")


class Conflict(AppError):
    status, slug, title = 409, "conflict", N_("This conflicts with the current state")


class TooManyRequests(AppError):
    status, slug, title = 429, "too-many-requests", N_("Too many attempts")


class PayloadTooLarge(AppError):
    status, slug, title = 413, "payload-too-large", N_("The upload is larger than allowed")


class UnsupportedMediaType(AppError):
    status, slug, title = 415, "unsupported-media-type", N_("Unsupported content type")


def wants_problem_json() -> bool:
    """API paths and clients that prefer JSON get problem+json; browsers get HTML."""
    if request.path == "/oauth/authorize":  # the consent page is for people, in a browser
        return False
    if request.path.startswith(("/api/", "/dicomweb/", "/oauth/", "/.well-known/", "/fhir/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json", PROBLEM_JSON])
    return best in ("application/json", PROBLEM_JSON)


def problem_response(status: int, slug: str, title: str, detail: str, *,
                     errors: dict[str, list[str]] | None = None, headers: dict[str, str] | None = None,
                     extra: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": gettext(title),
        "status": status,
        "detail": gettext(detail),
        "instance": request.path,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    for prefix, renderer in RENDERERS:
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return renderer(status, body, headers or {})
    if wants_problem_json():
        resp = jsonify(body)
        resp.mimetype = PROBLEM_JSON
    else:
        resp = Response(render_template("errors/error.html", problem=body), mimetype="text/html")
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _rollback_keeping_audit() -> None:
    db.rollback()


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(AppError)
    def _app_error(exc: AppError) -> Response:
        _rollback_keeping_audit()
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, errors=exc.errors,
                                headers=exc.headers, extra=exc.extra)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Response:
        _rollback_keeping_audit()
        return problem_response(400, "csrf-failed", N_("The form expired or was not sent from this site"),
                                N_("Reload the page and try again."))

    def _database_gone(exc: Exception) -> Exception | None:
        """The database error behind ``exc``: an error outside the view (the commit at the request's end, say)
        reaches Flask as a 500 wrapping it, and gets the same answer as in the view, without loading the account."""
        original = getattr(exc, "original_exception", None) or exc
        return original if isinstance(original, sa.exc.OperationalError | sa.exc.InterfaceError) else None

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if (away := _database_gone(exc)) is not None:
            return _database_away(away)
        _rollback_keeping_audit()
        status = exc.code or 500
        errors = None
        data = getattr(exc, "data", None)
        if isinstance(data, dict) and "messages" in data:
            # webargs/flask-smorest validation: {"json": {"field": ["msg"]}} -> {"field": ["msg"]}
            errors = {}
            for location, messages in data["messages"].items():
                if not isinstance(messages, dict):  # a message about the whole location, e.g. the body
                    messages = {location: messages}
                for field, msgs in messages.items():
                    errors[str(field)] = [str(m) for m in msgs] if isinstance(msgs, list) else [str(msgs)]
        title = exc.name
        detail = exc.description or exc.name
        slug = title.lower().replace(" ", "-")
        if status == 422:
            title, slug, detail = ValidationFailed.title, ValidationFailed.slug, N_("Check the named fields.")
        elif status == 429:  # a route's rate limit (Flask-Limiter) reads like the app's own refusals
            title, slug = TooManyRequests.title, TooManyRequests.slug
        headers = {k: v for k, v in exc.get_headers() if k.lower() in ("allow", "www-authenticate", "retry-after")}
        return problem_response(status, slug, title, detail, errors=errors, headers=headers)

    @app.errorhandler(sa.exc.DataError)
    @app.errorhandler(OverflowError)
    def _out_of_range(exc: Exception) -> Response:
        """A number or text the database cannot hold (an id past its range, say) is the client's error."""
        _rollback_keeping_audit()
        return problem_response(422, "value-out-of-range", N_("A value is out of range"),
                                N_("A number or text in the request is larger than a record can hold."))

    @app.errorhandler(sa.exc.OperationalError)
    @app.errorhandler(sa.exc.InterfaceError)
    def _database_away(exc: Exception) -> Response:
        """The database went away (restart, failover, a terminated connection): nothing was saved, and the
        pool reconnects on the next request, so the user is told to try again rather than shown a crash."""
        logger.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        db.discard_session()
        # Answer as to a signed-out visitor: loading the account (and its language) needs the database. The user
        # loaders load no one while ``database_away`` is set, and the page is rendered in a fresh application
        # context, whose ``g`` holds no account loaded earlier in the request (Flask-Login keeps it there).
        g.database_away = True
        with current_app.app_context():
            g.database_away = True
            return problem_response(503, "database-unavailable", N_("The service is briefly unavailable"),
                                    N_("Nothing was saved from this request. Try again in a few seconds."),
                                    headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if (away := _database_gone(exc)) is not None:
            return _database_away(away)
        logger.exception("unhandled error on %s %s", request.method, request.path)
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the response must go out whatever the session's state
            logger.exception("rollback failed")
        return problem_response(500, "internal-error", N_("Something went wrong on our side"),
                                N_("The error was logged. Nothing was saved from this request."))
