"""Visit summaries: what the patient takes home from a video consult (reason, findings, diagnosis, plan,
prescriptions made, follow-up), written by the doctor in the consult room or right after it, shown to the patient
once the consult has ended, printable. The encounter note stays the clinician's own record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import sqlalchemy as sa

from app import db, text
from app.audit import service as audit
from app.auth.models import Role, User
from app.consults.models import Appointment, AppointmentStatus, VisitSummary
from app.errors import Conflict, ValidationFailed
from app.notify import service as notify
from app.patients import service as patients

RT = "VisitSummary"
LIMITS = {"reason": 500, "findings": 10_000, "diagnosis": 500, "plan": 10_000, "follow_up": 500}


def _refuse(action: str, by: User, appointment: Appointment) -> NoReturn:
    audit.forbid(action, by=by, patient_id=appointment.patient_id, resource_type=RT, resource_id=appointment.id)


def save(appointment: Appointment, *, by: User, **fields: str | None) -> VisitSummary:
    """Write or update the summary (the consult's doctor, during the consult or after it ended).

    :raises NotFound: not this consult's doctor (audited). :raises Conflict: the consult has not started or was
        cancelled. :raises ValidationFailed: a field too long.
    """
    action = "visit_summary.write"
    if by.role is not Role.DOCTOR or appointment.doctor_id != by.id:
        _refuse(action, by, appointment)
    if appointment.status not in (AppointmentStatus.ARRIVED, AppointmentStatus.FULFILLED):
        raise Conflict("A visit summary is written once the consult has started.")
    errors = {name: [message] for name, limit in LIMITS.items()
              if (message := text.problem(fields.get(name) or "", limit))}
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    summary = db.session.scalar(sa.select(VisitSummary).where(VisitSummary.appointment_id == appointment.id))
    first = summary is None
    if summary is None:
        summary = VisitSummary(appointment_id=appointment.id, patient_id=appointment.patient_id, author_id=by.id)
        db.session.add(summary)
    for name in LIMITS:
        value = fields.get(name)
        if value is not None:
            setattr(summary, name, value.strip())
    db.session.flush()
    if first and appointment.status is AppointmentStatus.FULFILLED:
        tell_patient(appointment)
    audit.record(action, by=by, patient_id=appointment.patient_id, resource_type=RT, resource_id=summary.id)
    return summary


def tell_patient(appointment: Appointment, _by: User | None = None) -> None:
    """Notify the patient that the summary of an ended consult is there (also the consult-ended hook)."""
    user = appointment.patient.user
    exists = db.session.scalar(sa.select(VisitSummary.id).where(VisitSummary.appointment_id == appointment.id))
    if user is not None and exists is not None:
        notify.enqueue(recipient=user, subject=notify.Message("Your visit summary"),
                       body=notify.Message("The doctor's summary of your video consult is ready under My health."))


def of(appointment: Appointment) -> VisitSummary | None:
    """The summary of a consult the caller already opened (for the doctor's form)."""
    return db.session.scalar(sa.select(VisitSummary).where(VisitSummary.appointment_id == appointment.id))


def read(appointment: Appointment, *, by: User) -> VisitSummary | None:
    """The summary as its reader sees it: the patient only once the consult ended; audited.

    The caller opened the appointment through ``consults.service.get_appointment`` (access checked there).
    """
    summary = of(appointment)
    if summary is None or (by.role is Role.PATIENT and appointment.status is not AppointmentStatus.FULFILLED):
        return None
    audit.record("visit_summary.read", by=by, patient_id=appointment.patient_id, resource_type=RT,
                 resource_id=summary.id)
    return summary


def prescriptions_made(summary: VisitSummary) -> list[Any]:
    """Prescriptions the doctor signed for the patient during the consult (to its end, or now)."""
    from app.prescriptions import service as prescriptions

    encounter = summary.appointment.encounter
    if encounter is None:
        return []
    return prescriptions.signed_by_between(summary.patient_id, summary.author_id, encounter.started_at,
                                           encounter.ended_at or db.utcnow())


def follow_up_booked(summary: VisitSummary) -> Appointment | None:
    """The patient's next consult booked after this one, shown on the summary beside the advice."""
    from app.consults import service as consults

    later = [a for a in consults.open_consults_for(summary.appointment.patient)
             if a.start_at > summary.appointment.start_at]
    return later[0] if later else None


def mine(*, by: User) -> Sequence[VisitSummary]:
    """The signed-in patient's summaries of ended consults, newest first ("My health")."""
    patient = patients.get_own_record(by=by)
    if patient is None:
        return []
    rows = db.session.scalars(sa.select(VisitSummary).join(VisitSummary.appointment).where(
        VisitSummary.patient_id == patient.id, Appointment.status == AppointmentStatus.FULFILLED)
        .order_by(Appointment.start_at.desc()).limit(20)).all()
    for summary in rows:
        audit.record("visit_summary.read", by=by, patient_id=patient.id, resource_type=RT, resource_id=summary.id)
    return rows
