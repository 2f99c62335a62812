"""OAuth2 / OpenID Connect pages and endpoints: consent, token, revocation, introspection, userinfo, JWKS,
discovery; "Connected apps" for everyone; client registration for administrators."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from flask import Blueprint, flash, jsonify, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response
from wtforms import BooleanField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from app import db
from app.auth import oauth_service as service
from app.auth import scopes as smart
from app.auth.decorators import roles_required
from app.auth.forms import ConfirmForm
from app.auth.models import Role, User
from app.auth.oauth2 import authenticate_bearer, authorization, check_user_scopes, issuer, public_jwks, user_info
from app.errors import AppError
from app.extensions import csrf
from app.forms import AppForm
from app.web import add_nav

bp = Blueprint("oauth", __name__, template_folder="templates")
endpoints = Blueprint("oauth_endpoints", __name__)
csrf.exempt(endpoints)  # client-authenticated back-channel endpoints, never called with a browser cookie


class OAuthAuthorizeError(AppError):
    status, slug, title = 400, "invalid-authorization-request", "This app's sign-in request is not valid"


# ---------------------------------------------------------------- protocol endpoints


@endpoints.post("/oauth/token")
def token() -> Response:
    """Token endpoint (code, refresh_token, client_credentials)."""
    resp = authorization.create_token_response()
    db.session.commit()
    return resp


@endpoints.post("/oauth/revoke")
def revoke() -> Response:
    """RFC 7009 token revocation."""
    resp = authorization.create_endpoint_response("revocation")
    db.session.commit()
    return resp


@endpoints.post("/oauth/introspect")
def introspect() -> Response:
    """RFC 7662 token introspection (for the client the token was issued to)."""
    resp = authorization.create_endpoint_response("introspection")
    db.session.commit()
    return resp


@endpoints.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    """OpenID Connect userinfo: claims for the token's user, per its scopes."""
    auth = request.headers.get("Authorization", "")
    token, reason = authenticate_bearer(auth[7:].strip()) if auth[:7].lower() == "bearer " else (None, "No token.")
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
    base = issuer()
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/oauth/jwks",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "scopes_supported": [*smart.IDENTITY_SCOPES, "patient/*.rs", "user/*.cruds", "system/*.rs",
                             *(f"patient/{r}.rs" for r in smart.RESOURCE_TYPES if r != "*")],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "email", "fhirUser"],
    }


@endpoints.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect discovery."""
    return jsonify(_metadata())


@endpoints.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART App Launch discovery."""
    data = _metadata()
    data["capabilities"] = ["launch-standalone", "client-public", "client-confidential-symmetric",
                            "sso-openid-connect", "context-standalone-patient", "permission-offline",
                            "permission-patient", "permission-user", "permission-v2"]
    return jsonify(data)


# ---------------------------------------------------------------- consent


def _error_redirect(error: OAuth2Error) -> Response:
    return authorization.handle_error_response(None, error)


@bp.route("/oauth/authorize", methods=["GET", "POST"])
@login_required
def authorize() -> Response:
    """Show what the app asks for; on "Allow" send the browser back with a code."""
    user: User = current_user._get_current_object()
    try:
        grant = authorization.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        db.session.commit()
        if getattr(error, "redirect_uri", None):
            return _error_redirect(error)
        raise OAuthAuthorizeError(error.description or error.error) from None
    scope = grant.request.payload.scope or ""
    client = grant.client
    problem = check_user_scopes(user, scope)
    if problem is None:
        refused = set(scope_to_list(scope) or []) - set(scope_to_list(client.get_allowed_scope(scope)) or [])
        if refused:
            problem = f"This app is not registered for: {' '.join(sorted(refused))}."
    if problem:
        return _error_redirect(InvalidScopeError(problem, redirect_uri=grant.redirect_uri,
                                                 state=grant.request.payload.state))
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        if request.form.get("decision") != "allow":
            resp = authorization.create_authorization_response(grant_user=None, grant=grant)
            db.session.commit()
            return resp
        service.record_consent(user, client, scope)
        resp = authorization.create_authorization_response(grant_user=user, grant=grant)
        db.session.commit()
        return resp
    items = [{"scope": s, "text": smart.describe(s)} for s in scope_to_list(scope) or []]
    resp = make_response(render_template(
        "auth/consent.html", client=client, items=items, form=form,
        patient_scoped=any(s.startswith("patient/") for s in scope_to_list(scope) or [])))
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
            flash("That app has no access to revoke.", "error")
        else:
            db.session.commit()
            flash(f"Access withdrawn ({count} token{'s' if count != 1 else ''} revoked).", "success")
    return redirect(url_for("oauth.connected_apps"))


# ---------------------------------------------------------------- admin: clients


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ClientForm(AppForm):
    name = StringField("App name", validators=[DataRequired(), Length(max=120)])
    client_type = SelectField("Type", choices=[("confidential", "Confidential (server-side, has a secret)"),
                                               ("public", "Public (mobile or browser app, PKCE, no secret)")])
    redirect_uris = TextAreaField("Redirect URIs (one per line, matched exactly)", validators=[Length(max=4000)])
    scope = TextAreaField("Allowed scopes (space or line separated)", validators=[DataRequired(), Length(max=4000)])
    grants = MultiCheckboxField("Grants", choices=[(g, g) for g in service.GRANTS])
    service_user_id = SelectField("Service account (client credentials only)",
                                  coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    active = BooleanField("Active", default=True)


@bp.route("/admin/oauth-clients", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def clients() -> Response | tuple[str, int]:
    """List registered apps and register a new one."""
    from app.auth import service as accounts

    form = ClientForm()
    form.service_user_id.choices = [("", "— none —")] + [
        (str(u.id), f"{u.full_name} ({u.role.label})") for u in accounts.list_users(by=current_user)
        if u.role is not Role.PATIENT and u.active]
    status = 200
    secret = None
    created = None
    if form.validate_on_submit():
        data = service.ClientInput(
            name=form.name.data or "", is_public=form.client_type.data == "public",
            redirect_uris=(form.redirect_uris.data or "").split(), scope=" ".join((form.scope.data or "").split()),
            grants=list(form.grants.data or []), service_user_id=form.service_user_id.data)
        try:
            created, secret = service.register_client(data, by=current_user)
        except AppError as exc:
            db.rollback()
            form.apply_error(exc)
            status = exc.status
        else:
            db.session.commit()
            form = None
    elif request.method == "POST":
        status = 422
    items = service.list_clients(by=current_user)
    db.session.commit()
    return render_template("auth/oauth_clients.html", clients=items, form=form, created=created, secret=secret,
                           confirm=ConfirmForm()), status


@bp.post("/admin/oauth-clients/<int:client_pk>/rotate-secret")
@roles_required(Role.ADMIN)
def rotate_secret(client_pk: int) -> tuple[str, int] | Response:
    """Issue a new client secret (shown once)."""
    form = ConfirmForm()
    if not form.validate_on_submit():
        return redirect(url_for("oauth.clients"))
    client = service.get_client(client_pk, by=current_user)
    secret = service.rotate_secret(client, by=current_user)
    db.session.commit()
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
        db.session.commit()
        flash(f"{client.name} is now {'active' if client.active else 'disabled'}.", "success")
    return redirect(url_for("oauth.clients"))


add_nav("Connected apps", "oauth.connected_apps", *Role, account=True)
add_nav("OAuth apps", "oauth.clients", Role.ADMIN)
