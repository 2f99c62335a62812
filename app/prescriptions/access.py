"""Who may see or change a prescription: the prescriber's care relationship, the dispensing pharmacy, the
patient's clinic, the patient. A pharmacist of another clinic sees nothing."""

from __future__ import annotations

import sqlalchemy as sa

from app.auth.models import Role, User
from app.patients import access as patient_access
from app.patients.models import CaregiverRight, Patient
from app.prescriptions.models import Prescription

CAREGIVER_READS = (CaregiverRight.RECORD, CaregiverRight.MEDICINE)
"""A caregiver who may collect medicine reads the prescriptions too: what is ready, and its pickup code."""


def can_read(user: User, rx: Prescription) -> bool:
    match user.role:
        case Role.DOCTOR:
            return rx.prescriber_id == user.id or patient_access.has_care_relationship(user, rx.patient)
        # Only what a doctor signed leaves the care team: a draft, even a cancelled one, was never an order.
        case Role.PHARMACIST:
            return rx.dispensing_facility_id == user.facility_id and rx.is_signed
        case Role.CLINIC_STAFF:
            return rx.patient.facility_id == user.facility_id and rx.is_signed
        case Role.PATIENT:  # or their caregiver, acting for them with the right to see the record or collect
            return rx.is_signed and (rx.patient.user_id == user.id or any(
                patient_access.may_act_for(user, rx.patient, right) for right in CAREGIVER_READS))
        case _:
            return False


def can_prescribe(user: User, patient: object) -> bool:
    return user.role is Role.DOCTOR and patient_access.has_care_relationship(user, patient)  # type: ignore[arg-type]


def can_manage(user: User, rx: Prescription) -> bool:
    """Sign, hold, stop, cancel: a doctor who treats the patient."""
    return can_prescribe(user, rx.patient)


def visible_clause(user: User) -> sa.ColumnElement[bool]:
    """:func:`can_read` as a WHERE clause on :class:`Prescription` (joined to its :class:`Patient`), for searches."""
    signed = Prescription.signed_at.is_not(None)  # a cancelled draft was never an order either
    match user.role:
        case Role.DOCTOR:
            return sa.or_(Prescription.prescriber_id == user.id, patient_access.visible_clause(user))
        case Role.PHARMACIST:
            return sa.and_(Prescription.dispensing_facility_id == user.facility_id, signed)
        case Role.CLINIC_STAFF:
            return sa.and_(Patient.facility_id == user.facility_id, signed)
        case Role.PATIENT:
            return sa.and_(patient_access.acting_patient_clause(user, *CAREGIVER_READS), signed)
        case _:
            return sa.false()
