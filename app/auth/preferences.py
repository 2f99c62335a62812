"""A person's own settings that change how the platform speaks to them: for now, the time zone they read in."""

from __future__ import annotations

from flask_babel import gettext as _

from app import db, i18n
from app.audit import service as audit
from app.auth.models import User
from app.errors import ValidationFailed


def set_own_timezone(user: User, zone: str | None) -> User:
    """Set (or, with an empty value, clear) the user's own IANA zone; cleared, they follow their facility's.

    :raises ValidationFailed: not a zone the platform knows.
    """
    zone = (zone or "").strip() or None
    if zone is not None and not i18n.valid_zone(zone):
        raise ValidationFailed(_("Some fields need attention."),
                               errors={"timezone": [_("Choose a time zone from the list, e.g. Asia/Shanghai.")]})
    previous = user.timezone
    user.timezone = zone
    db.session.flush()
    audit.record("account.timezone", by=user, resource_type="User", resource_id=user.id,
                 detail={"from": previous, "to": zone})
    return user
