"""Service credentials for machine peers (a clinic's PACS syncing over DICOMweb): long-lived, revocable, least
privilege, audited.

A PACS cannot sign in with a second factor or renew an OAuth token every hour, and most speak only HTTP Basic
to a DICOMweb server. An admin issues each peer its own key id and secret (HTTP Basic user name and password,
over TLS), for its own service account at one clinic, with only the rights it needs: search and retrieve
(``system/ImagingStudy.rs``), store (``system/ImagingStudy.c``) or both. The peer's account is what the audit
trail names for every study it reads or sends; revoking the credential ends its access at the next request.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, g, request
from werkzeug.wrappers import Response

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import scopes as smart
from app.auth.models import Role, User
from app.auth.oauth_models import digest
from app.db import Base, IntPk, UtcTimestamp, utcnow
from app.errors import Forbidden, NotFound, ValidationFailed, problem_response

SEARCH_RETRIEVE = "system/ImagingStudy.rs"
STORE = "system/ImagingStudy.c"
ACCESS = {"read": SEARCH_RETRIEVE, "store": STORE}
ACCESS_LABELS = {"read": "Search and retrieve studies", "store": "Send (store) studies"}
LAST_USED_RESOLUTION = timedelta(minutes=1)
PATH_PREFIX = "/dicomweb"
KEY_PREFIX = "peer_"


class ServiceCredential(Base):
    """One peer's HTTP Basic credential; the secret is kept only as a SHA-256 digest (it is 256 random bits)."""

    __tablename__ = "service_credential"

    id: so.Mapped[IntPk]
    name: so.Mapped[str] = so.mapped_column(sa.String(120))
    key_id: so.Mapped[str] = so.mapped_column(sa.String(40), unique=True)
    secret_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    scope: so.Mapped[str] = so.mapped_column(sa.Text)
    # The peer's own account: its role and clinic bound what it sees; the audit trail names it.
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    created_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    created_at: so.Mapped[UtcTimestamp]
    last_used_at: so.Mapped[datetime | None]
    revoked_at: so.Mapped[datetime | None]

    user: so.Mapped[User] = so.relationship(foreign_keys=[user_id], lazy="joined")

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()

    @property
    def access_labels(self) -> list[str]:
        return [ACCESS_LABELS[k] for k, s in ACCESS.items() if s in self.scopes]


@dataclass
class Issued:
    credential: ServiceCredential
    secret: str  # shown once, never stored


def _require_admin(by: User, action: str) -> None:
    if by.role is not Role.ADMIN:
        audit.forbid(action, by=by, resource_type="ServiceCredential",
                     error=Forbidden("Only administrators manage peer credentials."))


def issue(*, name: str, facility_id: int | None, access: list[str], by: User) -> Issued:
    """Create a peer's service account at a clinic and its credential.

    :raises Forbidden: the actor is not an admin.
    :raises ValidationFailed: no name, no clinic, or no access chosen.
    """
    from app.auth import service as accounts

    _require_admin(by, "auth.service_credential.issue")
    name = name.strip()
    errors: dict[str, list[str]] = {}
    if not name or len(name) > 120:
        errors["name"] = ["Enter a name of 1 to 120 characters, e.g. the PACS and its clinic."]
    if not access or any(a not in ACCESS for a in access):
        errors["access"] = ["Choose what the peer may do."]
    if facility_id is None:
        errors["facility_id"] = ["Choose the clinic whose studies the peer works with."]
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    key_id = KEY_PREFIX + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    user = accounts.create_user(email=f"{key_id}@peers.invalid", full_name=f"DICOMweb peer: {name}"[:200],
                                password=secrets.token_urlsafe(32), role=Role.CLINIC_STAFF,
                                facility_id=facility_id, by=by, must_change_password=False)
    credential = ServiceCredential(name=name, key_id=key_id, secret_hash=digest(secret), user_id=user.id,
                                   scope=" ".join(ACCESS[a] for a in ACCESS if a in access), created_by_id=by.id)
    db.session.add(credential)
    db.session.flush()
    audit.record("auth.service_credential.issue", by=by, resource_type="ServiceCredential",
                 resource_id=credential.id, detail={"key_id": key_id, "scope": credential.scope})
    return Issued(credential, secret)


def list_credentials(*, by: User) -> list[ServiceCredential]:
    _require_admin(by, "auth.service_credential.list")
    return list(db.session.scalars(sa.select(ServiceCredential).order_by(ServiceCredential.revoked_at.is_not(None),
                                                                         ServiceCredential.id.desc())))


def revoke(credential_id: int, *, by: User) -> ServiceCredential:
    """End a peer's access: the credential stops working and its account is deactivated.

    :raises NotFound: no such credential.
    """
    _require_admin(by, "auth.service_credential.revoke")
    credential = db.session.get(ServiceCredential, credential_id)
    if credential is None:
        raise NotFound("No peer credential with that id.")
    if credential.revoked_at is None:
        credential.revoked_at = utcnow()
        credential.user.active = False
        credential.user.session_epoch += 1
        audit.record("auth.service_credential.revoke", by=by, resource_type="ServiceCredential",
                     resource_id=credential.id, detail={"key_id": credential.key_id})
    return credential


# ---------------------------------------------------------------- authenticating a peer's request


def _refuse(status: int, reason: str, *, key_id: str | None, by: User | None = None) -> Response:
    audit.record("auth.service_credential.use", by=by, outcome=Outcome.DENIED, resource_type="ServiceCredential",
                 detail={"key_id": (key_id or "")[:40], "reason": reason, "path": request.path[:200]},
                 actor_name=None if by else "unknown peer")
    db.session.commit()
    headers = {"WWW-Authenticate": 'Basic realm="dicomweb", charset="UTF-8"'} if status == 401 else {}
    title = "The peer credential is not valid" if status == 401 else "The peer credential does not allow this"
    return problem_response(status, "invalid-credential" if status == 401 else "insufficient-scope", title,
                            reason, headers=headers)


def authenticate_peer() -> Response | None:
    """Before a DICOMweb request: a peer's HTTP Basic credential makes its account the current user, once the
    credential is live and its scope allows this request. Requests without Basic credentials pass untouched."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    key_id = auth.username or ""
    if current_app.config.get("ENV") == "production" and not request.is_secure:
        return _refuse(401, "Peer credentials are accepted over HTTPS only.", key_id=key_id)
    credential = db.session.scalar(sa.select(ServiceCredential).where(ServiceCredential.key_id == key_id[:40]))
    presented = digest(auth.password or "")
    if credential is None or not hmac.compare_digest(credential.secret_hash, presented):
        return _refuse(401, "Unknown key id or wrong secret.", key_id=key_id)
    if credential.revoked_at is not None or not credential.user.active:
        return _refuse(401, "This peer credential was revoked.", key_id=key_id)
    permission = smart.required_permission(request.method, request.path, PATH_PREFIX)
    if not smart.grants(credential.scopes, "ImagingStudy", permission):
        needed = smart.needed_scope("ImagingStudy", permission, "system")
        return _refuse(403, f"This request needs the scope {needed}.", key_id=key_id, by=credential.user)
    now = utcnow()
    if credential.last_used_at is None or now - credential.last_used_at >= LAST_USED_RESOLUTION:
        db.session.execute(sa.update(ServiceCredential).where(ServiceCredential.id == credential.id)
                           .values(last_used_at=now))
    g.service_credential = credential
    return None


def current_peer() -> ServiceCredential | None:
    """The peer credential this request was authenticated by: its account is the request's ``current_user``."""
    return g.get("service_credential")
