"""Bearer tokens at this server's resource servers (the JSON API, DICOMweb, FHIR): which SMART scope each route
needs, declared at the route, and the Authlib resource protector that checks a request's token against it.

A route names the FHIR resource type it serves with :func:`scope`, or a blueprint whose routes all serve one
type with :func:`declare` (a route's own :func:`scope` overrides it). The permission letter follows from the
method and path (:func:`app.auth.scopes.required_permission`). A route under /api, /dicomweb or /fhir that
declares nothing needs a wildcard (``*``) scope, so a new route is never silently open to tokens. Other
credentials a blueprint accepts (a DICOMweb peer's HTTP Basic) are checked in the same hook
(:func:`accept_credentials`).

The token's user becomes ``current_user`` through Flask-Login's request loader (:mod:`app.web`): a bearer
request is the token's, even when the client also sends a session cookie. Cookie requests are CSRF-checked
here; bearer requests are not (a browser never attaches a token by itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.integrations.flask_oauth2 import current_token as authlib_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from flask import Blueprint, Flask, Response, abort, current_app, request
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.routing import Rule

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import oauth2
from app.auth import scopes as smart
from app.auth.models import Role
from app.auth.oauth_models import OAuthToken
from app.errors import problem_response
from app.extensions import csrf

PROTECTED_PREFIXES = ("/api/", "/dicomweb", "/fhir/")
WILDCARD = "*"
"""A route that maps to no one FHIR resource type: only a ``*`` scope reaches it."""

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Declaration:
    """What a route asks of a bearer token."""

    resource: str | None
    """The FHIR resource type; :data:`WILDCARD`; None: any valid token will do (who the token's user is)."""
    collection: bool = False
    """GET on this route searches (a collection of its own) rather than reads."""
    public: bool = False
    """Served to anyone: a token sent here is neither needed nor checked."""


_VIEW_ATTRIBUTE = "bearer_declaration"
_BLUEPRINTS: dict[str, Declaration] = {}
_OTHER_CREDENTIALS: dict[str, Callable[[], Response | None]] = {}


def _mark(declaration: Declaration) -> Callable[[View], View]:
    def mark(view: View) -> View:
        setattr(view, _VIEW_ATTRIBUTE, declaration)
        return view
    return mark


def scope(resource: str, *, collection: bool = False) -> Callable[[View], View]:
    """Declare the resource type a route (a view function or MethodView class) needs a token's scope for."""
    return _mark(Declaration(resource, collection))


any_scope = _mark(Declaration(None))
"""Any valid token reaches the route: it reveals only who the token speaks for."""

public = _mark(Declaration(None, public=True))
"""No token needed (discovery, the capability statement); one sent along is ignored."""


def declare(blueprint: Blueprint | str, resource: str) -> None:
    """Declare the resource type of every route on ``blueprint`` (by object or name) that declares none itself."""
    _BLUEPRINTS[blueprint if isinstance(blueprint, str) else blueprint.name] = Declaration(resource)


def accept_credentials(blueprint: Blueprint, authenticate: Callable[[], Response | None]) -> None:
    """Let ``authenticate`` check non-bearer credentials (a DICOMweb peer's HTTP Basic) on ``blueprint``'s routes,
    in the same early hook as bearer tokens: before anything has read ``current_user``."""
    _OTHER_CREDENTIALS[blueprint.name] = authenticate


def declaration_for(app: Flask, endpoint: str | None) -> Declaration | None:
    """The route's own declaration, else its blueprint's; None: the route declares nothing."""
    if endpoint is None:
        return None
    view = app.view_functions.get(endpoint)
    found = getattr(view, _VIEW_ATTRIBUTE, None) or getattr(getattr(view, "view_class", None), _VIEW_ATTRIBUTE, None)
    return found or _BLUEPRINTS.get(endpoint.rpartition(".")[0])


# ---------------------------------------------------------------- what a request needs


@dataclass(frozen=True)
class Need:
    """The resource server a token must be issued for, and the scope it must hold there."""

    audience: str
    resource: str | None
    permission: str


def _matched_rule() -> Rule | None:
    """The request's route; for a method the route does not allow, the route the path matches (a wrong method
    is answered 405 after the token is checked against that route's declaration, as for a right one)."""
    if request.url_rule is not None or not isinstance(request.routing_exception, MethodNotAllowed):
        return request.url_rule
    adapter = current_app.create_url_adapter(request)
    allowed = sorted(request.routing_exception.valid_methods or [])
    if adapter is None or not allowed:
        return None
    rule, _args = adapter.match(method=allowed[0], return_rule=True)
    return rule  # type: ignore[return-value]


def _audience(path: str) -> str | None:
    """The resource server a token must be issued for: FHIR under /fhir, the JSON API elsewhere."""
    if path == "/fhir" or path.startswith("/fhir/"):
        return oauth2.fhir_base()
    return oauth2.issuer() if path.startswith(PROTECTED_PREFIXES) else None  # /api/ and /dicomweb


def need() -> Need | None:
    """What this request's route asks of a bearer token; None: the route is not protected by tokens."""
    rule = _matched_rule()
    declaration = declaration_for(current_app, rule.endpoint if rule is not None else None)
    audience = None if declaration and declaration.public else _audience(request.path)
    return None if audience is None else _need(rule, declaration, audience)


def _need(rule: Rule | None, declaration: Declaration | None, audience: str) -> Need:
    resource = declaration.resource if declaration else WILDCARD
    if declaration and declaration.collection and rule is not None:
        collection = rule.rule.split("<")[0].rstrip("/")  # GET on the route itself searches
    else:
        blueprint = current_app.blueprints.get(rule.endpoint.rpartition(".")[0]) if rule is not None else None
        collection = (blueprint.url_prefix if blueprint else None) or ""
    return Need(audience, resource, smart.required_permission(request.method, request.path, collection))


# ---------------------------------------------------------------- the protector


class ScopeNotGranted(InsufficientScopeError):
    """403 naming the scope that would have allowed the request (RFC 6750 §3's ``scope`` attribute)."""

    def __init__(self, description: str, needed: str) -> None:
        super().__init__(description=description)
        self.needed = needed


def _refuse_token(reason: str) -> InvalidTokenError:
    audit.record("oauth.bearer", by=None, outcome=Outcome.DENIED, detail={"reason": reason})
    db.session.commit()
    return InvalidTokenError(description=reason)


def _within_patient(token: OAuthToken, path: str) -> bool:
    """Whether a request stays inside the token's launch patient: that patient's record, or a search for it."""
    pid = str(token.patient_id)
    for prefix in ("/fhir/Patient/", "/api/v1/patients/"):
        if path.startswith(prefix):
            return path[len(prefix):].split("/")[0] == pid
    refs = [request.args.get(name, "") for name in ("patient", "subject", "patient_id")]
    return path.startswith("/fhir/") and any(ref in (pid, f"Patient/{pid}") for ref in refs if ref)


class SmartBearerValidator(BearerTokenValidator):
    """Our opaque tokens, their audience (RFC 8707), and SMART scopes rather than OAuth's exact-string match: a
    staff token launched for one patient reaches that patient's record with its ``patient/`` scopes only."""

    def authenticate_token(self, token_string: str) -> OAuthToken:
        token, reason = oauth2.authenticate_bearer(token_string)
        if token is None:
            raise _refuse_token(reason)
        return token

    def validate_token(self, token: OAuthToken, scopes: Any, _request: Any, need: Need | None = None) -> None:
        assert need is not None
        if need.audience not in (token.audiences or [oauth2.issuer()]):
            raise _refuse_token("The token was issued for another resource server.")
        staff_launch = token.patient_id is not None and token.user is not None and token.user.role is not Role.PATIENT
        broad = [s for s in token.scopes if not s.startswith("patient/")] if staff_launch else token.scopes
        if smart.grants(broad, need.resource, need.permission) or (
                staff_launch and smart.grants(token.scopes, need.resource, need.permission)
                and _within_patient(token, request.path)):
            return
        context = "system" if token.grant_type == "client_credentials" else (
            "patient" if token.patient_id is not None else "user")
        needed = smart.needed_scope(need.resource, need.permission, context)
        audit.record("oauth.bearer", by=token.user, outcome=Outcome.DENIED,
                     detail={"reason": "insufficient scope", "needed": needed, "path": request.path})
        db.session.commit()
        detail = (f"This request needs the scope {needed}." if not staff_launch else
                  f"This app may only reach patient {token.patient_id}'s record, or needs the scope {needed}.")
        raise ScopeNotGranted(detail, needed)


class HospitalResourceProtector(ResourceProtector):
    """Answers refusals as problem+json (OperationOutcome under /fhir) with RFC 6750's ``WWW-Authenticate``."""

    def parse_request_authorization(self, oauth_request: Any) -> tuple[Any, str]:
        auth = oauth_request.headers.get("Authorization", "")
        return self.get_token_validator(auth[:6]), auth[7:].strip()

    @staticmethod
    def error_response(error: OAuth2Error) -> Response:
        if isinstance(error, InsufficientScopeError):
            status, code, title = 403, "insufficient_scope", "The access token's scope does not allow this"
        else:
            status, code, title = 401, "invalid_token", "The access token is not valid"
        description = error.description or ""
        challenge = f'Bearer realm="hospital", error="{code}", error_description="{description}"'
        if isinstance(error, ScopeNotGranted):
            challenge += f', scope="{error.needed}"'
        slug = "invalid-token" if status == 401 else "insufficient-scope"
        return problem_response(status, slug, title, description, headers={"WWW-Authenticate": challenge})

    def raise_error_response(self, error: OAuth2Error) -> None:
        abort(self.error_response(error))


require_oauth = HospitalResourceProtector()
require_oauth.register_token_validator(SmartBearerValidator(realm="hospital"))


def _authenticate() -> Response | None:
    """Before every request: a bearer token on a protected route must be live, for this resource server, and
    scoped for the route; other requests are CSRF-checked as cookie requests (or by their own credentials)."""
    needed = need()
    if needed is None or request.headers.get("Authorization", "")[:7].lower() != "bearer ":
        csrf.protect(apply_exemptions=True)
        other = _OTHER_CREDENTIALS.get(request.blueprint or "")
        return other() if other is not None else None
    try:
        require_oauth.acquire_token(need=needed)
    except OAuth2Error as error:
        return require_oauth.error_response(error)
    return None


def current_token() -> OAuthToken | None:
    """The bearer token this request was authorised by; None for the person's own browser session."""
    return authlib_token._get_current_object()  # type: ignore[no-any-return]


def init_app(app: Flask) -> None:
    """Check tokens (and CSRF for cookie requests) before any other hook reads ``current_user``."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.before_request(_authenticate)
