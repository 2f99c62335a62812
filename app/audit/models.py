from __future__ import annotations

import enum
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.db import Base, UtcTimestamp, str_enum


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


class AuditEvent(Base):
    """Append-only record of who did what to which patient's data, from where, and how it ended.

    No foreign keys on purpose: the trail must outlive the rows it mentions. Updates and deletes are
    refused by the ORM (see ``app.audit.service``) and by a database trigger (see the migration).
    """

    __tablename__ = "audit_event"

    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    occurred_at: so.Mapped[UtcTimestamp] = so.mapped_column(index=True)
    actor_id: so.Mapped[int | None] = so.mapped_column(index=True)
    actor_role: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    actor_name: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    action: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    outcome: so.Mapped[Outcome] = so.mapped_column(str_enum(Outcome, 8))
    patient_id: so.Mapped[int | None] = so.mapped_column(index=True)
    resource_type: so.Mapped[str | None] = so.mapped_column(sa.String(48))
    resource_id: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    ip: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    detail: so.Mapped[dict[str, Any] | None] = so.mapped_column(sa.JSON)
