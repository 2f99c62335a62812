"""Multi-factor sign-in with TOTP (RFC 6238, pyotp) and single-use recovery codes.

Required for the roles in ``MFA_REQUIRED_ROLES``; optional for everyone else. The TOTP seed is encrypted
at rest with a key derived from ``SECRET_KEY``; recovery codes are stored hashed. Wrong codes count
towards a per-account lockout (``MFA_MAX_ATTEMPTS`` within ``LOCKOUT_MINUTES``), and every enrolment,
verification, failure and lockout is audited.
"""

from __future__ import annotations

import base64
import io
import secrets
import time
from datetime import timedelta

import pyotp
import qrcode
import qrcode.image.svg
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from flask_babel import gettext

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import User
from app.auth.oauth_models import MfaFactor, MfaRecoveryCode, digest
from app.errors import Conflict, TooManyRequests, Unauthorized, ValidationFailed
from app.i18n import format_when

ISSUER = "Town Health"
RECOVERY_CODES = 10


class MfaLocked(TooManyRequests):
    slug, title = "mfa-locked", "Too many wrong codes"


def _fernet() -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hospital-mfa",
               info=b"totp-seed").derive(current_app.config["SECRET_KEY"].encode())
    return Fernet(base64.urlsafe_b64encode(key))


def is_required(user: User) -> bool:
    return user.role.value in current_app.config.get("MFA_REQUIRED_ROLES", ())


def factor(user: User) -> MfaFactor | None:
    return db.session.get(MfaFactor, user.id)


def is_enrolled(user: User) -> bool:
    f = factor(user)
    return f is not None and f.confirmed_at is not None


def _secret(f: MfaFactor) -> str:
    try:
        return _fernet().decrypt(f.secret_encrypted.encode()).decode()
    except InvalidToken as exc:  # SECRET_KEY changed: the person must enrol again
        raise Conflict("Your authenticator enrolment is no longer valid; ask an administrator to reset it.") from exc


def start_enrolment(user: User) -> str:
    """Create (or replace an unconfirmed) TOTP seed and return it; confirmed enrolments are left alone.

    :raises Conflict: the account already has a confirmed authenticator.
    """
    f = factor(user)
    if f is not None and f.confirmed_at is not None:
        raise Conflict("An authenticator is already set up for this account.")
    seed = pyotp.random_base32()
    encrypted = _fernet().encrypt(seed.encode()).decode()
    if f is None:
        db.session.add(MfaFactor(user_id=user.id, secret_encrypted=encrypted))
    else:
        f.secret_encrypted = encrypted
        f.last_step = 0
    db.session.flush()
    return seed


def pending_secret(user: User) -> str | None:
    f = factor(user)
    return _secret(f) if f is not None and f.confirmed_at is None else None


def provisioning_uri(user: User, seed: str) -> str:
    return pyotp.TOTP(seed).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_data_uri(uri: str) -> str:
    """An SVG QR code as a data: URI (the CSP allows data: images, not inline scripts)."""
    img = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buf = io.BytesIO()
    img.save(buf)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _new_recovery_codes(user: User) -> list[str]:
    db.session.execute(sa.delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id))
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(RECOVERY_CODES)]
    db.session.add_all(MfaRecoveryCode(user_id=user.id, code_hash=digest(c)) for c in codes)
    return codes


def _check_lock(user: User, f: MfaFactor) -> None:
    now = db.utcnow()
    if f.locked_until is not None and f.locked_until > now:
        audit.forbid("auth.mfa.verify", by=user, detail={"reason": "locked"},
                     error=MfaLocked(gettext("Too many wrong codes. Try again after %(time)s.",
                                             time=format_when(f.locked_until, "time")),
                                     headers={"Retry-After": str(int((f.locked_until - now).total_seconds()) + 1)}))


def _fail(user: User, f: MfaFactor, action: str) -> None:
    f.failed_attempts += 1
    reason = "wrong code"
    if f.failed_attempts >= current_app.config["MFA_MAX_ATTEMPTS"]:
        f.locked_until = db.utcnow() + timedelta(minutes=current_app.config["LOCKOUT_MINUTES"])
        f.failed_attempts = 0
        reason = "wrong code; locked"
    audit.record(action, by=user, outcome=Outcome.FAILURE, detail={"reason": reason})
    db.session.commit()  # the count and the audit row must survive the refusal


def _totp_step(seed: str, code: str, last_step: int) -> int | None:
    """The time step ``code`` matches (±1 step of clock drift), if newer than ``last_step``."""
    totp = pyotp.TOTP(seed)
    now = int(time.time())
    for offset in (0, -1, 1):
        step = now // totp.interval + offset
        if step > last_step and secrets.compare_digest(totp.at(step * totp.interval), code):
            return step
    return None


def confirm_enrolment(user: User, code: str) -> list[str]:
    """Check the first code from the new authenticator; returns the recovery codes (shown once).

    :raises ValidationFailed: wrong code. :raises MfaLocked: too many wrong codes.
    """
    f = factor(user)
    if f is None or f.confirmed_at is not None:
        raise Conflict("Start the authenticator set-up again.")
    _check_lock(user, f)
    step = _totp_step(_secret(f), (code or "").strip().replace(" ", ""), f.last_step)
    if step is None:
        _fail(user, f, "auth.mfa.enrol")
        raise ValidationFailed("That code is not correct.", errors={"code": ["That code is not correct."]})
    f.confirmed_at = db.utcnow()
    f.last_step = step
    f.failed_attempts = 0
    codes = _new_recovery_codes(user)
    audit.record("auth.mfa.enrol", by=user, resource_type="User", resource_id=user.id)
    db.session.flush()
    return codes


def verify(user: User, code: str) -> str:
    """Check a TOTP code or a recovery code at sign-in; returns which was used ("totp" or "recovery").

    :raises Unauthorized: wrong code (audited). :raises MfaLocked: too many wrong codes.
    """
    f = factor(user)
    if f is None or f.confirmed_at is None:
        raise Conflict("No authenticator is set up for this account.")
    _check_lock(user, f)
    code = (code or "").strip().replace(" ", "").lower()
    method = None
    if code.isdigit() and len(code) == 6:
        step = _totp_step(_secret(f), code, f.last_step)
        if step is not None:
            f.last_step = step
            method = "totp"
    elif len(code) == 17 and "-" in code:
        row = db.session.scalar(sa.select(MfaRecoveryCode).where(
            MfaRecoveryCode.user_id == user.id, MfaRecoveryCode.code_hash == digest(code),
            MfaRecoveryCode.used_at.is_(None)))
        if row is not None:
            row.used_at = db.utcnow()
            method = "recovery"
    if method is None:
        _fail(user, f, "auth.mfa.verify")
        raise Unauthorized("That code is not correct.")
    f.failed_attempts = 0
    audit.record("auth.mfa.verify", by=user, detail={"method": method})
    return method


def remaining_recovery_codes(user: User) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(MfaRecoveryCode).where(
        MfaRecoveryCode.user_id == user.id, MfaRecoveryCode.used_at.is_(None))) or 0


def regenerate_recovery_codes(user: User) -> list[str]:
    if not is_enrolled(user):
        raise Conflict("Set up an authenticator first.")
    codes = _new_recovery_codes(user)
    audit.record("auth.mfa.recovery_codes", by=user, resource_type="User", resource_id=user.id)
    return codes


def remove(user: User, *, by: User) -> None:
    """Remove a person's authenticator (themselves when optional, or an admin resetting a lost phone)."""
    from app.auth.models import Role

    if by.id == user.id and is_required(user):
        audit.forbid("auth.mfa.remove", by=by, resource_type="User", resource_id=user.id,
                     error=Conflict("Your role requires an authenticator; it cannot be removed."))
    if by.id != user.id and by.role is not Role.ADMIN:
        audit.forbid("auth.mfa.remove", by=by, resource_type="User", resource_id=user.id,
                     error=Unauthorized("Only administrators can reset another person's authenticator."))
    db.session.execute(sa.delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id))
    db.session.execute(sa.delete(MfaFactor).where(MfaFactor.user_id == user.id))
    audit.record("auth.mfa.remove", by=by, resource_type="User", resource_id=user.id)
