"""OAuth2 / OpenID Connect pages and endpoints: consent, token, revocation, introspection, userinfo, JWKS,
discovery; "Connected apps" for everyone; client registration for administrators."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oidc.core.errors import ConsentRequiredError, InteractionRequiredError, LoginRequiredError
from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_required, logout_user
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.wrappers import Response
from wtforms import BooleanField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from app import db
from app.auth import bearer
from app.auth import oauth_service as service
from app.auth import scopes as smart
from app.auth import service as accounts
from app.auth.decorators import roles_required
from app.auth.forms import ConfirmForm
from app.auth.models import Role, User
from app.auth.oauth2 import (
    authenticate_bearer,
    authorization,
    check_user_scopes,
    issuer,
    public_jwks,
    query_client,
    signing_algorithms,
    user_info,
)
from app.catalogue import N_
from app.errors import AppError, ValidationFailed
from app.extensions import csrf
from app.forms import AppForm
from app.patients import service as patients_service
from app.transactions import commit_at_request_end, submit

bp = commit_at_request_end(Blueprint("oauth", __name__, template_folder="templates"))
# Authlib's endpoints save through callbacks that flush: the boundary commits before the answer leaves.
endpoints = commit_at_request_end(Blueprint("oauth_endpoints", __name__))
csrf.exempt(endpoints)  # client-authenticated back-channel endpoints, never called with a browser cookie


class OAuthAuthorizeError(AppError):
    status, slug, title = 400, "invalid-authorization-request", N_("This app's sign-in request is not valid")


# ---------------------------------------------------------------- protocol endpoints


@endpoints.post("/oauth/token")
def token() -> Response:
    """Token endpoint (code, refresh_token, client_credentials)."""
    resp = authorization.create_token_response()
    return resp


@endpoints.post("/oauth/revoke")
def revoke() -> Response:
    """RFC 7009 token revocation."""
    resp = authorization.create_endpoint_response("revocation")
    return resp


@endpoints.post("/oauth/introspect")
def introspect() -> Response:
    """RFC 7662 token introspection (for the client the token was issued to)."""
    resp = authorization.create_endpoint_response("introspection")
    return resp


@endpoints.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """OpenID Connect userinfo: claims for the token's user, per its scopes."""
    auth = request.headers.get("Authorization", "")
    presented = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    if presented is None and request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        presented = request.form.get("access_token")  # RFC 6750 §2.2, which some relying parties use
    token, reason = authenticate_bearer(presented) if presented else (None, "No token.")
    if token is None or token.user is None:
        resp = jsonify(error="invalid_token", error_description=reason)
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{reason}"'
        return resp
    if "openid" not in token.scopes:
        resp = jsonify(error="insufficient_scope")
        resp.status_code = 403
        resp.headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope", scope="openid"'
        return resp
    return jsonify(dict(user_info(token.user, token.scope)))


@endpoints.get("/oauth/jwks")
def jwks() -> Response:
    """Public signing keys (current and recently retired)."""
    resp = jsonify(public_jwks())
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp


def _metadata() -> dict[str, Any]:
    """Only what works: algorithms with a key, endpoints that exist, methods the token endpoint takes."""
    base = issuer()
    data = {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/oauth/jwks",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "end_session_endpoint": f"{base}/oauth/logout",
        "scopes_supported": [*smart.IDENTITY_SCOPES, *smart.LAUNCH_SCOPES, "patient/*.rs", "user/*.cruds",
                             "system/*.rs", *(f"patient/{r}.rs" for r in smart.RESOURCE_TYPES if r != "*")],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": signing_algorithms(),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                  "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "ES256", "ES384"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                       "private_key_jwt", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                          "private_key_jwt"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "name", "email",
                             "fhirUser"],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "claims_parameter_supported": False,
    }
    if current_app.config["OAUTH_DYNAMIC_REGISTRATION"]:
        data["registration_endpoint"] = f"{base}/oauth/register"
    return data


@endpoints.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect discovery."""
    return jsonify(_metadata())


@endpoints.get("/.well-known/oauth-authorization-server")
def oauth_authorization_server() -> Response:
    """RFC 8414 authorization server metadata."""
    return jsonify(_metadata())


@endpoints.get("/.well-known/smart-configuration")
@endpoints.get("/fhir/.well-known/smart-configuration")
@bearer.public
def smart_configuration() -> Response:
    """SMART App Launch discovery, at the issuer and under the FHIR base (where SMART apps look)."""
    data = _metadata()
    data["capabilities"] = ["launch-standalone", "client-public", "client-confidential-symmetric",
                            "client-confidential-asymmetric", "sso-openid-connect", "context-standalone-patient",
                            "permission-offline", "permission-patient", "permission-user", "permission-v1",
                            "permission-v2"]
    return jsonify(data)


@endpoints.post("/oauth/register")
def register() -> Response:
    """RFC 7591 dynamic registration of public SMART apps (off unless OAUTH_DYNAMIC_REGISTRATION is set)."""
    if not current_app.config["OAUTH_DYNAMIC_REGISTRATION"]:
        return _json_error(404, "registration_not_supported", "Dynamic client registration is turned off here; "
                                                              "ask the hospital to register the app.")
    metadata = request.get_json(silent=True)
    if not isinstance(metadata, dict):
        return _json_error(400, "invalid_client_metadata", "Send the client metadata as a JSON object.")
    try:
        client = service.register_dynamic(metadata)
    except ValidationFailed as exc:
        db.rollback()
        field = next(iter(exc.errors or {}), "")
        error = "invalid_redirect_uri" if field == "redirect_uris" else "invalid_client_metadata"
        return _json_error(400, error, " ".join([exc.detail, *sum((exc.errors or {}).values(), [])])[:500])
    resp = jsonify(client_id=client.client_id, client_id_issued_at=int(client.created_at.timestamp()),
                   client_name=client.name, redirect_uris=client.redirect_uris,
                   grant_types=client.allowed_grants, response_types=["code"], scope=client.allowed_scope,
                   token_endpoint_auth_method="none")  # noqa: S106 - a method name
    resp.status_code = 201
    return resp


def _json_error(status: int, error: str, description: str) -> Response:
    resp = jsonify(error=error, error_description=description)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ---------------------------------------------------------------- consent


def _error_redirect(error: OAuth2Error) -> Response:
    return authorization.handle_error_response(None, error)


def _issue_code(grant: Any, user: User) -> Response:
    return authorization.create_authorization_response(grant_user=user, grant=grant)


def _launch_choices(user: User) -> list[Any]:
    """The patients a staff member may pick for a SMART launch (the first page of their search)."""
    try:
        page = patients_service.search(by=user, q=(request.args.get("patient_q") or "")[:100] or None, per_page=20)
    except AppError:
        return []
    return list(page.items)


def _needs_fresh_sign_in(user: User, prompts: list[str]) -> bool:
    """``prompt=login``, or a sign-in older than ``max_age`` seconds (OpenID Connect Core §3.1.2.1)."""
    if "login" in prompts and request.method == "GET":
        return True
    max_age = request.args.get("max_age", "")
    if not max_age.isdigit() or user.last_sign_in_at is None:
        return False
    return (db.utcnow() - user.last_sign_in_at).total_seconds() > int(max_age)


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """Show what the app asks for; on "Allow" (or consent given before) send the browser back with a code.

    ``prompt=none`` never shows a page: the app gets a code, or ``login_required`` / ``consent_required`` /
    ``interaction_required`` (a staff member must pick the patient).
    """
    user: User | None = current_user._get_current_object() if current_user.is_authenticated else None
    prompts = (request.values.get("prompt") or "").split()
    try:
        grant = authorization.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        db.session.commit()  # what the refused request recorded outlives the error page's rollback below
        if getattr(error, "redirect_uri", None):
            return _error_redirect(error)
        raise OAuthAuthorizeError(error.description or error.error) from None
    state = grant.request.payload.state
    if user is not None and _needs_fresh_sign_in(user, prompts):
        # prompt=login / max_age: sign in again, then continue this same request (without those parameters).
        accounts.record_sign_out(user)
        logout_user()
        session.clear()
        user = None
        rest = [(k, v) for k, v in request.args.items(multi=True) if k not in ("prompt", "max_age")]
        return redirect(url_for("auth.sign_in", next=f"{request.path}?{urlencode(rest)}"))
    if user is None:
        if "none" in prompts:
            return _error_redirect(LoginRequiredError(redirect_uri=grant.redirect_uri, state=state))
        return redirect(url_for("auth.sign_in", next=request.full_path if request.method == "GET" else None))
    scope = grant.request.payload.scope or ""
    scopes = scope_to_list(scope) or []
    client = grant.client
    problem = check_user_scopes(user, scope)
    if problem is None:
        refused = set(scopes) - set(scope_to_list(client.get_allowed_scope(scope)) or [])
        if refused:
            problem = f"This app is not registered for: {' '.join(sorted(refused))}."
    if problem:
        return _error_redirect(InvalidScopeError(problem, redirect_uri=grant.redirect_uri, state=state))
    needs_picker = "launch/patient" in scopes and user.role is not Role.PATIENT
    remembered = service.consent_covers(user, client.client_id, scope)
    if "none" in prompts:
        if needs_picker:
            return _error_redirect(InteractionRequiredError(
                "A patient must be chosen for this app.", redirect_uri=grant.redirect_uri, state=state))
        if not remembered:
            return _error_redirect(ConsentRequiredError(redirect_uri=grant.redirect_uri, state=state))
        return _issue_code(grant, user)
    if request.method == "GET" and remembered and not needs_picker and "consent" not in prompts:
        return _issue_code(grant, user)
    form = ConfirmForm()
    launch_error = None
    if request.method == "POST" and form.validate_on_submit():
        if request.form.get("decision") != "allow":
            return authorization.create_authorization_response(grant_user=None, grant=grant)
        if needs_picker:
            try:
                chosen = patients_service.get_patient(int(request.form.get("patient_id") or 0), by=user,
                                                      action="oauth.launch.patient")
            except (AppError, ValueError):
                db.session.commit()  # the denied look-up stays in the audit trail
                launch_error = "Choose one of the patients listed."
            else:
                grant.request.launch_patient_id = chosen.id
        if launch_error is None:
            service.record_consent(user, client, scope)
            return _issue_code(grant, user)
    items = [{"scope": s, "text": smart.describe(s)} for s in scopes]
    resp = make_response(render_template(
        "auth/consent.html", client=client, items=items, form=form, launch_error=launch_error,
        patients=_launch_choices(user) if needs_picker else None,
        search_args=[(k, v) for k, v in request.args.items(multi=True) if k != "patient_q"],
        patient_scoped=any(s.startswith("patient/") for s in scopes) and user.role is Role.PATIENT),
        422 if launch_error else 200)
    resp.headers["Content-Security-Policy"] = _consent_csp(grant.redirect_uri or "")
    return resp


def _consent_csp(redirect_uri: str) -> str:
    """The site CSP, but letting the consent form's redirect reach the app (browsers apply form-action to it)."""
    from app.web import CSP

    parts = urlsplit(redirect_uri)
    target = f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"
    if not parts.scheme or any(c in target for c in " ;,'\""):
        return CSP
    return CSP.replace("form-action 'self'", f"form-action 'self' {target}")


def _authorize_redirect_target(next_url: str | None) -> str | None:
    """The registered redirect URI of the authorization request ``next_url`` continues, if it is one."""
    if not next_url:
        return None
    parts = urlsplit(next_url)
    if parts.netloc or parts.path != url_for("oauth.authorize"):
        return None
    args = parse_qs(parts.query)
    client = query_client((args.get("client_id") or [""])[0])
    uri = (args.get("redirect_uri") or [""])[0]
    return uri if client is not None and uri and client.check_redirect_uri(uri) else None


SIGN_IN_FORMS = ("auth.sign_in", "auth.mfa_verify", "auth.mfa_enrol")


@bp.after_app_request
def _sign_in_form_action(resp: Response) -> Response:
    """Sign-in forms that continue an app's authorization may end in a redirect to that app (a code, or an
    error such as ``invalid_scope``): their form-action allows the app's registered redirect URI."""
    if request.endpoint in SIGN_IN_FORMS:
        next_url = request.args.get("next") or (session.get("mfa_pending") or {}).get("next")
        if target := _authorize_redirect_target(next_url):
            resp.headers["Content-Security-Policy"] = _consent_csp(target)
    return resp


def _post_logout_target() -> str | None:
    """Where RP-initiated logout returns: a URI of the client's own (a redirect URI or on a web origin)."""
    uri = request.values.get("post_logout_redirect_uri")
    client_id = request.values.get("client_id")
    hint = request.values.get("id_token_hint")
    if not uri:
        return None
    if hint and not client_id:
        try:
            claims = jwt.decode(hint, KeySet.import_key_set(public_jwks())).claims
        except (JoseError, ValueError):
            return None
        aud = claims.get("aud")
        client_id = aud[0] if isinstance(aud, list) and aud else aud
    client = query_client(str(client_id or ""))
    if client is None:
        return None
    parts = urlsplit(uri)
    if not (client.check_redirect_uri(uri) or f"{parts.scheme}://{parts.netloc}" in client.web_origins):
        return None
    state = request.values.get("state")
    return add_params_to_uri(uri, {"state": state}) if state else uri


LOGOUT_PARAMS = ("id_token_hint", "post_logout_redirect_uri", "client_id", "state")


@bp.route("/oauth/logout", methods=["GET", "POST"])
@csrf.exempt  # an app may POST its logout request; signing out still needs the confirm form's own CSRF token
def end_session() -> Response:
    """OpenID Connect RP-initiated logout: the person confirms, is signed out, and returns to the app."""
    target = _post_logout_target()
    if not current_user.is_authenticated:
        return redirect(target or url_for("auth.sign_in"))
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        accounts.record_sign_out(current_user)
        logout_user()
        session.clear()
        if target:
            return redirect(target)
        flash(_("You are signed out."), "info")
        return redirect(url_for("auth.sign_in"))
    carried = [(k, request.values[k]) for k in LOGOUT_PARAMS if request.values.get(k)]
    resp = make_response(render_template("auth/end_session.html", form=form, carried=carried))
    if target:
        resp.headers["Content-Security-Policy"] = _consent_csp(target)
    return resp


# ---------------------------------------------------------------- connected apps


@bp.get("/account/apps")
@login_required
def connected_apps() -> str:
    """The apps this person has authorised, with a revoke button each."""
    apps = service.connected_apps(current_user)
    return render_template("auth/connected_apps.html", apps=apps, describe=smart.describe, form=ConfirmForm())


@bp.post("/account/apps/<client_id>/revoke")
@login_required
def revoke_app(client_id: str) -> Response:
    """Withdraw an app's access at once."""
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            count = service.revoke_app(current_user, client_id)
        except AppError:
            db.rollback()
            flash(_("That app has no access to revoke."), "error")
        else:
            flash(ngettext("Access withdrawn (%(num)s token revoked).", "Access withdrawn (%(num)s tokens revoked).",
                           count), "success")
    return redirect(url_for("oauth.connected_apps"))


# ---------------------------------------------------------------- admin: clients


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ClientForm(AppForm):
    name = StringField("App name", validators=[DataRequired(), Length(max=120)])
    client_type = SelectField("Type", choices=[("confidential", "Confidential (server-side, has a secret)"),
                                               ("public", "Public (mobile or browser app, PKCE, no secret)")])
    redirect_uris = TextAreaField("Redirect URIs (one per line, matched exactly; loopback on any port)",
                                  validators=[Length(max=4000)])
    web_origins = TextAreaField("Web origins allowed to call the API from a browser (one per line, e.g. "
                                "https://app.example)", validators=[Length(max=4000)])
    scope = TextAreaField("Allowed scopes (space or line separated)", validators=[DataRequired(), Length(max=4000)])
    grants = MultiCheckboxField("Grants", choices=[(g, g) for g in service.GRANTS])
    auth_method = SelectField("How a confidential app proves who it is", choices=[
        ("client_secret_basic", "A client secret"), ("private_key_jwt", "A JWT signed with its own key (asymmetric)")],
        default="client_secret_basic")
    jwks = TextAreaField("Public keys (JWK set, JSON) for signed JWTs", validators=[Length(max=20000)])
    service_user_id = SelectField("Service account (client credentials only)",
                                  coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    active = BooleanField("Active", default=True)

    def to_input(self, *, is_public: bool) -> service.ClientInput:
        """The form as service input; a JWK set that is not JSON becomes a field error."""
        text = (self.jwks.data or "").strip()
        try:
            jwks = json.loads(text) if text else None
        except ValueError:
            jwks = []
        if not isinstance(jwks, dict | None):
            raise ValidationFailed(N_("Some fields need attention."), errors={
                "jwks": [N_("Paste a JWK set: a JSON object with a \"keys\" list.")]})
        return service.ClientInput(
            name=self.name.data or "", is_public=is_public, redirect_uris=(self.redirect_uris.data or "").split(),
            scope=" ".join((self.scope.data or "").split()), grants=list(self.grants.data or []),
            service_user_id=self.service_user_id.data, web_origins=(self.web_origins.data or "").split(),
            auth_method=self.auth_method.data or "client_secret_basic",
            jwks=jwks)


def _client_form(**kwargs: Any) -> ClientForm:
    from app.auth import service as accounts

    form = ClientForm(**kwargs)
    form.service_user_id.choices = [("", "— none —")] + [
        (str(u.id), f"{u.full_name} ({u.role.label})") for u in accounts.list_users(by=current_user)
        if u.role is not Role.PATIENT and u.active]
    return form


@bp.route("/admin/oauth-clients", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def clients() -> Response | tuple[str, int]:
    """List registered apps and register a new one."""
    form = _client_form()
    status = 200
    secret = None
    created = None
    if form.validate_on_submit():
        registered: list[tuple[Any, str | None]] = []
        status = submit(form, lambda: registered.append(service.register_client(
            form.to_input(is_public=form.client_type.data == "public"), by=current_user))) or 200
        if registered:
            (created, secret), form = registered[0], None
    elif request.method == "POST":
        status = 422
    items = service.list_clients(by=current_user)
    return render_template("auth/oauth_clients.html", clients=items, form=form, created=created, secret=secret,
                           confirm=ConfirmForm()), status


@bp.route("/admin/oauth-clients/<int:client_pk>/edit", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def edit_client(client_pk: int) -> Response | tuple[str, int]:
    """Change an app's redirect URIs, web origins, scopes, grants or keys."""
    client = service.get_client(client_pk, by=current_user)
    form = _client_form(obj=None if request.method == "POST" else client, data=None if request.method == "POST" else {
        "redirect_uris": "\n".join(client.redirect_uris), "web_origins": "\n".join(client.web_origins),
        "scope": client.allowed_scope, "grants": client.allowed_grants, "auth_method": client.auth_method,
        "jwks": json.dumps(client.jwks, indent=1) if client.jwks else "", "service_user_id": client.service_user_id,
        "name": client.name, "client_type": "public" if client.is_public else "confidential"})
    status = 200
    if form.validate_on_submit():
        status = submit(form, lambda: service.update_client(
            client, form.to_input(is_public=client.is_public), by=current_user)) or 200
        if status == 200:
            flash(_("%(name)s is saved.", name=client.name), "success")
            return redirect(url_for("oauth.clients"))
    elif request.method == "POST":
        status = 422
    return render_template("auth/oauth_client_edit.html", client=client, form=form), status


@bp.post("/admin/oauth-clients/<int:client_pk>/rotate-secret")
@roles_required(Role.ADMIN)
def rotate_secret(client_pk: int) -> tuple[str, int] | Response:
    """Issue a new client secret (shown once)."""
    form = ConfirmForm()
    if not form.validate_on_submit():
        return redirect(url_for("oauth.clients"))
    client = service.get_client(client_pk, by=current_user)
    secret = service.rotate_secret(client, by=current_user)
    items = service.list_clients(by=current_user)
    return render_template("auth/oauth_clients.html", clients=items, form=None, created=client, secret=secret,
                           confirm=ConfirmForm()), 200


@bp.post("/admin/oauth-clients/<int:client_pk>/active")
@roles_required(Role.ADMIN)
def set_client_active(client_pk: int) -> Response:
    """Disable (revoking its tokens) or re-enable an app."""
    form = ConfirmForm()
    if form.validate_on_submit():
        client = service.get_client(client_pk, by=current_user)
        service.set_active(client, request.form.get("active") == "1", by=current_user)
        flash(_("%(name)s is now active.", name=client.name) if client.active
              else _("%(name)s is now disabled.", name=client.name), "success")
    return redirect(url_for("oauth.clients"))


