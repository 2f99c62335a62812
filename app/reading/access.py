"""Who may do what with a reading request and its report.

- clinic staff: request reads of their clinic's patients, follow them, acknowledge critical results;
- doctors: the requests assigned to them, unclaimed pool requests (without the patient's name until claimed),
  the ones they claimed, and any report of a patient in their care (addenda too);
- the patient: their own report once released;
- pharmacists and admins: nothing.
"""

from __future__ import annotations

from typing import NoReturn

import sqlalchemy as sa

from app.audit import service as audit
from app.auth.models import Role, User
from app.patients import access as patient_access
from app.patients.models import CaregiverRight
from app.reading.models import ReadingRequest, ReadingStatus


def can_request(user: User, patient: object) -> bool:
    return patient_access.can_edit_demographics(user, patient)  # type: ignore[arg-type]


def is_reader(user: User, req: ReadingRequest) -> bool:
    """The doctor who has the request (claimed), or to whom it is addressed and nobody claimed it yet."""
    if user.role is not Role.DOCTOR:
        return False
    if req.claimed_by_id is not None:
        return req.claimed_by_id == user.id
    return req.assigned_to_id in (None, user.id)


def can_read(user: User, req: ReadingRequest) -> bool:
    match user.role:
        case Role.CLINIC_STAFF:
            return req.facility_id == user.facility_id
        case Role.DOCTOR:
            return is_reader(user, req) or patient_access.has_care_relationship(user, req.patient)
        case Role.PATIENT:
            report = req.report
            mine = (req.patient.user_id == user.id
                    or patient_access.may_act_for(user, req.patient, CaregiverRight.RECORD))
            return mine and report is not None and report.released_at is not None
        case _:
            return False


def shows_patient(user: User, req: ReadingRequest) -> bool:
    """Pool doctors see age and sex until they claim; the name is for the people involved."""
    return not (user.role is Role.DOCTOR and req.claimed_by_id is None and req.assigned_to_id is None)


def is_addressed_to(user: User, req: ReadingRequest) -> bool:
    """A doctor who could have claimed it (pool, or named): told who has it when someone else was faster."""
    return user.role is Role.DOCTOR and req.assigned_to_id in (None, user.id)


def can_claim(user: User, req: ReadingRequest) -> bool:
    return is_reader(user, req) and req.status is ReadingStatus.REQUESTED


def can_write_report(user: User, req: ReadingRequest) -> bool:
    return user.role is Role.DOCTOR and req.claimed_by_id == user.id


def can_addend(user: User, req: ReadingRequest) -> bool:
    """Any doctor treating the patient (an addendum carries its own author)."""
    return user.role is Role.DOCTOR and (req.claimed_by_id == user.id
                                         or patient_access.has_care_relationship(user, req.patient))


def can_cancel(user: User, req: ReadingRequest) -> bool:
    return user.role is Role.CLINIC_STAFF and req.facility_id == user.facility_id


def can_acknowledge(user: User, req: ReadingRequest) -> bool:
    return user.role is Role.CLINIC_STAFF and req.facility_id == user.facility_id


def visible_clause(user: User) -> sa.ColumnElement[bool]:
    """:func:`can_read` as a WHERE clause on :class:`ReadingRequest` joined to its :class:`Patient` (searches);
    for a patient, the released report's join is the caller's (``Report.released_at``)."""
    match user.role:
        case Role.CLINIC_STAFF:
            return ReadingRequest.facility_id == user.facility_id
        case Role.DOCTOR:
            mine = sa.or_(ReadingRequest.claimed_by_id == user.id, sa.and_(
                ReadingRequest.claimed_by_id.is_(None), sa.or_(ReadingRequest.assigned_to_id.is_(None),
                                                               ReadingRequest.assigned_to_id == user.id)))
            return sa.or_(mine, patient_access.visible_clause(user))
        case Role.PATIENT:
            return patient_access.acting_patient_clause(user, CaregiverRight.RECORD)
        case _:
            return sa.false()


def refuse(action: str, by: User, req: ReadingRequest | None, request_id: object = None) -> NoReturn:
    """Audit the refusal and answer 404, so a request id tells a stranger nothing."""
    audit.forbid(action, by=by, patient_id=req.patient_id if req else None, resource_type="ServiceRequest",
                 resource_id=req.id if req else request_id)
