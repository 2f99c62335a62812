"""Accounts: sign-in with lockout, and the admin's user management.

Lockout has two keys: the account (``LOCKOUT_THRESHOLD`` consecutive failures lock it for
``LOCKOUT_MINUTES``) and the client address (``IP_LOCKOUT_THRESHOLD`` failures in that window block new
attempts from it), so guessing one password or spraying many accounts both stop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from app import db
from app.audit import service as audit
from app.audit.context import client_ip
from app.audit.models import Outcome
from app.auth.models import Role, SignInAttempt, User
from app.auth.passwords import burn_time, hash_password, verify_password
from app.catalogue import N_
from app.errors import Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized, ValidationFailed
from app.facilities.models import Facility, FacilityKind
from app.i18n import format_when

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
GENERIC_FAILURE = "The email or password is not correct."


class AccountLocked(TooManyRequests):
    slug, title = "account-locked", "Too many failed sign-ins"


@dataclass(frozen=True)
class Lockout:
    until: datetime

    def message(self) -> str:
        return (f"Too many failed sign-ins. Try again after {format_when(self.until, 'time')}, "
                "or ask an administrator to reset your password.")


def _window() -> timedelta:
    return timedelta(minutes=current_app.config["LOCKOUT_MINUTES"])


def _ip_lockout(ip: str | None, now: datetime) -> Lockout | None:
    if not ip:
        return None
    since = now - _window()
    failures = db.session.scalars(
        sa.select(SignInAttempt.at).where(SignInAttempt.ip == ip, SignInAttempt.at >= since,
                                          SignInAttempt.succeeded.is_(False))
        .order_by(SignInAttempt.at)).all()
    if len(failures) >= current_app.config["IP_LOCKOUT_THRESHOLD"]:
        return Lockout(failures[-current_app.config["IP_LOCKOUT_THRESHOLD"]] + _window())
    return None


def find_by_email(email: str) -> User | None:
    """The account with this email (for operator commands; sign-in goes through :func:`authenticate`)."""
    return db.session.scalar(sa.select(User).where(User.email == normalise_email(email)))


def authenticate(email: str, password: str) -> User:
    """Check a password sign-in and record it.

    :raises AccountLocked: the account or the client address is locked out (message says until when).
    :raises Unauthorized: wrong email or password, or a deactivated account (one generic message).

    A refusal leaves the attempt, the failure count and the audit row in the session: the caller saves them
    (no rollback), since they must persist although the sign-in is refused.
    """
    now = db.utcnow()
    email = normalise_email(email)
    ip = client_ip.get()
    blocked = _ip_lockout(ip, now)
    if blocked:
        audit.forbid("auth.sign_in", by=None, actor_name=email[:200],
                     detail={"reason": "address locked out"},
                     error=AccountLocked(blocked.message(),
                                         headers={"Retry-After": str(int((blocked.until - now).total_seconds()))}))

    user = db.session.scalar(sa.select(User).where(User.email == email))
    if user is not None and user.is_locked(now):
        db.session.add(SignInAttempt(email=email, ip=ip or "", succeeded=False, at=now))
        audit.record("auth.sign_in", by=user, outcome=Outcome.DENIED, detail={"reason": "account locked"})
        assert user.locked_until is not None
        lock = Lockout(user.locked_until)
        raise AccountLocked(lock.message(), headers={"Retry-After": str(int((lock.until - now).total_seconds()))})

    ok = verify_password(user.password_hash, password) if user is not None else (burn_time(password) or False)
    db.session.add(SignInAttempt(email=email, ip=ip or "", succeeded=bool(ok and user and user.active), at=now))
    if user is None or not ok or not user.active:
        reason = "unknown account" if user is None else ("deactivated" if ok else "wrong password")
        if user is not None and not ok:
            user.failed_sign_ins += 1
            if user.failed_sign_ins >= current_app.config["LOCKOUT_THRESHOLD"]:
                user.locked_until = now + _window()
                user.failed_sign_ins = 0
                reason = "wrong password; account locked"
        audit.record("auth.sign_in", by=user, outcome=Outcome.FAILURE, actor_name=email[:200],
                     detail={"reason": reason})
        if user is not None and user.locked_until and user.is_locked(now):
            raise AccountLocked(Lockout(user.locked_until).message())
        raise Unauthorized(GENERIC_FAILURE)

    user.failed_sign_ins = 0
    user.locked_until = None
    user.last_sign_in_at = now
    audit.record("auth.sign_in", by=user)
    return user


def record_sign_out(user: User, *, reason: str = "signed out") -> None:
    audit.record("auth.sign_out", by=user, detail={"reason": reason})


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def load_session_user(session_id: str) -> User | None:
    """Resolve Flask-Login's ``<id>:<epoch>``; a stale epoch (password reset) ends the session."""
    try:
        user_id, epoch = (int(part) for part in session_id.split(":", 1))
    except ValueError:
        return None
    user = db.session.get(User, user_id)
    if user is None or not user.active or user.session_epoch != epoch:
        return None
    return user


def validate_password(password: str) -> list[str]:
    problems = []
    minimum = current_app.config["PASSWORD_MIN_LENGTH"]
    if len(password) < minimum:
        problems.append(f"Use at least {minimum} characters.")
    if len(password) > 256:
        problems.append("Use at most 256 characters.")
    if password.strip() != password or not password.strip():
        problems.append("Do not start or end with spaces.")
    return problems


def _require_admin(by: User, action: str) -> None:
    if by.role is not Role.ADMIN:
        audit.forbid(action, by=by, resource_type="User",
                     error=Forbidden("Only administrators can manage accounts."))


def create_user(*, email: str, full_name: str, password: str, role: Role, facility_id: int | None,
                by: User | None, must_change_password: bool = True) -> User:
    """Create an account. ``by=None`` only for seeding and the CLI.

    :raises ValidationFailed: bad email/password, or staff without a facility.
    :raises Conflict: the email is taken.
    """
    if by is not None:
        _require_admin(by, "user.create")
    errors: dict[str, list[str]] = {}
    email = normalise_email(email)
    if not EMAIL_RE.match(email) or len(email) > 254:
        errors["email"] = ["Enter a valid email address."]
    if not full_name.strip() or len(full_name) > 200:
        errors["full_name"] = ["Enter a name of 1 to 200 characters."]
    if problems := validate_password(password):
        errors["password"] = problems
    facility = db.session.get(Facility, facility_id) if facility_id is not None else None
    if role.is_staff and role is not Role.ADMIN and facility is None:
        errors["facility_id"] = ["Staff accounts belong to a facility."]
    if role is Role.PHARMACIST and facility is not None and not facility.has_pharmacy:
        errors["facility_id"] = ["Pharmacists belong to a facility with a pharmacy."]
    if role is Role.CLINIC_STAFF and facility is not None and facility.kind is not FacilityKind.CLINIC:
        errors["facility_id"] = ["Clinic staff belong to a clinic."]
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    if db.session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise Conflict(N_("An account with that email already exists."), errors={"email": [N_("Already in use.")]})
    user = User(email=email, full_name=full_name.strip(), password_hash=hash_password(password), role=role,
                facility_id=facility.id if facility else None, must_change_password=must_change_password)
    db.session.add(user)
    db.session.flush()
    if by is not None:
        audit.record("user.create", by=by, resource_type="User", resource_id=user.id, detail={"role": role.value})
    return user


def get_user(user_id: int, *, by: User) -> User:
    _require_admin(by, "user.read")
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No account with that id.")
    return user


def list_users(*, by: User, role: Role | None = None, q: str | None = None) -> Sequence[User]:
    """Accounts by role and name. Consult guests (one per invite link, short-lived) are listed only when asked
    for by role, so they do not bury the staff and patient accounts an admin manages."""
    _require_admin(by, "user.list")
    query = sa.select(User).where(User.role == role if role is not None else User.role != Role.GUEST)
    query = query.order_by(User.role, User.full_name)
    if q:
        like = f"%{q.strip().lower()}%"
        query = query.where(sa.or_(sa.func.lower(User.full_name).like(like), User.email.like(like)))
    return list(db.session.scalars(query.limit(500)))


def set_active(user: User, active: bool, *, by: User) -> User:
    """Deactivate (or reactivate) an account; deactivation ends its sessions at once."""
    _require_admin(by, "user.deactivate" if not active else "user.activate")
    if user.id == by.id and not active:
        raise Conflict("You cannot deactivate your own account.")
    user.active = active
    user.session_epoch += 1
    audit.record("user.activate" if active else "user.deactivate", by=by, resource_type="User", resource_id=user.id)
    return user


def reset_password(user: User, new_password: str, *, by: User) -> User:
    """Admin reset: sets a temporary password, unlocks, ends sessions, forces a change at next sign-in."""
    _require_admin(by, "user.reset_password")
    if problems := validate_password(new_password):
        raise ValidationFailed("Some fields need attention.", errors={"password": problems})
    user.password_hash = hash_password(new_password)
    user.must_change_password = True
    user.failed_sign_ins = 0
    user.locked_until = None
    user.session_epoch += 1
    audit.record("user.reset_password", by=by, resource_type="User", resource_id=user.id)
    return user


def change_own_password(user: User, current: str, new: str) -> User:
    """:raises ValidationFailed: wrong current password or a weak new one."""
    if not verify_password(user.password_hash, current):
        audit.record("user.change_password", by=user, outcome=Outcome.FAILURE)
        raise ValidationFailed(N_("Some fields need attention."), errors={"current_password": [N_("Not correct.")]})
    if problems := validate_password(new):
        raise ValidationFailed("Some fields need attention.", errors={"new_password": problems})
    if new == current:
        raise ValidationFailed(N_("Some fields need attention."),
                               errors={"new_password": [N_("Choose a password different from the current one.")]})
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.session_epoch += 1
    audit.record("user.change_password", by=user, resource_type="User", resource_id=user.id)
    return user
