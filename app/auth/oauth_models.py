"""OAuth2 / OpenID Connect rows (clients, codes, tokens, consents) and multi-factor sign-in secrets.

Secrets never sit in the database in the clear: client secrets, codes, access and refresh tokens and
recovery codes are stored as SHA-256 digests (they are long random strings, so a fast hash is enough);
the TOTP seed is encrypted with a key derived from ``SECRET_KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
import sqlalchemy.orm as so
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, list_to_scope, scope_to_list
from authlib.oidc.core import AuthorizationCodeMixin

from app.auth.models import User
from app.db import Base, IntPk, TimestampMixin, UtcTimestamp, utcnow


def _without_loopback_port(uri: str) -> str | None:
    """``uri`` with its port removed when it is an http loopback address (native apps pick a free port)."""
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def digest(secret: str) -> str:
    """SHA-256 hex digest of a random token (for storage and lookup)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class OAuthClient(ClientMixin, TimestampMixin, Base):
    """A registered application. Public clients (mobile, single-page) have no secret and must use PKCE."""

    __tablename__ = "oauth_client"

    id: so.Mapped[IntPk]
    client_id: so.Mapped[str] = so.mapped_column(sa.String(48), unique=True)
    client_secret_hash: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    secret_rotated_at: so.Mapped[datetime | None]
    name: so.Mapped[str] = so.mapped_column(sa.String(120))
    is_public: so.Mapped[bool] = so.mapped_column(default=False)
    redirect_uris: so.Mapped[list[str]] = so.mapped_column(sa.JSON, default=list)
    allowed_scope: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    allowed_grants: so.Mapped[list[str]] = so.mapped_column(sa.JSON, default=list)
    # Browser origins (scheme://host[:port]) whose scripts may call the token, userinfo, discovery and API
    # endpoints (CORS); nothing is opened to an origin no client registered.
    web_origins: so.Mapped[list[str]] = so.mapped_column(sa.JSON, default=list)
    # "none" (public), "client_secret_basic" or "private_key_jwt" (RFC 7523, keys in ``jwks``).
    auth_method: so.Mapped[str] = so.mapped_column(sa.String(40), default="client_secret_basic")
    jwks: so.Mapped[dict[str, object] | None] = so.mapped_column(sa.JSON)
    registered_dynamically: so.Mapped[bool] = so.mapped_column(default=False)
    # The account a client-credentials (machine) client acts as; its role and facility bound what it can do.
    service_user_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    active: so.Mapped[bool] = so.mapped_column(default=True)
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))

    service_user: so.Mapped[User | None] = so.relationship(foreign_keys=[service_user_id])

    # ---- Authlib ClientMixin
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        from app.auth.scopes import covers

        allowed = scope_to_list(self.allowed_scope) or []
        return list_to_scope([s for s in scope_to_list(scope) if covers(allowed, s)])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match, except that a loopback URI matches on any port (RFC 8252 §7.3)."""
        if redirect_uri in self.redirect_uris:
            return True
        wanted = _without_loopback_port(redirect_uri)
        return wanted is not None and any(_without_loopback_port(u) == wanted for u in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.client_secret_hash or not client_secret:
            return False
        return hmac.compare_digest(self.client_secret_hash, digest(client_secret))

    @property
    def token_endpoint_auth_method(self) -> str:
        return "none" if self.is_public else self.auth_method

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.is_public:
            return method == "none"
        if self.auth_method == "private_key_jwt":
            return method == "private_key_jwt"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.allowed_grants

    def check_grant_type(self, grant_type: str) -> bool:
        return self.active and grant_type in self.allowed_grants


class OAuthAuthorizationCode(AuthorizationCodeMixin, Base):
    """A one-time code; kept after use (``used_at``) so that a replay can revoke what it produced."""

    __tablename__ = "oauth_authorization_code"

    id: so.Mapped[IntPk]
    code_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    client_id: so.Mapped[str] = so.mapped_column(sa.String(48), index=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"))
    redirect_uri: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    scope: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    nonce: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    code_challenge: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    code_challenge_method: so.Mapped[str | None] = so.mapped_column(sa.String(8))
    auth_time: so.Mapped[int]
    amr: so.Mapped[str | None] = so.mapped_column(sa.String(40))  # how the person signed in: "pwd otp"
    created_at: so.Mapped[UtcTimestamp]
    expires_at: so.Mapped[datetime]
    used_at: so.Mapped[datetime | None]
    family_id: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    # SMART launch context chosen at consent (the patient picker for staff) and the resource server asked for.
    patient_id: so.Mapped[int | None]
    audience: so.Mapped[str | None] = so.mapped_column(sa.Text)

    user: so.Mapped[User] = so.relationship()

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str | None:
        return None

    def get_amr(self) -> list[str]:
        return self.amr.split() if self.amr else []


class OAuthToken(TokenMixin, Base):
    """An access token and (maybe) its refresh token. Tokens from one authorisation share ``family_id``."""

    __tablename__ = "oauth_token"

    id: so.Mapped[IntPk]
    client_id: so.Mapped[str] = so.mapped_column(sa.String(48), index=True)
    user_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"),
                                                      index=True)
    grant_type: so.Mapped[str] = so.mapped_column(sa.String(40))
    scope: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    access_token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    refresh_token_hash: so.Mapped[str | None] = so.mapped_column(sa.String(64), unique=True)
    family_id: so.Mapped[str] = so.mapped_column(sa.String(32), index=True)
    # The user's session_epoch at issue: a password reset or deactivation ends app access as it ends sessions.
    user_epoch: so.Mapped[int] = so.mapped_column(default=0)
    issued_at: so.Mapped[UtcTimestamp]
    expires_in: so.Mapped[int]
    refresh_expires_at: so.Mapped[datetime | None]
    access_revoked_at: so.Mapped[datetime | None]
    refresh_revoked_at: so.Mapped[datetime | None]
    revoke_reason: so.Mapped[str | None] = so.mapped_column(sa.String(40))
    # The patient whose record the token reaches (SMART launch context) and the one resource server
    # (RFC 8707 ``resource`` / SMART ``aud``) that accepts it; None: this server's own JSON API.
    patient_id: so.Mapped[int | None]
    audience: so.Mapped[str | None] = so.mapped_column(sa.Text)

    user: so.Mapped[User | None] = so.relationship()

    presented = "access_token"
    """Which of the two tokens a lookup was made with (not stored): introspection and revocation act on it."""

    @property
    def audiences(self) -> list[str]:
        return (self.audience or "").split()

    # ---- Authlib TokenMixin
    def check_client(self, client: OAuthClient) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    @property
    def expires_at(self) -> datetime:
        return self.issued_at + timedelta(seconds=self.expires_in)

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()

    def is_refresh_expired(self) -> bool:
        return self.refresh_expires_at is not None and self.refresh_expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.access_revoked_at is not None

    def get_user(self) -> User | None:
        return self.user

    def get_client(self) -> OAuthClient | None:
        from app import db

        return db.session.scalar(sa.select(OAuthClient).where(OAuthClient.client_id == self.client_id))

    @property
    def scopes(self) -> list[str]:
        return scope_to_list(self.scope) or []


class OAuthConsent(Base):
    """What a person allowed an app to do; listed on "Connected apps" and revocable there."""

    __tablename__ = "oauth_consent"

    id: so.Mapped[IntPk]
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    client_id: so.Mapped[str] = so.mapped_column(sa.String(48))
    scope: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    granted_at: so.Mapped[UtcTimestamp]
    revoked_at: so.Mapped[datetime | None]

    __table_args__ = (sa.UniqueConstraint("user_id", "client_id", name="uq_oauth_consent_user_client"),)


class OAuthAssertionJti(Base):
    """The ``jti`` of each client assertion (private_key_jwt) until it expires, so none is accepted twice."""

    __tablename__ = "oauth_assertion_jti"

    id: so.Mapped[IntPk]
    client_id: so.Mapped[str] = so.mapped_column(sa.String(48))
    jti: so.Mapped[str] = so.mapped_column(sa.String(255))
    expires_at: so.Mapped[datetime] = so.mapped_column(index=True)

    __table_args__ = (sa.UniqueConstraint("client_id", "jti", name="uq_oauth_assertion_jti_client_id"),)


class MfaFactor(Base):
    """A person's TOTP enrolment. ``last_step`` stops a code being replayed within its 30-second window."""

    __tablename__ = "mfa_factor"

    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"),
                                               primary_key=True)
    secret_encrypted: so.Mapped[str] = so.mapped_column(sa.String(255))
    confirmed_at: so.Mapped[datetime | None]
    last_step: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    failed_attempts: so.Mapped[int] = so.mapped_column(default=0)
    locked_until: so.Mapped[datetime | None]
    created_at: so.Mapped[UtcTimestamp]


class MfaRecoveryCode(Base):
    """A single-use recovery code, hashed."""

    __tablename__ = "mfa_recovery_code"

    id: so.Mapped[IntPk]
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    code_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    used_at: so.Mapped[datetime | None]

