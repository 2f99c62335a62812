"""Pharmacy stock (by batch, with expiry) and dispenses (FHIR MedicationDispense, reduced)."""

from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, TimestampMixin, UtcTimestamp, str_enum
from app.facilities.models import Facility
from app.i18n import translated
from app.prescriptions.models import Drug, Prescription


class StockBatch(Base):
    """One delivered lot of a drug at a clinic pharmacy; ``quantity`` is what is left on the shelf."""

    __tablename__ = "stock_batch"

    id: so.Mapped[IntPk]
    facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    drug_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("drug.id"), index=True)
    lot: so.Mapped[str] = so.mapped_column(sa.String(40))
    expires_on: so.Mapped[date]
    quantity: so.Mapped[int]
    received_at: so.Mapped[UtcTimestamp]

    drug: so.Mapped[Drug] = so.relationship(lazy="joined")

    __table_args__ = (sa.CheckConstraint("quantity >= 0", name="quantity_not_negative"),)


class DispenseStatus(enum.StrEnum):
    """FHIR MedicationDispense.status; ``in-progress`` means "ready for pickup" at the counter."""

    PREPARATION = "preparation"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    DECLINED = "declined"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return translated({"in-progress": "Ready for pickup", "completed": "Handed over",
                           "preparation": "Being prepared", "on-hold": "On hold", "declined": "Declined",
                           "cancelled": "Cancelled"}[self.value])


class Receiver(enum.StrEnum):
    PATIENT = "patient"
    PROXY = "proxy"


class Dispense(TimestampMixin, Base):
    """One supply of a prescription: ``fill`` 0 is the first supply, 1.. the refills; a short fill is topped
    up by a later dispense of the same fill."""

    __tablename__ = "dispense"

    id: so.Mapped[IntPk]
    prescription_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("prescription.id"), index=True)
    facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    fill: so.Mapped[int] = so.mapped_column(default=0)
    status: so.Mapped[DispenseStatus] = so.mapped_column(str_enum(DispenseStatus, 16), index=True)
    quantity_requested: so.Mapped[int]
    quantity: so.Mapped[int]
    prepared_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    ready_at: so.Mapped[datetime | None]
    pickup_salt: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    pickup_code_hash: so.Mapped[str | None] = so.mapped_column(sa.String(64), unique=True)
    handed_over_at: so.Mapped[datetime | None]
    handed_over_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    receiver: so.Mapped[Receiver | None] = so.mapped_column(str_enum(Receiver, 8))
    proxy_name: so.Mapped[str | None] = so.mapped_column(sa.String(120))
    proxy_relation: so.Mapped[str | None] = so.mapped_column(sa.String(60))
    id_document: so.Mapped[str | None] = so.mapped_column(sa.String(60))
    # The registered caregiver who collected, when the proxy is one (their name and relation are copied above).
    caregiver_link_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("caregiver_link.id"))
    status_reason: so.Mapped[str | None] = so.mapped_column(sa.String(300))

    prescription: so.Mapped[Prescription] = so.relationship(lazy="joined")
    facility: so.Mapped[Facility] = so.relationship(lazy="joined")
    handed_over_by: so.Mapped[User | None] = so.relationship(foreign_keys=[handed_over_by_id])
    picks: so.Mapped[list[DispensePick]] = so.relationship(back_populates="dispense", order_by="DispensePick.id")


class DispensePick(Base):
    """How many units of a dispense came from which batch (returned to the batch if never collected)."""

    __tablename__ = "dispense_pick"

    id: so.Mapped[IntPk]
    dispense_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("dispense.id"), index=True)
    batch_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stock_batch.id"))
    quantity: so.Mapped[int]

    dispense: so.Mapped[Dispense] = so.relationship(back_populates="picks")
    batch: so.Mapped[StockBatch] = so.relationship(lazy="joined")
