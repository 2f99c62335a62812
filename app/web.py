"""Cross-cutting web concerns: home page, request hooks (client address, idle timeout, forced password
change), security headers, and Flask-Login wiring."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response as BaseResponse

from app import db, read_path
from app.audit.context import client_ip
from app.auth import bearer, service_credentials
from app.auth import service as auth_service
from app.auth.models import Role, User
from app.errors import Unauthorized, problem_response, wants_problem_json
from app.extensions import login_manager

bp = Blueprint("web", __name__)


@dataclass(frozen=True)
class NavItem:
    label: str
    endpoint: str
    roles: tuple[Role, ...]
    account: bool = False
    """Shown beside the user's name (personal settings) rather than in the main navigation."""


CORE_NAV = (
    NavItem("My health", "patients.my_health", (Role.PATIENT,)),
    NavItem("Who viewed my record", "patients.my_access_log", (Role.PATIENT,)),
    NavItem("Patients", "patients.search", (Role.CLINIC_STAFF, Role.DOCTOR, Role.PHARMACIST)),
    NavItem("Register patient", "patients.register", (Role.CLINIC_STAFF,)),
    NavItem("Accounts", "auth_admin.users", (Role.ADMIN,)),
    NavItem("Audit trail", "audit.events", (Role.ADMIN,)),
    NavItem("Password", "auth.change_password", tuple(r for r in Role if r is not Role.GUEST), account=True),
    NavItem("Two-step sign-in", "auth.mfa_settings", tuple(r for r in Role if r is not Role.GUEST), account=True),
)
"""The navigation every deployment has; each domain's ``init_app`` adds its entries with :func:`add_nav`."""

ChartLinks = Callable[[Any, User], list[dict[str, str]]]

# Every typed date is a native date input sent as YYYY-MM-DD, and pages show dates the same way. The browser shows
# the field in the device's own order (12/04/2026 or 04.12.2026), so the page reads the date back unambiguously.
DATE_HINT = "Pick it from the calendar or type it in your device's date order; it is read back below"


@dataclass
class Registry:
    """What the domains add to the shared pages of one app, filled by their ``init_app`` (never by import)."""

    nav: list[NavItem] = field(default_factory=lambda: list(CORE_NAV))
    chart_links: list[ChartLinks] = field(default_factory=list)
    """Functions giving extra buttons on a patient's chart (scans, consults, prescriptions...)."""
    chart_panels: list[str] = field(default_factory=list)
    """Templates included in the chart's main column; they receive ``patient`` and the current user."""
    my_health_panels: list[str] = field(default_factory=list)
    """Templates included in the patient's "My health" page (results, visit summaries...)."""
    role_home: dict[Role, str] = field(default_factory=lambda: {
        Role.PATIENT: "patients.my_health",
        Role.DOCTOR: "patients.search",
        Role.CLINIC_STAFF: "patients.search",
        Role.PHARMACIST: "patients.search",
        Role.ADMIN: "auth_admin.users",
    })
    """Where each role's work starts (the home page redirects there)."""


def registry(app: Flask | None = None) -> Registry:
    """The app's :class:`Registry` (the current app's by default)."""
    target = app if app is not None else current_app
    return target.extensions.setdefault("web_registry", Registry())


def add_nav(app: Flask, label: str, endpoint: str, *roles: Role, position: int | None = None,
            after: str | None = None, account: bool = False) -> None:
    """Add a navigation entry; ``after`` (an endpoint) places it beside another domain's entry."""
    nav = registry(app).nav
    item = NavItem(label, endpoint, roles, account)
    if item in nav:
        return
    if after is not None:
        position = next((i + 1 for i, n in enumerate(nav) if n.endpoint == after), None)
    nav.insert(len(nav) if position is None else position, item)


def add_my_health_panel(app: Flask, template: str) -> None:
    panels = registry(app).my_health_panels
    if template not in panels:
        panels.append(template)


def add_chart_links(app: Flask, provider: ChartLinks) -> None:
    links = registry(app).chart_links
    if provider not in links:
        links.append(provider)


def add_chart_panel(app: Flask, template: str) -> None:
    panels = registry(app).chart_panels
    if template not in panels:
        panels.append(template)


def set_home(app: Flask, role: Role, endpoint: str) -> None:
    """Where ``role``'s work starts in this app (the domain that does that work says so)."""
    registry(app).role_home[role] = endpoint


def chart_links(patient: Any) -> list[dict[str, str]]:
    return [link for provider in registry().chart_links for link in provider(patient, current_user)]


def nav_items(user: User, account: bool = False) -> list[dict[str, object]]:
    return [{"label": _(i.label), "url": url_for(i.endpoint), "endpoints": (i.endpoint,)}
            for i in registry().nav if user.role in i.roles and i.account is account]


CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

LAST_SEEN_RESOLUTION = timedelta(seconds=30)
"""Activity is noted in the session cookie at most this often, so a burst of requests (a viewer loading
slices) does not re-sign and re-send the cookie each time; the idle limit can only come earlier by this much."""

def byte_range_response(size: int, whole: Callable[[], Iterable[bytes]], part: Callable[[int, int], Iterable[bytes]],
                        *, mimetype: str, headers: dict[str, str]) -> Response:
    """The body streamed whole, or the one ``Range: bytes=`` span asked for (206; 416 outside it), so players
    and download tools can seek. ``part(start, stop)`` streams bytes ``[start, stop)``."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    wanted = request.range
    if wanted is not None and wanted.units == "bytes" and len(wanted.ranges) == 1:
        span = wanted.range_for_length(size)
        if span is None:
            return Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        start, stop = span
        return Response(stream_with_context(iter(part(start, stop))), status=206, mimetype=mimetype,
                        headers={**headers, "Content-Range": f"bytes {start}-{stop - 1}/{size}",
                                 "Content-Length": str(stop - start)})
    return Response(stream_with_context(iter(whole())), mimetype=mimetype,
                    headers={**headers, "Content-Length": str(size)})


@bp.get("/")
def home() -> BaseResponse:
    """Send each role to where their work starts."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.sign_in"))
    return redirect(url_for(registry().role_home[current_user.role]))


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness probe for the process manager (no database access)."""
    return Response("ok", mimetype="text/plain")


SESSIONLESS_ENDPOINTS = frozenset({"web.healthz"})
"""Endpoints answered without the signed-in user: a browser's cookie on them costs no database read."""


def _credential_user() -> User | None:
    """The account a bearer token or a DICOMweb peer's credential authenticated this request as."""
    token = bearer.current_token()
    if token is not None:
        return token.user
    peer = service_credentials.current_peer()
    return peer.user if peer is not None else None


@login_manager.user_loader
def _load_user(session_id: str) -> User | None:
    if request.endpoint in SESSIONLESS_ENDPOINTS or g.get("database_away") or _credential_user() is not None:
        return None  # a token sent beside a session cookie speaks for the request (its scopes were checked)
    return read_path.session_user(session_id)


@login_manager.request_loader
def _load_credential_user(_request: Any) -> User | None:
    return None if g.get("database_away") else _credential_user()


@login_manager.unauthorized_handler
def _unauthorized() -> BaseResponse:
    if wants_problem_json():
        exc = Unauthorized("Sign in first.", headers={"WWW-Authenticate": 'Bearer realm="hospital"'})
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, headers=exc.headers)
    return redirect(url_for("auth.sign_in", next=request.full_path if request.method == "GET" else None))


def idle_limit(user: User) -> timedelta:
    minutes = current_app.config["STAFF_IDLE_MINUTES" if user.role.is_staff else "PATIENT_IDLE_MINUTES"]
    return timedelta(minutes=minutes)


def init_request_hooks(app: Flask) -> None:
    @app.before_request
    def _context() -> BaseResponse | None:
        client_ip.set(request.remote_addr)
        if request.endpoint == "static" or not current_user.is_authenticated or bearer.current_token():
            return None  # bearer-token requests carry no browser session to time out
        now = db.utcnow()
        last_seen = session.get("last_seen")
        if last_seen is not None and now - datetime.fromisoformat(last_seen) > idle_limit(current_user):
            minutes = int(idle_limit(current_user).total_seconds() // 60)
            auth_service.record_sign_out(current_user, reason="idle timeout")
            db.session.commit()  # a hook for every blueprint: the sign-out is saved before the session ends
            logout_user()
            session.clear()
            if wants_problem_json():
                return problem_response(401, "session-expired", "Session expired",
                                        f"Signed out after {minutes} minutes without activity.")
            flash(_("You were signed out after %(minutes)s minutes without activity.", minutes=minutes), "info")
            return redirect(url_for("auth.sign_in"))
        if last_seen is None or now - datetime.fromisoformat(last_seen) >= LAST_SEEN_RESOLUTION:
            session["last_seen"] = now.isoformat()
        if (current_user.must_change_password and request.endpoint not in
                ("auth.change_password", "auth.sign_out", "static") and not wants_problem_json()):
            flash(_("Choose a new password before you continue."), "info")
            return redirect(url_for("auth.change_password"))
        return None

    @app.after_request
    def _security_headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Frame-Options", "DENY")  # a page meant for a same-site frame says SAMEORIGIN
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Permissions-Policy"] = "camera=(self), microphone=(self), geolocation=()"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if current_app.config["SESSION_COOKIE_SECURE"]:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if resp.mimetype == "text/html" and current_user.is_authenticated:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.context_processor
    def _template_globals() -> dict[str, object]:
        shared = registry(app)
        return {"Role": Role, "nav_items": nav_items, "chart_links": chart_links,
                "chart_panels": shared.chart_panels, "my_health_panels": shared.my_health_panels}

    app.jinja_env.globals["date_hint"] = DATE_HINT  # a global, so imported form macros see it too


def render(template: str, status: int = 200, **context: object) -> tuple[str, int]:
    return render_template(template, **context), status
