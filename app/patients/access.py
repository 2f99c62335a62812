"""Who may read or change a patient's record: role × facility × care relationship.

- clinic staff: patients registered at their clinic (read and write);
- pharmacists: patients of their clinic (read: name, allergies, medications for dispensing);
- doctors: patients they have an active care relationship with (read, and clinical lists);
- patients: their own record (read);
- admins: no chart access; they manage accounts and read the audit trail.
"""

from __future__ import annotations

from typing import NoReturn

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.auth.models import Role, User
from app.patients.models import CareAssignment, Patient


def _care_exists(user_id: int) -> sa.ColumnElement[bool]:
    return sa.exists().where(CareAssignment.patient_id == Patient.id,
                             CareAssignment.practitioner_id == user_id,
                             CareAssignment.ended_at.is_(None))


def visible_clause(user: User) -> sa.ColumnElement[bool]:
    """A WHERE clause selecting exactly the patients ``user`` may read."""
    match user.role:
        case Role.CLINIC_STAFF | Role.PHARMACIST:
            return Patient.facility_id == user.facility_id
        case Role.DOCTOR:
            return _care_exists(user.id)
        case Role.PATIENT:
            return Patient.user_id == user.id
        case _:
            return sa.false()


def can_read(user: User, patient: Patient) -> bool:
    match user.role:
        case Role.CLINIC_STAFF | Role.PHARMACIST:
            return patient.facility_id == user.facility_id
        case Role.DOCTOR:
            return has_care_relationship(user, patient)
        case Role.PATIENT:
            return patient.user_id == user.id
        case _:
            return False


def can_edit_demographics(user: User, patient: Patient) -> bool:
    return user.role is Role.CLINIC_STAFF and patient.facility_id == user.facility_id


def can_edit_clinical(user: User, patient: Patient) -> bool:
    """Allergies, conditions and medications: the clinic that holds the record, or the treating doctor."""
    return can_edit_demographics(user, patient) or (user.role is Role.DOCTOR and has_care_relationship(user, patient))


def has_care_relationship(user: User, patient: Patient) -> bool:
    return db.session.scalar(
        sa.select(sa.literal(True)).where(CareAssignment.patient_id == patient.id,
                                          CareAssignment.practitioner_id == user.id,
                                          CareAssignment.ended_at.is_(None)).limit(1)) is not None


def refuse(action: str, by: User, patient_id: int | None, resource_type: str = "Patient",
           resource_id: object = None) -> NoReturn:
    """Audit the refusal and answer 404, so a patient id tells a stranger nothing."""
    audit.forbid(action, by=by, patient_id=patient_id, resource_type=resource_type,
                 resource_id=resource_id if resource_id is not None else patient_id)
