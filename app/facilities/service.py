"""Facilities: read access (not patient data, so not audited) and the administrator's settings (audited)."""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _

from app import db, i18n
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.errors import Forbidden, ValidationFailed
from app.facilities.models import Facility


def list_facilities() -> list[Facility]:
    return list(db.session.scalars(sa.select(Facility).order_by(Facility.name)))


def get(facility_id: int) -> Facility | None:
    return db.session.get(Facility, facility_id)


def require_zone(name: str | None) -> str:
    """``name`` stripped, when it is a zone this machine knows (typed or picked from the list) — for a facility or
    for a person's own setting.

    :raises ValidationFailed: empty or unknown, with the field hint every time-zone form shows.
    """
    zone = (name or "").strip()
    if not i18n.valid_zone(zone):
        raise ValidationFailed(_("Some fields need attention."),
                               errors={"timezone": [_("Choose a time zone from the list, e.g. Asia/Shanghai.")]})
    return zone


def set_timezone(facility: Facility, zone: str, *, by: User) -> Facility:
    """Set the IANA zone the facility's staff and patients read times in (unless they chose their own).

    :raises Forbidden: not an administrator. :raises ValidationFailed: not a known zone.
    """
    if by.role is not Role.ADMIN:
        audit.record("facility.timezone", by=by, outcome=Outcome.DENIED, resource_type="Facility",
                     resource_id=facility.id)
        raise Forbidden(_("Only administrators set a facility's time zone."))
    zone = require_zone(zone)
    previous = facility.timezone
    facility.timezone = zone
    db.session.flush()
    audit.record("facility.timezone", by=by, resource_type="Facility", resource_id=facility.id,
                 detail={"from": previous, "to": zone})
    return facility
