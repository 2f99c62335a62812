"""A person's own settings that change how the platform speaks to them: for now, the time zone they read in."""

from __future__ import annotations

from app import db
from app.audit import service as audit
from app.auth.models import User
from app.facilities import service as facilities


def set_own_timezone(user: User, zone: str | None) -> User:
    """Set (or, with an empty value, clear) the user's own IANA zone; cleared, they follow their facility's.

    :raises ValidationFailed: not a zone the platform knows.
    """
    zone = facilities.require_zone(zone) if (zone or "").strip() else None
    previous = user.timezone
    user.timezone = zone
    db.session.flush()
    audit.record("account.timezone", by=user, resource_type="User", resource_id=user.id,
                 detail={"from": previous, "to": zone})
    return user
