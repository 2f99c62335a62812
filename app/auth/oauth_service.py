"""OAuth client registration (admin) and the apps a person has authorised (consents, revocation)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import scopes as smart
from app.auth.models import Role, User
from app.auth.oauth_models import OAuthClient, OAuthConsent, OAuthToken, digest
from app.errors import Forbidden, NotFound, ValidationFailed

GRANTS = ("authorization_code", "refresh_token", "client_credentials")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _require_admin(by: User, action: str) -> None:
    if by.role is not Role.ADMIN:
        audit.record(action, by=by, outcome=Outcome.DENIED, resource_type="OAuthClient")
        raise Forbidden("Only administrators can manage OAuth clients.")


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


@dataclass
class ClientInput:
    name: str
    is_public: bool
    redirect_uris: list[str]
    scope: str
    grants: list[str]
    service_user_id: int | None = None


def _validate(data: ClientInput) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
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
    data.redirect_uris = [u.strip() for u in data.redirect_uris if u.strip()]
    if errors := _validate(data):
        raise ValidationFailed("Some fields need attention.", errors=errors)
    secret = None if data.is_public else secrets.token_urlsafe(32)
    client = OAuthClient(
        client_id=secrets.token_urlsafe(18), client_secret_hash=digest(secret) if secret else None,
        name=data.name.strip(), is_public=data.is_public, redirect_uris=data.redirect_uris,
        allowed_scope=" ".join(dict.fromkeys(data.scope.split())), allowed_grants=list(data.grants),
        service_user_id=data.service_user_id if "client_credentials" in data.grants else None,
        created_by_id=by.id, secret_rotated_at=db.utcnow() if secret else None)
    db.session.add(client)
    db.session.flush()
    audit.record("oauth.client.create", by=by, resource_type="OAuthClient", resource_id=client.client_id,
                 detail={"public": data.is_public, "grants": data.grants})
    return client, secret


def get_client(client_pk: int, *, by: User) -> OAuthClient:
    _require_admin(by, "oauth.client.read")
    client = db.session.get(OAuthClient, client_pk)
    if client is None:
        raise NotFound("No OAuth client with that id.")
    return client


def list_clients(*, by: User) -> Sequence[OAuthClient]:
    _require_admin(by, "oauth.client.list")
    return list(db.session.scalars(sa.select(OAuthClient).order_by(OAuthClient.name)))


def rotate_secret(client: OAuthClient, *, by: User) -> str:
    """Issue a new secret; the old one stops working at once."""
    _require_admin(by, "oauth.client.rotate_secret")
    if client.is_public:
        raise ValidationFailed("Public clients have no secret.")
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
        raise audit.deny("oauth.consent.revoke", by=user, resource_type="OAuthClient", resource_id=client_id)
    now = db.utcnow()
    consent.revoked_at = now
    result = db.session.execute(
        sa.update(OAuthToken).where(OAuthToken.user_id == user.id, OAuthToken.client_id == client_id,
                                    sa.or_(OAuthToken.access_revoked_at.is_(None),
                                           OAuthToken.refresh_revoked_at.is_(None)))
        .values(access_revoked_at=now, refresh_revoked_at=now, revoke_reason="consent withdrawn"))
    audit.record("oauth.consent.revoke", by=user, resource_type="OAuthClient", resource_id=client_id)
    return result.rowcount or 0  # type: ignore[attr-defined]
