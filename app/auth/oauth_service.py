"""OAuth client registration (admin) and the apps a person has authorised (consents, revocation)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask_babel import gettext
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app import db
from app.audit import service as audit
from app.auth import scopes as smart
from app.auth.models import Role, User
from app.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken, digest
from app.catalogue import N_
from app.errors import Forbidden, NotFound, ValidationFailed

GRANTS = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS = ("client_secret_basic", "private_key_jwt")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _require_admin(by: User, action: str) -> None:
    if by.role is not Role.ADMIN:
        audit.forbid(action, by=by, resource_type="OAuthClient",
                     error=Forbidden("Only administrators can manage OAuth clients."))


def redirect_uri_problem(uri: str, *, is_public: bool) -> str | None:
    """Why ``uri`` cannot be registered (RFC 8252 / RFC 9700 rules), or None."""
    parts = urlsplit(uri)
    if not parts.scheme or uri != uri.strip() or "*" in uri:
        return "Use an absolute URI without wildcards."
    if parts.fragment or "#" in uri:
        return "A redirect URI cannot have a fragment."
    if parts.scheme == "https" and parts.netloc:
        return None
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return None
    if is_public and "." in parts.scheme and parts.scheme not in ("http", "https"):
        return None  # private-use scheme of a native app (reverse domain name)
    return "Use https, http on a loopback address, or (public apps) a reverse-domain private scheme."


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not a browser origin that can be allowed (scheme://host[:port], https or loopback)."""
    parts = urlsplit(origin)
    if origin != f"{parts.scheme}://{parts.netloc}" or not parts.hostname or "*" in origin:
        return "Give an origin only: scheme://host[:port], with no path or wildcard."
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return None
    return "Use https, or http on a loopback address."


def origin_allowed(origin: str) -> bool:
    """Whether an active client registered ``origin`` as one of its web origins (CORS)."""
    if origin_problem(origin):
        return False
    rows = db.session.scalars(sa.select(OAuthClient.web_origins).where(OAuthClient.active.is_(True)))
    return any(origin in (origins or []) for origins in rows)


@dataclass
class ClientInput:
    name: str
    is_public: bool
    redirect_uris: list[str]
    scope: str
    grants: list[str]
    service_user_id: int | None = None
    web_origins: list[str] = field(default_factory=list)
    auth_method: str = "client_secret_basic"
    jwks: dict[str, Any] | None = None


def _jwks_problem(jwks: dict[str, Any] | None) -> str | None:
    if not jwks:
        return "private_key_jwt needs the app's public keys (a JWK set)."
    try:
        keys = KeySet.import_key_set(jwks)
    except (ValueError, TypeError, KeyError, JoseError):
        return "The JWK set could not be read."
    if any(k.is_private for k in keys.keys):
        return "Give public keys only: the JWK set contains a private key."
    return None


def _validate(data: ClientInput) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    data.redirect_uris = [u.strip() for u in data.redirect_uris if u.strip()]
    data.web_origins = list(dict.fromkeys(o.strip().rstrip("/") for o in data.web_origins if o.strip()))
    for origin in data.web_origins:
        if problem := origin_problem(origin):
            errors.setdefault("web_origins", []).append(f"{origin[:100]}: {problem}")
    if data.is_public:
        data.auth_method, data.jwks = "none", None
    elif data.auth_method not in AUTH_METHODS:
        errors["auth_method"] = ["Choose client_secret_basic or private_key_jwt."]
    elif data.auth_method == "private_key_jwt" and (problem := _jwks_problem(data.jwks)):
        errors["jwks"] = [problem]
    if not data.name.strip() or len(data.name) > 120:
        errors["name"] = ["Enter a name of 1 to 120 characters."]
    unknown_grants = [g for g in data.grants if g not in GRANTS]
    if unknown_grants or not data.grants:
        errors["grants"] = ["Choose at least one of: " + ", ".join(GRANTS) + "."]
    if data.is_public and "client_credentials" in data.grants:
        errors["grants"] = ["Public clients cannot use client credentials."]
    if "authorization_code" in data.grants and not data.redirect_uris:
        errors["redirect_uris"] = ["The authorization code grant needs at least one redirect URI."]
    for uri in data.redirect_uris:
        if problem := redirect_uri_problem(uri, is_public=data.is_public):
            errors.setdefault("redirect_uris", []).append(f"{uri[:100]}: {problem}")
    bad = [s for s in data.scope.split() if not smart.is_known(s)]
    if bad:
        errors["scope"] = [f"Unknown scope: {', '.join(bad[:5])}."]
    if "client_credentials" in data.grants:
        user = db.session.get(User, data.service_user_id) if data.service_user_id else None
        if user is None or user.role is Role.PATIENT:
            errors["service_user_id"] = ["Machine clients act as a staff service account: choose one."]
    return errors


def register_client(data: ClientInput, *, by: User) -> tuple[OAuthClient, str | None]:
    """Register an app; returns it and its secret (confidential clients only; shown once, stored hashed).

    :raises ValidationFailed: a field is wrong. :raises Forbidden: not an admin.
    """
    _require_admin(by, "oauth.client.create")
    return _create(data, by=by)


def _create(data: ClientInput, *, by: User | None, dynamic: bool = False) -> tuple[OAuthClient, str | None]:
    if errors := _validate(data):
        raise ValidationFailed("Some fields need attention.", errors=errors)
    secret = secrets.token_urlsafe(32) if data.auth_method == "client_secret_basic" else None
    client = OAuthClient(
        client_id=secrets.token_urlsafe(18), client_secret_hash=digest(secret) if secret else None,
        name=data.name.strip(), is_public=data.is_public, created_by_id=by.id if by else None,
        secret_rotated_at=db.utcnow() if secret else None, registered_dynamically=dynamic)
    _apply(client, data)
    db.session.add(client)
    db.session.flush()
    audit.record("oauth.client.create", by=by, resource_type="OAuthClient", resource_id=client.client_id,
                 detail={"public": data.is_public, "grants": data.grants, "dynamic": dynamic})
    return client, secret


def _apply(client: OAuthClient, data: ClientInput) -> None:
    client.name = data.name.strip()
    client.redirect_uris = data.redirect_uris
    client.web_origins = data.web_origins
    client.allowed_scope = " ".join(dict.fromkeys(data.scope.split()))
    client.allowed_grants = list(data.grants)
    client.service_user_id = data.service_user_id if "client_credentials" in data.grants else None
    client.auth_method = data.auth_method
    client.jwks = data.jwks if data.auth_method == "private_key_jwt" else None


def update_client(client: OAuthClient, data: ClientInput, *, by: User) -> OAuthClient:
    """Change an app's name, redirect URIs, origins, scopes, grants or keys; its type cannot change.

    :raises ValidationFailed: a field is wrong. :raises Forbidden: not an admin.
    """
    _require_admin(by, "oauth.client.update")
    data.is_public = client.is_public
    if errors := _validate(data):
        raise ValidationFailed("Some fields need attention.", errors=errors)
    if data.auth_method == "client_secret_basic" and client.auth_method != "client_secret_basic":
        raise ValidationFailed(N_("An app that signs its requests cannot switch to a secret."),
                               errors={"auth_method": [N_("Register the app again to give it a secret.")]})
    _apply(client, data)
    if client.auth_method != "client_secret_basic":
        client.client_secret_hash = None  # a client that signs its requests keeps no shared secret
    db.session.flush()
    audit.record("oauth.client.update", by=by, resource_type="OAuthClient", resource_id=client.client_id,
                 detail={"grants": client.allowed_grants, "redirect_uris": len(client.redirect_uris),
                         "web_origins": client.web_origins})
    return client


def register_dynamic(metadata: dict[str, Any]) -> OAuthClient:
    """RFC 7591 registration of a public SMART app (PKCE, no secret, patient/ and identity scopes only).

    :raises ValidationFailed: the metadata asks for something a self-registered app cannot have.
    """
    def strings(name: str) -> list[str]:
        value = metadata.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationFailed(gettext("'%(name)s' must be a list of strings.", name=name),
                                   errors={name: [gettext("Not a list of strings.")]})
        return value

    method = metadata.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ValidationFailed(N_("Only public clients (token_endpoint_auth_method 'none') can register themselves."),
                               errors={"token_endpoint_auth_method": [N_("Use 'none'.")]})
    grants = strings("grant_types") or ["authorization_code"]
    if not set(grants) <= {"authorization_code", "refresh_token"} or metadata.get("response_types", ["code"]) != [
            "code"]:
        raise ValidationFailed(N_("Self-registered apps use the authorization code grant (and refresh) only."),
                               errors={"grant_types": [N_("Use authorization_code and refresh_token.")]})
    scope = str(metadata.get("scope") or "openid fhirUser launch/patient patient/*.rs")
    for item in scope.split():
        parsed = smart.parse(item)
        if parsed is not None and parsed.context != "patient":
            raise ValidationFailed(gettext("A self-registered app may only ask for patient/ scopes, not '%(scope)s'.",
                                           scope=item[:60]),
                                   errors={"scope": [N_("Use patient/ scopes.")]})
    name = metadata.get("client_name")
    data = ClientInput(name=name if isinstance(name, str) and name.strip() else "Unnamed app", is_public=True,
                       redirect_uris=strings("redirect_uris"), scope=scope, grants=grants, auth_method="none")
    client, _secret = _create(data, by=None, dynamic=True)
    return client


def get_client(client_pk: int, *, by: User) -> OAuthClient:
    _require_admin(by, "oauth.client.read")
    client = db.session.get(OAuthClient, client_pk)
    if client is None:
        raise NotFound("No OAuth client with that id.")
    return client


def find_client(client_id: str, *, by: User) -> OAuthClient:
    """:raises NotFound: no client with that client_id."""
    _require_admin(by, "oauth.client.read")
    client = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == client_id))
    if client is None:
        raise NotFound("No OAuth client with that client_id.")
    return client


def list_clients(*, by: User) -> Sequence[OAuthClient]:
    _require_admin(by, "oauth.client.list")
    return list(db.session.scalars(sa.select(OAuthClient).order_by(OAuthClient.name)))


def rotate_secret(client: OAuthClient, *, by: User) -> str:
    """Issue a new secret; the old one stops working at once."""
    _require_admin(by, "oauth.client.rotate_secret")
    if client.is_public or client.auth_method != "client_secret_basic":
        raise ValidationFailed("This app has no secret: it is public or signs its requests with its own key.")
    secret = secrets.token_urlsafe(32)
    client.client_secret_hash = digest(secret)
    client.secret_rotated_at = db.utcnow()
    audit.record("oauth.client.rotate_secret", by=by, resource_type="OAuthClient", resource_id=client.client_id)
    return secret


def set_active(client: OAuthClient, active: bool, *, by: User) -> None:
    """Deactivating a client also revokes every token it holds."""
    _require_admin(by, "oauth.client.update")
    client.active = active
    if not active:
        now = db.utcnow()
        db.session.execute(sa.update(OAuthToken).where(OAuthToken.client_id == client.client_id,
                                                       OAuthToken.access_revoked_at.is_(None))
                           .values(access_revoked_at=now, refresh_revoked_at=now, revoke_reason="client disabled"))
    audit.record("oauth.client.activate" if active else "oauth.client.deactivate", by=by,
                 resource_type="OAuthClient", resource_id=client.client_id)


def consent_covers(user: User, client_id: str, scope: str) -> bool:
    """Whether ``user`` already allowed ``client_id`` everything ``scope`` asks (and has not withdrawn it)."""
    consent = db.session.scalar(sa.select(OAuthConsent).where(
        OAuthConsent.user_id == user.id, OAuthConsent.client_id == client_id, OAuthConsent.revoked_at.is_(None)))
    return consent is not None and smart.all_covered(consent.scope.split(), scope.split())


def record_consent(user: User, client: OAuthClient, scope: str) -> None:
    consent = db.session.scalar(sa.select(OAuthConsent).where(OAuthConsent.user_id == user.id,
                                                              OAuthConsent.client_id == client.client_id))
    if consent is None:
        consent = OAuthConsent(user_id=user.id, client_id=client.client_id, scope=scope, granted_at=db.utcnow())
        db.session.add(consent)
    else:
        merged = dict.fromkeys([*consent.scope.split(), *scope.split()]) if consent.revoked_at is None else \
            dict.fromkeys(scope.split())
        consent.scope = " ".join(merged)
        consent.granted_at = db.utcnow()
        consent.revoked_at = None
    audit.record("oauth.consent", by=user, resource_type="OAuthClient", resource_id=client.client_id,
                 detail={"scope": scope})


@dataclass(frozen=True)
class ConnectedApp:
    client_id: str
    name: str
    scopes: list[str]
    granted_at: object
    live_tokens: int


def connected_apps(user: User) -> list[ConnectedApp]:
    rows = db.session.execute(
        sa.select(OAuthConsent, OAuthClient.name).join(OAuthClient, OAuthClient.client_id == OAuthConsent.client_id)
        .where(OAuthConsent.user_id == user.id, OAuthConsent.revoked_at.is_(None))
        .order_by(OAuthConsent.granted_at.desc())).all()
    apps = []
    for consent, name in rows:
        live = db.session.scalar(sa.select(sa.func.count()).select_from(OAuthToken).where(
            OAuthToken.user_id == user.id, OAuthToken.client_id == consent.client_id,
            sa.or_(OAuthToken.access_revoked_at.is_(None), OAuthToken.refresh_revoked_at.is_(None)))) or 0
        apps.append(ConnectedApp(consent.client_id, name, consent.scope.split(), consent.granted_at, live))
    return apps


def revoke_app(user: User, client_id: str) -> int:
    """Withdraw consent and revoke every token ``user`` gave this app; returns the number of tokens revoked."""
    consent = db.session.scalar(sa.select(OAuthConsent).where(OAuthConsent.user_id == user.id,
                                                              OAuthConsent.client_id == client_id,
                                                              OAuthConsent.revoked_at.is_(None)))
    if consent is None:
        audit.forbid("oauth.consent.revoke", by=user, resource_type="OAuthClient", resource_id=client_id)
    now = db.utcnow()
    consent.revoked_at = now
    result = db.session.execute(
        sa.update(OAuthToken).where(OAuthToken.user_id == user.id, OAuthToken.client_id == client_id,
                                    sa.or_(OAuthToken.access_revoked_at.is_(None),
                                           OAuthToken.refresh_revoked_at.is_(None)))
        .values(access_revoked_at=now, refresh_revoked_at=now, revoke_reason="consent withdrawn"))
    audit.record("oauth.consent.revoke", by=user, resource_type="OAuthClient", resource_id=client_id)
    return result.rowcount or 0  # type: ignore[attr-defined]
