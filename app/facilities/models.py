from __future__ import annotations

import enum

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.db import Base, IntPk, UtcTimestamp, str_enum
from app.i18n import translated


class FacilityKind(enum.StrEnum):
    HOSPITAL = "hospital"
    CLINIC = "clinic"

    @property
    def label(self) -> str:
        return translated(self.value.capitalize())


class Facility(Base):
    """A place staff belong to; a clinic may run a pharmacy that dispenses prescriptions."""

    __tablename__ = "facility"

    id: so.Mapped[IntPk]
    code: so.Mapped[str] = so.mapped_column(sa.String(16), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    kind: so.Mapped[FacilityKind] = so.mapped_column(str_enum(FacilityKind, 16))
    has_pharmacy: so.Mapped[bool] = so.mapped_column(default=False)
    address: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    # Where the facility is: the IANA zone its times are shown and booked in, and the language its pages default to.
    timezone: so.Mapped[str] = so.mapped_column(sa.String(64), default="UTC", server_default="UTC")
    default_locale: so.Mapped[str] = so.mapped_column(sa.String(16), default="en", server_default="en")
    created_at: so.Mapped[UtcTimestamp]

    def __repr__(self) -> str:
        return f"<Facility {self.code}>"
