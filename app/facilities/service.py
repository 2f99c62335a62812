"""Read access to facilities (not patient data, so not audited)."""

from __future__ import annotations

import sqlalchemy as sa

from app import db
from app.facilities.models import Facility


def list_facilities() -> list[Facility]:
    return list(db.session.scalars(sa.select(Facility).order_by(Facility.name)))


def get(facility_id: int) -> Facility | None:
    return db.session.get(Facility, facility_id)
