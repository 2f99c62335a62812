from __future__ import annotations

import enum
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.db import Base, UtcTimestamp, str_enum
from app.i18n import translated


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"

    @property
    def label(self) -> str:
        return translated(self.value.capitalize())


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
    # The patient the actor was acting for as their caregiver (proxy), when they were; FHIR AuditEvent's
    # agent.onBehalfOf. Hashed into the chain only when set, so events sealed before it existed still verify.
    on_behalf_of: so.Mapped[int | None] = so.mapped_column(index=True)


class AuditSeal(Base):
    """One sealing round: the events with ``after_event_id < id <= last_event_id`` were chained and their last
    link's hash is ``head_hash``. Seals form a chain of their own (``prev_hash`` is the previous seal's head), so
    a verifier can start from any seal and an outside copy of the heads (syslog) anchors the whole trail.
    """

    __tablename__ = "audit_seal"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    sealed_at: so.Mapped[UtcTimestamp]
    after_event_id: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    last_event_id: so.Mapped[int] = so.mapped_column(sa.BigInteger, unique=True)
    event_count: so.Mapped[int]
    prev_hash: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary(32))
    head_hash: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary(32))


class AuditLink(Base):
    """The hash chain over the trail: ``hash = SHA-256(previous event's hash || canonical form of this event)``.

    Kept beside ``audit_event`` rather than in it, so the event table stays insert-only and the request path
    never waits for the previous link (see ``app.audit.chain``).
    """

    __tablename__ = "audit_link"

    event_id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                                autoincrement=False)
    hash: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary(32))


class AuditExportCursor(Base):
    """How far the trail has been forwarded to an outside collector (one row per destination)."""

    __tablename__ = "audit_export_cursor"

    destination: so.Mapped[str] = so.mapped_column(sa.String(200), primary_key=True)
    last_event_id: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    updated_at: so.Mapped[UtcTimestamp]
