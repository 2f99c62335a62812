"""Who may do what with a consult: the consult domain's authorisation rules, in one place.

Every refusal goes through :func:`app.audit.service.forbid`, so none leaves the audit trail without a row.
"""

from __future__ import annotations

from typing import NoReturn

import sqlalchemy as sa

from app.audit import service as audit
from app.auth.models import Role, User
from app.consults.models import Appointment, ConsultParticipant, ConsultSession
from app.errors import Forbidden
from app.patients import access as patient_access
from app.patients.models import CaregiverRight, Patient

PROXY_SEES = (CaregiverRight.BOOK, CaregiverRight.JOIN)
"""A caregiver with either right sees the consults of the person they act for."""


def refuse(action: str, by: User, appointment_id: object, patient_id: int | None = None) -> NoReturn:
    """Audit the refusal and answer 404, so an appointment id tells a stranger nothing."""
    audit.forbid(action, by=by, patient_id=patient_id, resource_type="Appointment", resource_id=appointment_id)


def acts_for(patient: Patient, by: User, proxy_right: CaregiverRight | None = None) -> bool:
    """The patient themself, staff of their clinic on their behalf (booking, recording consent), or, for an action
    a patient may delegate (``proxy_right``: booking), a caregiver granted it who acts for them now."""
    if by.role is Role.PATIENT:
        return patient.user_id == by.id or (
            proxy_right is not None and patient_access.may_act_for(by, patient, proxy_right))
    return by.role is Role.CLINIC_STAFF and patient.facility_id == by.facility_id


def participant_of(appointment: Appointment, user: User) -> ConsultParticipant | None:
    session = appointment.session
    if session is None:
        return None
    return next((p for p in session.participants if p.user_id == user.id), None)


def can_see(appointment: Appointment, by: User) -> bool:
    if by.id == appointment.doctor_id:
        return True
    if by.role is Role.PATIENT:
        return appointment.patient.user_id == by.id or any(
            patient_access.may_act_for(by, appointment.patient, right) for right in PROXY_SEES)
    if by.role is Role.CLINIC_STAFF and appointment.patient.facility_id == by.facility_id:
        return True
    return participant_of(appointment, by) is not None


def visible_clause(user: User) -> sa.ColumnElement[bool]:
    """:func:`can_see` as a WHERE clause on :class:`Appointment` joined to its :class:`Patient`, for searches."""
    invited = Appointment.id.in_(sa.select(ConsultSession.appointment_id).join(
        ConsultParticipant, ConsultParticipant.session_id == ConsultSession.id).where(
        ConsultParticipant.user_id == user.id))
    if user.role is Role.PATIENT:
        return patient_access.acting_patient_clause(user, *PROXY_SEES)
    if user.role is Role.CLINIC_STAFF:
        return sa.or_(Patient.facility_id == user.facility_id, Appointment.doctor_id == user.id, invited)
    return sa.or_(Appointment.doctor_id == user.id, invited)


def require_doctor(appointment: Appointment, by: User, action: str) -> None:
    """Only the consult's own doctor. :raises NotFound: anyone else (audited)."""
    if by.id != appointment.doctor_id:
        refuse(action, by, appointment.id, appointment.patient_id)


def require_role(by: User, role: Role, action: str, message: str, resource_type: str) -> None:
    """A whole kind of action belongs to one role. :raises Forbidden: another role (audited)."""
    if by.role is not role:
        audit.forbid(action, by=by, resource_type=resource_type, error=Forbidden(message))


def may_play(appointment: Appointment, by: User) -> bool:
    """Recordings are for the treating doctor and the patient only."""
    return by.id == appointment.doctor_id or (by.role is Role.PATIENT and appointment.patient.user_id == by.id)
