from __future__ import annotations

import enum
from datetime import date, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from app.auth.models import User
from app.db import Base, IntPk, TimestampMixin, UtcTimestamp, str_enum
from app.facilities.models import Facility
from app.i18n import translated


class Sex(enum.StrEnum):
    """FHIR AdministrativeGender."""

    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class AllergySeverity(enum.StrEnum):
    """FHIR AllergyIntolerance reaction severity."""

    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"

    @property
    def label(self) -> str:
        return translated(self.value.capitalize())


class ClinicalStatus(enum.StrEnum):
    ACTIVE = "active"
    RESOLVED = "resolved"
    INACTIVE = "inactive"

    @property
    def label(self) -> str:
        return translated(self.value.capitalize())


class Patient(TimestampMixin, Base):
    """A person registered at a clinic. ``mrn`` is the medical record number shown on every page."""

    __tablename__ = "patient"

    id: so.Mapped[IntPk]
    mrn: so.Mapped[str] = so.mapped_column(sa.String(16), unique=True)
    given_name: so.Mapped[str] = so.mapped_column(sa.String(100))
    family_name: so.Mapped[str] = so.mapped_column(sa.String(100))
    birth_date: so.Mapped[date] = so.mapped_column(index=True)
    sex: so.Mapped[Sex] = so.mapped_column(str_enum(Sex, 8))
    phone: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    email: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    address: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    # Lower-cased copies for case-insensitive prefix search that works the same on SQLite and PostgreSQL.
    given_name_search: so.Mapped[str] = so.mapped_column(sa.String(100), index=True)
    family_name_search: so.Mapped[str] = so.mapped_column(sa.String(100), index=True)
    facility_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("facility.id"), index=True)
    user_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"), unique=True)
    registered_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    # "No known allergies" is a statement someone made, not the absence of rows: who said it, and when.
    no_known_allergies_at: so.Mapped[datetime | None]
    no_known_allergies_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))

    facility: so.Mapped[Facility] = so.relationship(lazy="joined")
    user: so.Mapped[User | None] = so.relationship(foreign_keys=[user_id])
    no_known_allergies_by: so.Mapped[User | None] = so.relationship(foreign_keys=[no_known_allergies_by_id])
    allergies: so.Mapped[list[Allergy]] = so.relationship(
        back_populates="patient", order_by="Allergy.id", cascade="all, delete-orphan")
    conditions: so.Mapped[list[Condition]] = so.relationship(
        back_populates="patient", order_by="Condition.id", cascade="all, delete-orphan")
    medications: so.Mapped[list[MedicationStatement]] = so.relationship(
        back_populates="patient", order_by="MedicationStatement.id", cascade="all, delete-orphan")

    @property
    def display_name(self) -> str:
        return f"{self.family_name.upper()}, {self.given_name}"

    @property
    def active_allergies(self) -> list[Allergy]:
        return [a for a in self.allergies if a.status is ClinicalStatus.ACTIVE]

    @property
    def age(self) -> int:
        today = date.today()
        b = self.birth_date
        return today.year - b.year - ((today.month, today.day) < (b.month, b.day))

    def __repr__(self) -> str:
        return f"<Patient {self.id}>"


class Allergy(Base):
    """FHIR AllergyIntolerance, reduced: substance (a drug, a drug class or anything else) and severity."""

    __tablename__ = "allergy"

    id: so.Mapped[IntPk]
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True)
    substance: so.Mapped[str] = so.mapped_column(sa.String(120))
    reaction: so.Mapped[str | None] = so.mapped_column(sa.String(300))
    severity: so.Mapped[AllergySeverity] = so.mapped_column(str_enum(AllergySeverity, 8))
    status: so.Mapped[ClinicalStatus] = so.mapped_column(
        str_enum(ClinicalStatus, 8), default=ClinicalStatus.ACTIVE)
    recorded_at: so.Mapped[UtcTimestamp]
    recorded_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))

    patient: so.Mapped[Patient] = so.relationship(back_populates="allergies")


class Condition(Base):
    """FHIR Condition, reduced: a problem-list entry."""

    __tablename__ = "condition"

    id: so.Mapped[IntPk]
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True)
    description: so.Mapped[str] = so.mapped_column(sa.String(200))
    code: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    onset_date: so.Mapped[date | None]
    status: so.Mapped[ClinicalStatus] = so.mapped_column(
        str_enum(ClinicalStatus, 8), default=ClinicalStatus.ACTIVE)
    recorded_at: so.Mapped[UtcTimestamp]
    recorded_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))

    patient: so.Mapped[Patient] = so.relationship(back_populates="conditions")


class MedicationStatement(Base):
    """FHIR MedicationStatement: what the patient currently takes, as reported at registration or review."""

    __tablename__ = "medication_statement"

    id: so.Mapped[IntPk]
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(120))
    dosage: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    status: so.Mapped[ClinicalStatus] = so.mapped_column(
        str_enum(ClinicalStatus, 8), default=ClinicalStatus.ACTIVE)
    recorded_at: so.Mapped[UtcTimestamp]
    recorded_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    # The signed prescription this entry comes from (kept in step with it: a new dose replaces the entry,
    # stopping the prescription stops it).
    prescription_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("prescription.id"), index=True)

    patient: so.Mapped[Patient] = so.relationship(back_populates="medications")


class CareAssignment(Base):
    """A doctor's care relationship with a patient: what lets the doctor open the chart."""

    __tablename__ = "care_assignment"

    id: so.Mapped[IntPk]
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"))
    practitioner_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(200))
    assigned_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))
    assigned_at: so.Mapped[UtcTimestamp]
    ended_at: so.Mapped[datetime | None]

    practitioner: so.Mapped[User] = so.relationship(foreign_keys=[practitioner_id], lazy="joined")

    __table_args__ = (
        sa.Index("ix_care_assignment_active", "patient_id", "practitioner_id"),
    )


class CaregiverRight(enum.StrEnum):
    """What a caregiver may do for the patient; each is granted on its own (FHIR Consent provision actions)."""

    RECORD = "record"
    BOOK = "book"
    JOIN = "join"
    MEDICINE = "medicine"

    @property
    def column(self) -> str:
        return f"can_{self.value}"


class CaregiverRelationship(enum.StrEnum):
    """The caregiver's relationship to the patient; ``code`` is the HL7 v3 RoleCode FHIR RelatedPerson uses."""

    SPOUSE = "spouse"
    CHILD = "child"
    GRANDCHILD = "grandchild"
    PARENT = "parent"
    SIBLING = "sibling"
    OTHER_FAMILY = "other_family"
    FRIEND = "friend"
    NEIGHBOUR = "neighbour"

    @property
    def code(self) -> str:
        return {"spouse": "SPS", "child": "CHILD", "grandchild": "GRNDCHILD", "parent": "PRN", "sibling": "SIB",
                "other_family": "FAMMEMB", "friend": "FRND", "neighbour": "NBOR"}[self.value]


class ConsentMethod(enum.StrEnum):
    """How the patient's agreement to the link was given and recorded."""

    IN_APP = "in_app"
    """The patient linked the caregiver from their own account."""
    SIGNED_FORM = "signed_form"
    """The patient signed the clinic's proxy form (kept on paper or scanned; its reference is noted)."""
    SPOKEN_WITNESSED = "spoken"
    """The patient said so at the desk in front of the staff member recording it."""


class CaregiverLink(TimestampMixin, Base):
    """A family member's account acting as the patient's proxy, with the rights the patient chose.

    Shaped like FHIR RelatedPerson (relationship, period) plus the granted scopes of a Consent: the link is
    active from ``valid_from`` until ``valid_until`` or ``revoked_at``, whichever comes first. Never deleted,
    so who could act for the patient at any moment stays readable beside the audit trail.
    """

    __tablename__ = "caregiver_link"

    id: so.Mapped[IntPk]
    patient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("patient.id", ondelete="CASCADE"), index=True)
    caregiver_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"), index=True)
    relationship: so.Mapped[CaregiverRelationship] = so.mapped_column(str_enum(CaregiverRelationship, 16))
    can_record: so.Mapped[bool] = so.mapped_column(default=False)
    can_book: so.Mapped[bool] = so.mapped_column(default=False)
    can_join: so.Mapped[bool] = so.mapped_column(default=False)
    can_medicine: so.Mapped[bool] = so.mapped_column(default=False)
    granted_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    consent_method: so.Mapped[ConsentMethod] = so.mapped_column(str_enum(ConsentMethod, 16))
    consent_recorded_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("user_account.id"))
    consent_recorded_at: so.Mapped[UtcTimestamp]
    consent_reference: so.Mapped[str | None] = so.mapped_column(sa.String(120))
    valid_from: so.Mapped[UtcTimestamp]
    valid_until: so.Mapped[datetime | None]
    revoked_at: so.Mapped[datetime | None]
    revoked_by_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("user_account.id"))

    patient: so.Mapped[Patient] = so.relationship(lazy="joined")
    caregiver: so.Mapped[User] = so.relationship(foreign_keys=[caregiver_id], lazy="joined")
    granted_by: so.Mapped[User] = so.relationship(foreign_keys=[granted_by_id])

    @property
    def rights(self) -> list[CaregiverRight]:
        return [r for r in CaregiverRight if getattr(self, r.column)]

    def grants(self, right: CaregiverRight) -> bool:
        return bool(getattr(self, right.column))

    def is_active(self, now: datetime) -> bool:
        return (self.revoked_at is None and self.valid_from <= now
                and (self.valid_until is None or self.valid_until > now))

    @classmethod
    def active_clause(cls, now: datetime) -> sa.ColumnElement[bool]:
        """:meth:`is_active` as a WHERE clause."""
        return sa.and_(cls.revoked_at.is_(None), cls.valid_from <= now,
                       sa.or_(cls.valid_until.is_(None), cls.valid_until > now))
