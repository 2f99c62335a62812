from __future__ import annotations

import enum
from datetime import datetime, time

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, TimestampMixin, UtcTimestamp, str_enum
from app.i18n import translated
from app.patients.models import Patient


class AppointmentStatus(enum.StrEnum):
    """FHIR Appointment.status (the subset a video consult goes through)."""

    PROPOSED = "proposed"
    BOOKED = "booked"
    ARRIVED = "arrived"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"

    @property
    def label(self) -> str:
        return translated({"arrived": "Checked in", "noshow": "No-show"}.get(self.value, self.value.capitalize()))

    @property
    def is_open(self) -> bool:
        return self in (AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED, AppointmentStatus.ARRIVED)


class EncounterStatus(enum.StrEnum):
    """FHIR Encounter.status."""

    IN_PROGRESS = "in-progress"
    FINISHED = "finished"


class ParticipantKind(enum.StrEnum):
    PATIENT = "patient"
    DOCTOR = "doctor"
    GUEST = "guest"


class Availability(Base):
    """A weekly window in which a doctor takes video consults, cut into slots of ``slot_minutes``.

    Weekday and times are wall-clock times in ``timezone`` (the doctor's zone when they published it), so a
    09:00 window stays at 09:00 for the doctor across daylight-saving changes; slots are computed in UTC from it.
    """

    __tablename__ = "availability"

    id: so.Mapped[IntPk]
    doctor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    weekday: so.Mapped[int]
    """0 = Monday ... 6 = Sunday."""
    start_time: so.Mapped[time]
    end_time: so.Mapped[time]
    slot_minutes: so.Mapped[int] = so.mapped_column(default=15)
    timezone: so.Mapped[str] = so.mapped_column(sa.String(64), default="UTC", server_default="UTC")
    created_at: so.Mapped[UtcTimestamp]

    __table_args__ = (
        sa.CheckConstraint("weekday >= 0 AND weekday <= 6", name="weekday_range"),
        sa.CheckConstraint("start_time < end_time", name="window_order"),
        sa.CheckConstraint("slot_minutes >= 5 AND slot_minutes <= 240", name="slot_length"),
    )


class AvailabilityException(Base):
    """A period in which the doctor is away (holiday, ward round): no slots are offered."""

    __tablename__ = "availability_exception"

    id: so.Mapped[IntPk]
    doctor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    starts_at: so.Mapped[datetime]
    ends_at: so.Mapped[datetime]
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(200))

    __table_args__ = (sa.CheckConstraint("starts_at < ends_at", name="period_order"),)


class Appointment(TimestampMixin, Base):
    """A booked video consult between a doctor and a patient.

    ``slot_key`` ("<doctor>@<start>") is unique while the appointment holds its slot and NULL once it is
    released (cancelled, no-show), so the database itself refuses double booking, even under concurrent requests.
    """

    __tablename__ = "appointment"

    id: so.Mapped[IntPk]
    doctor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    booked_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    start_at: so.Mapped[datetime] = so.mapped_column(index=True)
    end_at: so.Mapped[datetime]
    status: so.Mapped[AppointmentStatus] = so.mapped_column(str_enum(AppointmentStatus, 16),
                                                            default=AppointmentStatus.BOOKED, index=True)
    slot_key: so.Mapped[str | None] = so.mapped_column(sa.String(64), unique=True)
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    checked_in_at: so.Mapped[datetime | None]
    admitted_at: so.Mapped[datetime | None]
    cancelled_at: so.Mapped[datetime | None]
    cancel_reason: so.Mapped[str | None] = so.mapped_column(sa.String(300))

    doctor: so.Mapped[User] = so.relationship(foreign_keys=[doctor_id], lazy="joined")
    patient: so.Mapped[Patient] = so.relationship(lazy="joined")
    encounter: so.Mapped[Encounter | None] = so.relationship(back_populates="appointment", uselist=False)
    session: so.Mapped[ConsultSession | None] = so.relationship(back_populates="appointment", uselist=False)

    __table_args__ = (sa.CheckConstraint("start_at < end_at", name="slot_order"),)


class Encounter(TimestampMixin, Base):
    """The clinical record of a virtual consult (FHIR Encounter, class VR): notes, diagnosis, chat."""

    __tablename__ = "encounter"

    id: so.Mapped[IntPk]
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), unique=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    doctor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    status: so.Mapped[EncounterStatus] = so.mapped_column(str_enum(EncounterStatus, 16),
                                                          default=EncounterStatus.IN_PROGRESS)
    encounter_class: so.Mapped[str] = so.mapped_column(sa.String(8), default="VR")
    started_at: so.Mapped[UtcTimestamp]
    ended_at: so.Mapped[datetime | None]
    notes: so.Mapped[str | None] = so.mapped_column(sa.Text)
    diagnosis: so.Mapped[str | None] = so.mapped_column(sa.String(300))

    appointment: so.Mapped[Appointment] = so.relationship(back_populates="encounter")
    messages: so.Mapped[list[ChatMessage]] = so.relationship(order_by="ChatMessage.id")


class VisitSummary(TimestampMixin, Base):
    """What the patient takes home from a video consult, written by the doctor in the consult room (the
    encounter note stays the clinician's own record)."""

    __tablename__ = "visit_summary"

    id: so.Mapped[IntPk]
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), unique=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    author_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    reason: so.Mapped[str] = so.mapped_column(sa.String(500), default="")
    findings: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    diagnosis: so.Mapped[str] = so.mapped_column(sa.String(500), default="")
    plan: so.Mapped[str] = so.mapped_column(sa.Text, default="")
    follow_up: so.Mapped[str] = so.mapped_column(sa.String(500), default="")

    appointment: so.Mapped[Appointment] = so.relationship(lazy="joined")
    author: so.Mapped[User] = so.relationship(lazy="joined")


class ConsultSession(Base):
    """The live part of a consult: who may join, when it opened and ended."""

    __tablename__ = "consult_session"

    id: so.Mapped[IntPk]
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), unique=True)
    media_mode: so.Mapped[str] = so.mapped_column(sa.String(16), default="p2p")
    media_worker: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    """Base URL of the media worker the consult is pinned to, set when it first goes to relay."""
    created_at: so.Mapped[UtcTimestamp]
    ended_at: so.Mapped[datetime | None]

    appointment: so.Mapped[Appointment] = so.relationship(back_populates="session")
    participants: so.Mapped[list[ConsultParticipant]] = so.relationship(order_by="ConsultParticipant.id")


class ConsultParticipant(Base):
    """Someone allowed into a consult: the booked patient, the doctor, or staff the doctor invited."""

    __tablename__ = "consult_participant"

    id: so.Mapped[IntPk]
    session_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("consult_session.id"), index=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    kind: so.Mapped[ParticipantKind] = so.mapped_column(str_enum(ParticipantKind, 16))
    invited_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    joined_at: so.Mapped[datetime | None]
    left_at: so.Mapped[datetime | None]
    removed_at: so.Mapped[datetime | None]
    """Set when the doctor removed this participant: they cannot join or signal again."""

    user: so.Mapped[User] = so.relationship(foreign_keys=[user_id], lazy="joined")

    __table_args__ = (sa.UniqueConstraint("session_id", "user_id"),)

    joined_signal_id = 0
    """Id of the "hello" of the latest join (not stored): the page reads signals after it."""

    @property
    def present(self) -> bool:
        return self.joined_at is not None and self.left_at is None


class JoinTokenUse(Base):
    """Each join token works once: its id is stored on use, so a replayed token is refused."""

    __tablename__ = "join_token_use"

    jti: so.Mapped[str] = so.mapped_column(sa.String(32), primary_key=True)
    session_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("consult_session.id"))
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    used_at: so.Mapped[UtcTimestamp]


class SignalMessage(Base):
    """One signaling message (SDP offer/answer, ICE candidate, bye, chat notice) waiting for the other peers.

    Kept in the database so every web worker sees it; ``id`` orders the stream (SSE ``Last-Event-ID``).
    """

    __tablename__ = "signal_message"

    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    session_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("consult_session.id"), index=True)
    sender_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    recipient_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    kind: so.Mapped[str] = so.mapped_column(sa.String(16))
    payload: so.Mapped[str] = so.mapped_column(sa.Text)
    created_at: so.Mapped[UtcTimestamp] = so.mapped_column(index=True)


class ChatMessage(Base):
    """Text chat during a consult, kept with the encounter."""

    __tablename__ = "chat_message"

    id: so.Mapped[IntPk]
    encounter_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("encounter.id"), index=True)
    sender_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    body: so.Mapped[str] = so.mapped_column(sa.String(2000))
    created_at: so.Mapped[UtcTimestamp]

    sender: so.Mapped[User] = so.relationship(lazy="joined")


class RecordingConsent(Base):
    """The patient's explicit consent to record one consult, given by the patient or clinic staff on their
    behalf (``given_by``), revocable; its id travels into the encrypted recording's header."""

    __tablename__ = "recording_consent"

    id: so.Mapped[IntPk]
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), index=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    given_at: so.Mapped[UtcTimestamp]
    given_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    revoked_at: so.Mapped[datetime | None]
    revoked_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))

    given_by: so.Mapped[User] = so.relationship(foreign_keys=[given_by_id], lazy="joined")
    revoked_by: so.Mapped[User | None] = so.relationship(foreign_keys=[revoked_by_id], lazy="joined")

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class RecordingStatus(enum.StrEnum):
    RECORDING = "recording"
    STORED = "stored"
    FAILED = "failed"


class ConsultRecording(Base):
    """Metadata of one encrypted consult recording in the object store (the bytes never touch the database)."""

    __tablename__ = "consult_recording"

    id: so.Mapped[IntPk]
    recording_id: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    """The media service's id; the object key and the file key derive from it."""
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), index=True)
    encounter_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("encounter.id"), index=True)
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id"), index=True)
    consent_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("recording_consent.id"))
    media_worker: so.Mapped[str] = so.mapped_column(sa.String(200))
    status: so.Mapped[RecordingStatus] = so.mapped_column(str_enum(RecordingStatus, 16),
                                                          default=RecordingStatus.RECORDING)
    object_key: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    size: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    sha256: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    duration: so.Mapped[float | None]
    started_at: so.Mapped[UtcTimestamp]
    started_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    stopped_at: so.Mapped[datetime | None]
    stopped_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    stop_reason: so.Mapped[str | None] = so.mapped_column(sa.String(32))


class InviteKind(enum.StrEnum):
    INTERPRETER = "interpreter"
    FAMILY = "family"

    @property
    def label(self) -> str:
        return translated({"interpreter": "Interpreter", "family": "Family member"}[self.value])


class ConsultInvite(Base):
    """A single-use link that lets an interpreter or family member into one consult as a guest.

    Only the SHA-256 of the token is stored; ``used_at`` is set atomically on redemption.
    """

    __tablename__ = "consult_invite"

    id: so.Mapped[IntPk]
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), index=True)
    kind: so.Mapped[InviteKind] = so.mapped_column(str_enum(InviteKind, 16))
    display_name: so.Mapped[str] = so.mapped_column(sa.String(120))
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    created_at: so.Mapped[UtcTimestamp]
    expires_at: so.Mapped[datetime]
    used_at: so.Mapped[datetime | None]
    guest_user_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"), unique=True)


class AppointmentReminder(Base):
    """One reminder of one appointment time, sent once: the unique key makes a second (concurrent) tick's insert
    fail, so only one sender queues the messages. A moved appointment gets reminders for its new time."""

    __tablename__ = "appointment_reminder"

    id: so.Mapped[IntPk]
    appointment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("appointment.id"), index=True)
    lead_minutes: so.Mapped[int]
    start_at: so.Mapped[datetime]
    """The appointment time this reminder was for."""
    sent_at: so.Mapped[UtcTimestamp]
    notified: so.Mapped[bool] = so.mapped_column(default=True)
    """False when the reminder was passed over (a nearer one went instead, or nobody could be reached)."""

    __table_args__ = (sa.UniqueConstraint("appointment_id", "lead_minutes", "start_at"),)
