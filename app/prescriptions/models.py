"""Formulary, interaction table and prescriptions (FHIR MedicationRequest, reduced)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, TimestampMixin, str_enum
from app.facilities.models import Facility
from app.patients.models import Patient


class Drug(Base):
    """A formulary entry. Doses are counted in units of ``form`` (tablet, capsule, puff); ``strength_mg`` is
    the active ingredient per unit, so the daily dose in mg can be checked against ``max_daily_mg``."""

    __tablename__ = "drug"

    id: so.Mapped[IntPk]
    code: so.Mapped[str] = so.mapped_column(sa.String(16), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(120))
    strength: so.Mapped[str] = so.mapped_column(sa.String(40))
    strength_mg: so.Mapped[float]
    form: so.Mapped[str] = so.mapped_column(sa.String(40))
    route: so.Mapped[str] = so.mapped_column(sa.String(40))
    drug_class: so.Mapped[str] = so.mapped_column(sa.String(60))
    max_daily_mg: so.Mapped[float]
    sold_in_town: so.Mapped[bool] = so.mapped_column(default=False)
    active: so.Mapped[bool] = so.mapped_column(default=True)

    @property
    def display(self) -> str:
        return f"{self.name} {self.strength} {self.form}"


class InteractionSeverity(enum.StrEnum):
    MINOR = "minor"
    MODERATE = "moderate"
    MAJOR = "major"
    CONTRAINDICATED = "contraindicated"


class DrugInteraction(Base):
    """A known interaction between two drugs or drug classes; ``a``/``b`` hold a drug code or a class name."""

    __tablename__ = "drug_interaction"

    id: so.Mapped[IntPk]
    a: so.Mapped[str] = so.mapped_column(sa.String(60))
    b: so.Mapped[str] = so.mapped_column(sa.String(60))
    severity: so.Mapped[InteractionSeverity] = so.mapped_column(str_enum(InteractionSeverity, 16))
    description: so.Mapped[str] = so.mapped_column(sa.String(300))


class RequestStatus(enum.StrEnum):
    """FHIR MedicationRequest.status (the subset a clinic uses)."""

    DRAFT = "draft"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    STOPPED = "stopped"


class Prescription(TimestampMixin, Base):
    """What a doctor ordered. Once signed (``signed_at`` set) the clinical fields never change."""

    __tablename__ = "prescription"

    id: so.Mapped[IntPk]
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    prescriber_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    drug_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("drug.id"))
    dose_units: so.Mapped[float]
    frequency_per_day: so.Mapped[int]
    duration_days: so.Mapped[int]
    quantity: so.Mapped[int]
    refills: so.Mapped[int] = so.mapped_column(default=0)
    instructions: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    dispensing_facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    status: so.Mapped[RequestStatus] = so.mapped_column(str_enum(RequestStatus, 16), default=RequestStatus.DRAFT,
                                                        index=True)
    status_reason: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    overrides: so.Mapped[list[dict[str, Any]] | None] = so.mapped_column(sa.JSON)
    signed_at: so.Mapped[datetime | None]
    canonical: so.Mapped[str | None] = so.mapped_column(sa.Text)
    content_hash: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    signature: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    key_id: so.Mapped[str | None] = so.mapped_column(sa.String(32))

    patient: so.Mapped[Patient] = so.relationship(lazy="joined")
    prescriber: so.Mapped[User] = so.relationship(lazy="joined")
    drug: so.Mapped[Drug] = so.relationship(lazy="joined")
    dispensing_facility: so.Mapped[Facility] = so.relationship(lazy="joined")

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    @property
    def daily_mg(self) -> float:
        return self.dose_units * self.frequency_per_day * self.drug.strength_mg

    @property
    def total_authorised(self) -> int:
        return self.quantity * (1 + self.refills)

    @property
    def sig(self) -> str:
        """Human dosage line, e.g. "1 tablet 3 times a day for 7 days"."""
        dose = f"{self.dose_units:g} {self.drug.form}{'' if self.dose_units == 1 else 's'}"
        times = "once a day" if self.frequency_per_day == 1 else f"{self.frequency_per_day} times a day"
        return f"{dose} {times} for {self.duration_days} days"
