from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.db import Base, IntPk, TimestampMixin, UtcTimestamp, str_enum, utcnow
from app.facilities.models import Facility
from app.i18n import translated


class Role(enum.StrEnum):
    PATIENT = "patient"
    DOCTOR = "doctor"
    CLINIC_STAFF = "clinic_staff"
    PHARMACIST = "pharmacist"
    ADMIN = "admin"
    GUEST = "guest"
    """An interpreter or family member let into one consult by a single-use link (app.consults.invites)."""

    @property
    def label(self) -> str:
        return translated({"clinic_staff": "Clinic staff", "guest": "Consult guest"}.get(self.value,
                                                                                  self.value.capitalize()))

    @property
    def is_staff(self) -> bool:
        return self not in (Role.PATIENT, Role.GUEST)


class User(TimestampMixin, Base):
    """A login identity. Staff belong to a facility; a patient user is linked from ``Patient.user_id``."""

    __tablename__ = "user_account"

    id: so.Mapped[IntPk]
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    full_name: so.Mapped[str] = so.mapped_column(sa.String(200))
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(255))
    role: so.Mapped[Role] = so.mapped_column(str_enum(Role, 16))
    facility_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("facility.id"))
    active: so.Mapped[bool] = so.mapped_column(default=True)
    must_change_password: so.Mapped[bool] = so.mapped_column(default=False)
    failed_sign_ins: so.Mapped[int] = so.mapped_column(default=0)
    locked_until: so.Mapped[datetime | None]
    last_sign_in_at: so.Mapped[datetime | None]
    # Bumped on password reset/deactivation so every existing browser session ends.
    session_epoch: so.Mapped[int] = so.mapped_column(default=0)
    # The user's own language (a catalogue in app/translations, e.g. "zh_Hans") and IANA time zone; None follows
    # the browser's language and the facility's zone.
    locale: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    timezone: so.Mapped[str | None] = so.mapped_column(sa.String(64))

    facility: so.Mapped[Facility | None] = so.relationship(lazy="joined")

    __table_args__ = (
        sa.CheckConstraint("role = 'patient' OR role = 'admin' OR facility_id IS NOT NULL", name="staff_facility"),
    )

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_epoch}"

    def is_locked(self, now: datetime | None = None) -> bool:
        return self.locked_until is not None and self.locked_until > (now or utcnow())

    def __repr__(self) -> str:
        return f"<User {self.id} {self.role}>"


class SignInAttempt(Base):
    """Every password attempt, kept for per-address throttling and the audit trail's context."""

    __tablename__ = "sign_in_attempt"

    id: so.Mapped[IntPk]
    email: so.Mapped[str] = so.mapped_column(sa.String(254))
    ip: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    succeeded: so.Mapped[bool]
    at: so.Mapped[UtcTimestamp] = so.mapped_column(index=True)
