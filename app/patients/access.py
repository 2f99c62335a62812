"""Who may read or change a patient's record: role × facility × care relationship.

- clinic staff: patients registered at their clinic (read and write);
- pharmacists: patients of their clinic (read: name, allergies, medications for dispensing);
- doctors: patients they have an active care relationship with (read, and clinical lists);
- patients: their own record (read);
- caregivers (patient-role accounts linked as proxies): the rights the patient granted them, and only while they
  act for that patient (see :func:`may_act_for`);
- admins: no chart access; they manage accounts and read the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.audit.context import on_behalf_of
from app.auth.models import Role, User
from app.patients.models import CareAssignment, CaregiverLink, CaregiverRight, Patient


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
            return patient.user_id == user.id or may_act_for(user, patient, CaregiverRight.RECORD)
        case _:
            return False


def can_edit_demographics(user: User, patient: Patient) -> bool:
    return user.role is Role.CLINIC_STAFF and patient.facility_id == user.facility_id


def can_edit_clinical(user: User, patient: Patient) -> bool:
    """Allergies, conditions and medications: the clinic that holds the record, or the treating doctor."""
    return can_edit_demographics(user, patient) or (user.role is Role.DOCTOR and has_care_relationship(user, patient))


def has_care_relationship(user: User, patient: Patient) -> bool:
    """Asked once per page (a chart asks for each panel and prescription). Only a yes is kept for the rest of the
    GET request: no GET ends a care relationship, while a few start one (a reading request claimed)."""
    return db.read_once(("care_relationship", user.id, patient.id), lambda: _care_relationship(user, patient),
                        keep=bool)


def _care_relationship(user: User, patient: Patient) -> bool:
    return db.session.scalar(
        sa.select(sa.literal(True)).where(CareAssignment.patient_id == patient.id,
                                          CareAssignment.practitioner_id == user.id,
                                          CareAssignment.ended_at.is_(None)).limit(1)) is not None


# ---------------------------------------------------------------- caregivers (proxies)


def active_link(user: User, patient_id: int) -> CaregiverLink | None:
    """The caregiver link that lets ``user`` act for the patient now (any right), or None."""
    if user.role is not Role.PATIENT or not user.active:
        return None
    return db.session.scalar(sa.select(CaregiverLink).where(
        CaregiverLink.patient_id == patient_id, CaregiverLink.caregiver_id == user.id,
        CaregiverLink.active_clause(db.utcnow())).order_by(CaregiverLink.id.desc()).limit(1))


def acting_for_id() -> int | None:
    """The patient the signed-in caregiver chose to act for in this request (re-checked by the request hook)."""
    return on_behalf_of.get()


def may_act_for(user: User, patient: Patient, right: CaregiverRight) -> bool:
    """Whether ``user`` may exercise ``right`` for ``patient`` as their caregiver, now.

    Two conditions: an active link granting the right, and ``user`` acting for this patient in this request.
    The second one makes every proxy action carry the patient in the audit trail's ``on_behalf_of``; a
    caregiver who is "acting for myself" sees only their own data, like any patient.
    """
    if acting_for_id() != patient.id:
        return False
    link = active_link(user, patient.id)
    return link is not None and link.grants(right)


def acting_patient_clause(user: User, *rights: CaregiverRight) -> sa.ColumnElement[bool]:
    """The patient-role "my ..." lists as a WHERE clause on :class:`Patient`: the person acted for when the link
    grants one of ``rights``, else the user's own record."""
    patient_id = acting_for_id()
    if patient_id is not None:
        link = active_link(user, patient_id)
        granted = link is not None and any(link.grants(r) for r in rights)
        return Patient.id == patient_id if granted else sa.false()
    return Patient.user_id == user.id


@contextmanager
def acting_for(patient_id: int | None) -> Iterator[None]:
    """Act for ``patient_id`` (or for oneself, None) inside the block: jobs, the CLI and tests; requests use the
    choice held in the browser session instead."""
    token = on_behalf_of.set(patient_id)
    try:
        yield
    finally:
        on_behalf_of.reset(token)
def refuse(action: str, by: User, patient_id: int | None, resource_type: str = "Patient",
           resource_id: object = None) -> NoReturn:
    """Audit the refusal and answer 404, so a patient id tells a stranger nothing."""
    audit.forbid(action, by=by, patient_id=patient_id, resource_type=resource_type,
                 resource_id=resource_id if resource_id is not None else patient_id)
