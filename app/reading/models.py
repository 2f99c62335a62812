"""Reading requests (FHIR ServiceRequest, reduced) and their reports (FHIR DiagnosticReport, reduced).

A request moves requested → in-progress → preliminary → final → amended (or cancelled); each step keeps its
timestamp so turnaround is measured. A report's text is frozen once signed: corrections are addenda, and every
saved or signed version is kept in :class:`ReportVersion`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, TimestampMixin, UtcTimestamp, str_enum
from app.facilities.models import Facility
from app.i18n import translated
from app.imaging.models import Study
from app.patients.models import Patient


class Priority(enum.StrEnum):
    """FHIR ServiceRequest.priority, as the clinic names it (FHIR's "asap" is shown as urgent)."""

    ROUTINE = "routine"
    URGENT = "urgent"
    STAT = "stat"

    @property
    def rank(self) -> int:
        """Sort key: lower is read first."""
        return {"stat": 0, "urgent": 1, "routine": 2}[self.value]

    @property
    def word(self) -> str:
        """The label as the catalogue has it, for text written out later in someone else's language."""
        return "STAT" if self is Priority.STAT else self.value.capitalize()

    @property
    def label(self) -> str:
        return translated(self.word)


class ReadingStatus(enum.StrEnum):
    REQUESTED = "requested"
    IN_PROGRESS = "in-progress"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return translated({"requested": "Waiting", "in-progress": "Being read"}.get(self.value,
                                                                                    self.value.capitalize()))


OPEN_STATUSES = (ReadingStatus.REQUESTED, ReadingStatus.IN_PROGRESS, ReadingStatus.PRELIMINARY)


class ReleaseMode(enum.StrEnum):
    NOW = "now"
    AFTER_CONSULT = "after-consult"


class ReadingRequest(Base):
    """A study sent to be read: to a named doctor (``assigned_to_id``) or to the reading pool (None)."""

    __tablename__ = "reading_request"

    id: so.Mapped[IntPk]
    study_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("imaging_study.id"), index=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    requested_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    assigned_to_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    claimed_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    priority: so.Mapped[Priority] = so.mapped_column(str_enum(Priority, 8))
    priority_rank: so.Mapped[int] = so.mapped_column(sa.SmallInteger)
    clinical_question: so.Mapped[str] = so.mapped_column(sa.String(1000))
    modality: so.Mapped[str] = so.mapped_column(sa.String(64), default="")
    status: so.Mapped[ReadingStatus] = so.mapped_column(str_enum(ReadingStatus, 16), default=ReadingStatus.REQUESTED)
    requested_at: so.Mapped[UtcTimestamp]
    claimed_at: so.Mapped[datetime | None]
    preliminary_at: so.Mapped[datetime | None]
    final_at: so.Mapped[datetime | None]
    amended_at: so.Mapped[datetime | None]
    cancelled_at: so.Mapped[datetime | None]
    cancel_reason: so.Mapped[str | None] = so.mapped_column(sa.String(300))

    study: so.Mapped[Study] = so.relationship(lazy="joined")
    patient: so.Mapped[Patient] = so.relationship(lazy="joined")
    facility: so.Mapped[Facility] = so.relationship(lazy="joined")
    requested_by: so.Mapped[User] = so.relationship(foreign_keys=[requested_by_id])
    assigned_to: so.Mapped[User | None] = so.relationship(foreign_keys=[assigned_to_id], lazy="joined")
    claimed_by: so.Mapped[User | None] = so.relationship(foreign_keys=[claimed_by_id], lazy="joined")
    report: so.Mapped[Report | None] = so.relationship(back_populates="request", uselist=False)

    __table_args__ = (
        # The worklist: open requests by priority, then the longest waiting first.
        sa.Index("ix_reading_request_worklist", "status", "priority_rank", "requested_at"),
    )

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def turnaround(self) -> dict[str, datetime | None]:
        return {"requested": self.requested_at, "in-progress": self.claimed_at,
                "preliminary": self.preliminary_at, "final": self.final_at, "amended": self.amended_at,
                "cancelled": self.cancelled_at}


class Report(TimestampMixin, Base):
    """The doctor's report on one request. The technical text (findings, impression) and the plain-language
    summary for the patient are frozen at signing; ``critical_*`` track the critical-result loop and
    ``release_*`` when the patient may read it."""

    __tablename__ = "reading_report"

    id: so.Mapped[IntPk]
    request_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("reading_request.id"), unique=True)
    author_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    findings: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    impression: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    patient_summary: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    key_images: so.Mapped[list[dict[str, Any]]] = so.mapped_column(sa.JSON, default=list)
    critical: so.Mapped[bool] = so.mapped_column(default=False)
    signed_at: so.Mapped[datetime | None]
    canonical: so.Mapped[str | None] = so.mapped_column(sa.Text)
    content_hash: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    signature: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    key_id: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    dicom_sop_instance_uid: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    release_mode: so.Mapped[ReleaseMode] = so.mapped_column(str_enum(ReleaseMode, 16), default=ReleaseMode.NOW)
    release_appointment_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("appointment.id"), index=True)
    release_due_at: so.Mapped[datetime | None]
    released_at: so.Mapped[datetime | None] = so.mapped_column(index=True)
    critical_notified_at: so.Mapped[datetime | None]
    critical_acked_at: so.Mapped[datetime | None]
    critical_acked_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    critical_escalated_at: so.Mapped[datetime | None]

    request: so.Mapped[ReadingRequest] = so.relationship(back_populates="report", lazy="joined")
    author: so.Mapped[User] = so.relationship(foreign_keys=[author_id], lazy="joined")
    critical_acked_by: so.Mapped[User | None] = so.relationship(foreign_keys=[critical_acked_by_id])
    versions: so.Mapped[list[ReportVersion]] = so.relationship(order_by="ReportVersion.id", back_populates="report")

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    @property
    def critical_open(self) -> bool:
        return self.critical and self.is_signed and self.critical_acked_at is None

    @property
    def addenda(self) -> list[ReportVersion]:
        return [v for v in self.versions if v.kind is VersionKind.ADDENDUM]


class VersionKind(enum.StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"
    ADDENDUM = "addendum"

    @property
    def label(self) -> str:
        return translated(self.value.capitalize())


class ReportVersion(Base):
    """One saved or signed state of a report, never changed: each preliminary save, the final signature and
    each addendum (with its own author and signature)."""

    __tablename__ = "reading_report_version"

    id: so.Mapped[IntPk]
    report_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("reading_report.id"), index=True)
    kind: so.Mapped[VersionKind] = so.mapped_column(str_enum(VersionKind, 16))
    author_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    findings: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    impression: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    patient_summary: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    text: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    created_at: so.Mapped[UtcTimestamp]
    canonical: so.Mapped[str | None] = so.mapped_column(sa.Text)
    content_hash: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    signature: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    key_id: so.Mapped[str | None] = so.mapped_column(sa.String(32))

    report: so.Mapped[Report] = so.relationship(back_populates="versions")
    author: so.Mapped[User] = so.relationship(lazy="joined")
