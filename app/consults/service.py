"""Consult rules: availability, booking, check-in, admission, joining, signaling, chat, ending.

Every function takes the acting user (``by=``), enforces who may do what, and writes the audit event.
A consult is addressed by its appointment id. Only the booked patient, the doctor, and staff the doctor
invited are participants; everyone else gets an audited 404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from app import clock, db, i18n
from app.audit import service as audit
from app.auth.models import Role, User
from app.catalogue import N_
from app.consults import access, recordings, signals
from app.consults.models import (
    Appointment,
    AppointmentStatus,
    Availability,
    AvailabilityException,
    ChatMessage,
    ConsultParticipant,
    ConsultSession,
    Encounter,
    EncounterStatus,
    JoinTokenUse,
    ParticipantKind,
    SignalMessage,
)
from app.errors import Conflict, Forbidden, ValidationFailed
from app.notify import service as notify
from app.patients import access as patient_access
from app.patients import service as patients
from app.patients.models import CaregiverRight, Patient

# "media": the sender's camera went off or on, or audio only was asked for the whole call (poor connections).
SIGNAL_KINDS = {"hello", "offer", "answer", "candidate", "bye", "media"}
MAX_SDP = 64_000
MAX_CANDIDATE = 1_000
MAX_CHAT = 2_000
RATE_WINDOW_SECONDS = 10
BOOKING_HORIZON_DAYS = 60
PROXY_SEES = access.PROXY_SEES
"""A caregiver sees the appointments of the person they act for with either consult right."""


def _cfg(name: str) -> Any:
    return current_app.config[name]


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed("Some fields need attention.", errors={field: [message]})


# ---------------------------------------------------------------- availability and slots


def publish_availability(*, by: User, weekday: int, start_time: time, end_time: time,
                         slot_minutes: int = 15, timezone: str | None = None) -> Availability:
    """Add a weekly window of consult slots for the acting doctor, in wall-clock times of ``timezone`` (default:
    the doctor's own zone).

    :raises Forbidden: not a doctor. :raises ValidationFailed: bad window. :raises Conflict: overlaps a window.
    """
    access.require_role(by, Role.DOCTOR, "availability.create", "Only doctors publish availability.",
                        "Availability")
    zone = timezone or i18n.zone_of(by)
    if not 0 <= weekday <= 6:
        raise _invalid("weekday", "Choose a day of the week.")
    if start_time >= end_time:
        raise _invalid("end_time", "The window must end after it starts.")
    if not 5 <= slot_minutes <= 240:
        raise _invalid("slot_minutes", "Slots last between 5 and 240 minutes.")
    if not i18n.valid_zone(zone):
        raise _invalid("timezone", "Choose a time zone from the list.")
    overlap = db.session.scalar(sa.select(Availability.id).where(
        Availability.doctor_id == by.id, Availability.weekday == weekday,
        Availability.start_time < end_time, Availability.end_time > start_time))
    if overlap is not None:
        raise Conflict("This window overlaps one you already published.")
    window = Availability(doctor_id=by.id, weekday=weekday, start_time=start_time, end_time=end_time,
                          slot_minutes=slot_minutes, timezone=zone)
    db.session.add(window)
    db.session.flush()
    audit.record("availability.create", by=by, resource_type="Availability", resource_id=window.id)
    return window


def remove_availability(window_id: int, *, by: User) -> None:
    window = db.session.get(Availability, window_id)
    if window is None or window.doctor_id != by.id:
        audit.forbid("availability.delete", by=by, resource_type="Availability", resource_id=window_id)
    db.session.delete(window)
    audit.record("availability.delete", by=by, resource_type="Availability", resource_id=window_id)


def add_exception(*, by: User, starts_at: datetime, ends_at: datetime, reason: str | None = None
                  ) -> AvailabilityException:
    """Block a period (holiday, ward round); booked appointments in it are left for the doctor to move."""
    access.require_role(by, Role.DOCTOR, "availability.exception", "Only doctors manage their availability.",
                        "AvailabilityException")
    if starts_at >= ends_at:
        raise _invalid("ends_at", "The period must end after it starts.")
    exc = AvailabilityException(doctor_id=by.id, starts_at=starts_at, ends_at=ends_at,
                                reason=(reason or "").strip()[:200] or None)
    db.session.add(exc)
    db.session.flush()
    audit.record("availability.exception", by=by, resource_type="AvailabilityException", resource_id=exc.id)
    return exc


def windows_for(doctor: User) -> Sequence[Availability]:
    return db.session.scalars(sa.select(Availability).where(Availability.doctor_id == doctor.id)
                              .order_by(Availability.weekday, Availability.start_time)).all()


def exceptions_for(doctor: User) -> Sequence[AvailabilityException]:
    return db.session.scalars(sa.select(AvailabilityException).where(
        AvailabilityException.doctor_id == doctor.id, AvailabilityException.ends_at > db.utcnow())
        .order_by(AvailabilityException.starts_at)).all()


@dataclass(frozen=True)
class Slot:
    doctor_id: int
    start: datetime
    end: datetime


def window_slots(window: Availability, since: datetime, until: datetime) -> list[Slot]:
    """The slots of one weekly window that start in [since, until), in UTC.

    Each day's window runs between two instants: its start and end wall-clock times in the window's zone. On a
    daylight-saving change the doctor's 09:00 stays 09:00 (the UTC time moves instead); a window that spans the
    change is as long as the night really is, its slots back to back. A start in the skipped hour moves forward
    by the gap (as Python and Java do).
    """
    zone = ZoneInfo(window.timezone)
    first = since.astimezone(zone).date()
    last = until.astimezone(zone).date()
    step = timedelta(minutes=window.slot_minutes)
    slots: list[Slot] = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        if day.weekday() != window.weekday:
            continue
        start = datetime.combine(day, window.start_time, tzinfo=zone).astimezone(UTC)
        window_end = datetime.combine(day, window.end_time, tzinfo=zone).astimezone(UTC)
        while start + step <= window_end:
            if since <= start < until:
                slots.append(Slot(window.doctor_id, start, start + step))
            start += step
    return slots


def _published_slots(doctor_id: int, since: datetime, until: datetime) -> list[Slot]:
    windows = db.session.scalars(sa.select(Availability).where(Availability.doctor_id == doctor_id)).all()
    # Two windows published in different zones may cover the same moment: offer it once.
    unique = {s.start: s for w in windows for s in window_slots(w, since, until)}
    return sorted(unique.values(), key=lambda s: s.start)


def open_slots(doctor: User, *, day_from: date | None = None, days: int = 7) -> list[Slot]:
    """Free future slots of ``doctor`` starting within ``days`` UTC days from ``day_from`` (default: from now):
    published windows minus exceptions minus booked appointments."""
    now = db.utcnow()
    since = datetime.combine(day_from, time(0), tzinfo=UTC) if day_from else now
    until = since + timedelta(days=min(days, BOOKING_HORIZON_DAYS))
    slots = [s for s in _published_slots(doctor.id, since, until) if s.start > now]
    if not slots:
        return []
    lo, hi = slots[0].start, slots[-1].end
    blocked = db.session.execute(sa.select(AvailabilityException.starts_at, AvailabilityException.ends_at).where(
        AvailabilityException.doctor_id == doctor.id, AvailabilityException.ends_at > lo,
        AvailabilityException.starts_at < hi)).all()
    taken = db.session.execute(sa.select(Appointment.start_at, Appointment.end_at).where(
        Appointment.doctor_id == doctor.id, Appointment.slot_key.is_not(None),
        Appointment.end_at > lo, Appointment.start_at < hi)).all()
    busy = [*blocked, *taken]
    return [s for s in slots if not any(b_start < s.end and s.start < b_end for b_start, b_end in busy)]


def slot_key(doctor_id: int, start: datetime) -> str:
    return f"{doctor_id}@{start.astimezone(UTC).strftime('%Y%m%dT%H%M')}"


def _find_open_slot(doctor: User, start: datetime) -> Slot:
    if start.tzinfo is None:
        raise _invalid("start", "Give the time with its time zone (ISO 8601 offset).")
    slots = open_slots(doctor, day_from=start.astimezone(UTC).date(), days=1)
    for slot in slots:
        if slot.start == start:
            return slot
    raise Conflict(N_("That slot is not available. Choose another time."), errors={"start": [N_("Not available.")]})


def bookable_doctors() -> Sequence[User]:
    return patients.doctors_for_assignment()


# ---------------------------------------------------------------- booking


def _claim_slot(appointment: Appointment, key: str) -> None:
    """Take the slot inside a savepoint so a lost race becomes a clean 409, not a broken transaction."""
    try:
        with db.session.begin_nested():
            appointment.slot_key = key
            db.session.add(appointment)
            db.session.flush()
    except sa.exc.IntegrityError:
        raise Conflict(N_("Someone booked this slot a moment ago. Choose another time."),
                       errors={"start": [N_("Just taken.")]}) from None


def book(*, patient: Patient, doctor_id: int, start: datetime, by: User, reason: str | None = None) -> Appointment:
    """Book a video consult for ``patient`` (the patient themself or staff of their clinic).

    Creates the doctor's care relationship and queues confirmations to both.

    :raises NotFound: no access to the patient (audited). :raises ValidationFailed: not an active doctor.
    :raises Conflict: the slot is not offered or was just taken.
    """
    if not access.acts_for(patient, by, CaregiverRight.BOOK):
        access.refuse("appointment.create", by, None, patient.id)
    doctor = db.session.get(User, doctor_id)
    if doctor is None or doctor.role is not Role.DOCTOR or not doctor.active:
        raise _invalid("doctor_id", "Choose an active doctor.")
    slot = _find_open_slot(doctor, start)
    appointment = Appointment(doctor_id=doctor.id, patient_id=patient.id, booked_by_id=by.id, start_at=slot.start,
                              end_at=slot.end, status=AppointmentStatus.BOOKED,
                              reason=(reason or "").strip()[:300] or None)
    _claim_slot(appointment, slot_key(doctor.id, slot.start))
    patients.ensure_care_relationship(patient, doctor, by=by, reason="Video consult booked")
    audit.record("appointment.create", by=by, patient_id=patient.id, resource_type="Appointment",
                 resource_id=appointment.id)
    minutes = _cfg("CONSULT_CHECKIN_MINUTES")
    _notify_both(appointment, lambda when: (
        _("Video consult booked"),
        _("Video consult with %(doctor)s on %(when)s. Check in from %(minutes)d minutes before in Town Health.",
          doctor=doctor.full_name, when=when(slot.start), minutes=minutes)))
    if by.role is Role.PATIENT and patient.user_id != by.id:  # a caregiver booked: they get the confirmation too
        with force_locale(by.locale or "en"):
            notify.enqueue(recipient=by, subject=_("Video consult booked"), body=_(
                "Video consult for %(patient)s with %(doctor)s on %(when)s. Check in from %(minutes)d minutes "
                "before, acting for them.", patient=f"{patient.given_name} {patient.family_name}",
                doctor=doctor.full_name, when=_when(slot.start), minutes=minutes))
    return appointment


def _when(moment: datetime) -> str:
    """A time for the person making this request, in their zone, with the zone's name."""
    return i18n.format_when(moment, "weekday")


Compose = Callable[[Callable[[datetime], str]], tuple[str, str]]


def _notify_both(appointment: Appointment, compose: Compose) -> None:
    """Tell the patient and the doctor, each in their own language with times in their own zone."""
    patient = db.session.get(Patient, appointment.patient_id)
    doctor = db.session.get(User, appointment.doctor_id)
    for recipient in (patient.user if patient is not None else None, doctor):
        if recipient is None:
            continue
        zone, locale = i18n.zone_of(recipient), i18n.locale_of(recipient)
        with force_locale(locale):
            subject, body = compose(lambda m, zone=zone, locale=locale: i18n.format_when(
                m, "weekday", tz=zone, locale=locale))
            if recipient is doctor:
                body = f"{body} {_('Appointment #%(id)d.', id=appointment.id)}"
        notify.enqueue(recipient=recipient, subject=subject, body=body)


def visible_clause(user: User) -> sa.ColumnElement[bool]:
    """Appointments ``user`` may see, as a WHERE clause (:func:`app.consults.access.visible_clause`)."""
    return access.visible_clause(user)


def get_appointment(appointment_id: int, *, by: User, action: str = "appointment.read",
                    audit_read: bool = True) -> Appointment:
    """:raises NotFound: no such appointment or no access (audited, same answer)."""
    appointment = db.session.get(Appointment, appointment_id)
    if appointment is None or not access.can_see(appointment, by):
        access.refuse(action, by, appointment_id, appointment.patient_id if appointment else None)
    if audit_read:
        audit.record(action, by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                     resource_id=appointment.id)
    return appointment


def list_for(by: User, *, upcoming_only: bool = True) -> Sequence[Appointment]:
    """Appointments the user is part of: a patient's own, a doctor's, a clinic's patients'."""
    query = sa.select(Appointment).join(Patient, Patient.id == Appointment.patient_id)
    if by.role is Role.PATIENT:
        query = query.where(patient_access.acting_patient_clause(by, *PROXY_SEES))
    elif by.role is Role.DOCTOR:
        query = query.where(Appointment.doctor_id == by.id)
    elif by.role is Role.CLINIC_STAFF:
        query = query.where(Patient.facility_id == by.facility_id)
    else:
        return []
    if upcoming_only:
        query = query.where(Appointment.end_at > db.utcnow() - timedelta(hours=12))
    rows = db.session.scalars(query.order_by(Appointment.start_at).limit(200)).all()
    audit.record("appointment.list", by=by, resource_type="Appointment", detail={"ids": [a.id for a in rows]})
    return rows


def _open_consults_query(patient: Patient) -> sa.Select[tuple[Appointment]]:
    return sa.select(Appointment).where(
        Appointment.patient_id == patient.id, Appointment.status.in_([s for s in AppointmentStatus if s.is_open]),
        Appointment.end_at > db.utcnow()).order_by(Appointment.start_at)


def open_consults_for(patient: Patient) -> Sequence[Appointment]:
    """The patient's consults still to come, soonest first (e.g. to discuss results in)."""
    return db.session.scalars(_open_consults_query(patient).limit(20)).all()


def open_consult_of(patient: Patient, appointment_id: int | None) -> Appointment | None:
    """That consult, if it is one of the patient's still to come."""
    return db.session.scalar(_open_consults_query(patient).where(Appointment.id == appointment_id))


def day_view(doctor: User, *, day: date | None = None) -> Sequence[Appointment]:
    """A doctor's appointments for one day of their own zone, who is waiting first."""
    access.require_role(doctor, Role.DOCTOR, "appointment.list", "Only doctors have a consult day view.",
                        "Appointment")
    zone = ZoneInfo(i18n.zone_of(doctor))  # the doctor's own day, 23 or 25 hours long on a clock change
    day = day or db.utcnow().astimezone(zone).date()
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    rows = db.session.scalars(sa.select(Appointment).where(
        Appointment.doctor_id == doctor.id, Appointment.start_at >= start,
        Appointment.start_at < end).order_by(Appointment.start_at)).all()
    audit.record("appointment.list", by=doctor, resource_type="Appointment", detail={"ids": [a.id for a in rows]})
    return rows


def _transition(appointment: Appointment, allowed: tuple[AppointmentStatus, ...], action: str) -> None:
    if appointment.status not in allowed:
        raise Conflict(_("This appointment is %(status)s; it cannot be %(action)s now.",
                         status=_(appointment.status.label).lower(), action=_(action)))


def _require_booking_right(appointment: Appointment, by: User, action: str) -> None:
    """A caregiver who may only join consults sees the appointment but may not move or cancel it."""
    patient = appointment.patient
    if by.role is Role.PATIENT and not access.acts_for(patient, by, CaregiverRight.BOOK):
        patients.caregiver_refusal(CaregiverRight.BOOK, patient, by=by, action=action)


def change_cutoff(appointment: Appointment) -> datetime:
    """Until when the patient may move or cancel the consult themself (``CONSULT_CHANGE_CUTOFF_MINUTES``)."""
    return appointment.start_at - timedelta(minutes=_cfg("CONSULT_CHANGE_CUTOFF_MINUTES"))


def patient_may_change(appointment: Appointment) -> bool:
    return appointment.status.is_open and db.utcnow() < change_cutoff(appointment)


def _check_cutoff(appointment: Appointment, by: User, action: str) -> None:
    """Patients change their own booking online only until the cutoff; after it the clinic does (audited).

    :raises Conflict: past the cutoff.
    """
    if by.role is not Role.PATIENT or db.utcnow() < change_cutoff(appointment):
        return
    audit.forbid(action, by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                 resource_id=appointment.id, detail={"why": "after cutoff"},
                 error=Conflict(_("Online changes close %(minutes)d minutes before the consult (at %(when)s). "
                                  "To change or cancel it now, please call your clinic.",
                                  minutes=_cfg("CONSULT_CHANGE_CUTOFF_MINUTES"),
                                  when=_when(change_cutoff(appointment)))))


def cancel(appointment: Appointment, *, by: User, reason: str | None = None) -> Appointment:
    """Cancel and free the slot (patient, their caregiver with the booking right, their clinic, or the doctor);
    a patient only until the cutoff.

    :raises Conflict: not open, or a patient past the cutoff (audited).
    """
    _require_booking_right(appointment, by, "appointment.cancel")
    _transition(appointment, (AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED, AppointmentStatus.ARRIVED),
                N_("cancelled"))
    _check_cutoff(appointment, by, "appointment.cancel")
    appointment.status = AppointmentStatus.CANCELLED
    appointment.slot_key = None
    appointment.cancelled_at = db.utcnow()
    appointment.cancel_reason = (reason or "").strip()[:300] or None
    _end_session(appointment)
    audit.record("appointment.cancel", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                 resource_id=appointment.id)
    _notify_both(appointment, lambda when: (
        _("Video consult cancelled"),
        _("The video consult on %(when)s was cancelled.", when=when(appointment.start_at))))
    return appointment


def reschedule(appointment: Appointment, *, start: datetime, by: User) -> Appointment:
    """Move a booked appointment to another open slot of the same doctor; a patient only until the cutoff.

    :raises Conflict: not booked, the slot is not free, or a patient past the cutoff (audited).
    """
    _require_booking_right(appointment, by, "appointment.reschedule")
    _transition(appointment, (AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED), N_("moved"))
    _check_cutoff(appointment, by, "appointment.reschedule")
    doctor = db.session.get(User, appointment.doctor_id)
    assert doctor is not None
    slot = _find_open_slot(doctor, start)
    old = appointment.start_at
    appointment.start_at, appointment.end_at = slot.start, slot.end
    _claim_slot(appointment, slot_key(doctor.id, slot.start))
    audit.record("appointment.reschedule", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                 resource_id=appointment.id, detail={"from": old.isoformat(), "to": slot.start.isoformat()})
    _notify_both(appointment, lambda when: (
        _("Video consult moved"),
        _("The video consult moved from %(old)s to %(new)s.", old=when(old), new=when(slot.start))))
    return appointment


def check_in_opens_at(appointment: Appointment) -> datetime:
    return appointment.start_at - timedelta(minutes=_cfg("CONSULT_CHECKIN_MINUTES"))


def check_in(appointment: Appointment, *, by: User) -> Appointment:
    """The patient (or their clinic) checks in to the virtual waiting room, from 15 minutes before the start.

    :raises Conflict: too early, too late, or not booked.
    """
    if by.role is Role.DOCTOR:
        audit.forbid("appointment.check_in", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                     resource_id=appointment.id, error=Forbidden("The patient or their clinic checks in."))
    if by.role is Role.PATIENT and appointment.patient.user_id != by.id \
            and not patient_access.may_act_for(by, appointment.patient, CaregiverRight.JOIN):
        patients.caregiver_refusal(CaregiverRight.JOIN, appointment.patient, by=by, action="appointment.check_in")
    if appointment.status is AppointmentStatus.ARRIVED:
        return appointment
    _transition(appointment, (AppointmentStatus.BOOKED,), N_("checked in"))
    now = db.utcnow()
    if now < check_in_opens_at(appointment):
        raise Conflict(_("Check-in opens at %(time)s.", time=_when(check_in_opens_at(appointment))))
    if now >= appointment.end_at:
        raise Conflict("This appointment's time has passed. Book a new one.")
    appointment.status = AppointmentStatus.ARRIVED
    appointment.checked_in_at = now
    _ensure_session(appointment)
    audit.record("appointment.check_in", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                 resource_id=appointment.id)
    return appointment


def _ensure_session(appointment: Appointment) -> ConsultSession:
    session = appointment.session
    if session is None:
        session = ConsultSession(appointment=appointment)
        db.session.add(session)
        patient_user = appointment.patient.user_id
        if patient_user is not None:
            session.participants.append(ConsultParticipant(user_id=patient_user, kind=ParticipantKind.PATIENT))
        session.participants.append(ConsultParticipant(user_id=appointment.doctor_id, kind=ParticipantKind.DOCTOR))
        db.session.flush()
    return session


def admit(appointment: Appointment, *, by: User) -> Encounter:
    """The doctor lets a checked-in patient into the consult; the encounter starts."""
    access.require_doctor(appointment, by, "consult.admit")
    _transition(appointment, (AppointmentStatus.ARRIVED,), N_("admitted"))
    session = _ensure_session(appointment)
    if appointment.admitted_at is None:
        appointment.admitted_at = db.utcnow()
        signals.send(session, by, "admit", {})  # wakes the waiting room at once
    encounter = appointment.encounter
    if encounter is None:
        encounter = Encounter(appointment=appointment, patient_id=appointment.patient_id,
                              doctor_id=appointment.doctor_id)
        db.session.add(encounter)
        db.session.flush()
    audit.record("consult.admit", by=by, patient_id=appointment.patient_id, resource_type="Encounter",
                 resource_id=encounter.id)
    return encounter


def mark_noshow(appointment: Appointment, *, by: User) -> Appointment:
    access.require_doctor(appointment, by, "appointment.noshow")
    _transition(appointment, (AppointmentStatus.BOOKED,), N_("marked as no-show"))
    if db.utcnow() < appointment.start_at:
        raise Conflict("The appointment has not started yet.")
    appointment.status = AppointmentStatus.NOSHOW
    appointment.slot_key = None
    audit.record("appointment.noshow", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                 resource_id=appointment.id)
    return appointment


def _end_session(appointment: Appointment) -> None:
    session = appointment.session
    if session is not None and session.ended_at is None:
        now = db.utcnow()
        session.ended_at = now
        for p in session.participants:
            if p.present:
                p.left_at = now


def save_note(appointment: Appointment, *, by: User, notes: str | None, diagnosis: str | None) -> Encounter:
    """Save the consult note while the consult runs (the doctor only)."""
    access.require_doctor(appointment, by, "encounter.update")
    encounter = appointment.encounter
    if encounter is None:
        raise Conflict("Admit the patient first.")
    if notes is not None and len(notes) > 20_000:
        raise _invalid("notes", "Keep the note under 20,000 characters.")
    if diagnosis is not None and len(diagnosis) > 300:
        raise _invalid("diagnosis", "Use at most 300 characters.")
    if notes is not None:
        encounter.notes = notes
    if diagnosis is not None:
        encounter.diagnosis = diagnosis.strip() or None
    audit.record("encounter.update", by=by, patient_id=appointment.patient_id, resource_type="Encounter",
                 resource_id=encounter.id)
    return encounter


CONSULT_ENDED: list[Callable[[Appointment, User], None]] = []
"""Called in the same unit of work when a consult ends (e.g. results held for discussion are released); other
domains register here so this module imports none of them."""


def on_consult_ended(hook: Callable[[Appointment, User], None]) -> None:
    """Register a :data:`CONSULT_ENDED` hook (from a domain's ``init_app``); registering twice is harmless."""
    if hook not in CONSULT_ENDED:
        CONSULT_ENDED.append(hook)


def end_consult(appointment: Appointment, *, by: User, notes: str | None = None,
                diagnosis: str | None = None) -> Encounter:
    """End the consult: appointment fulfilled, encounter finished, everyone leaves."""
    access.require_doctor(appointment, by, "consult.end")
    _transition(appointment, (AppointmentStatus.ARRIVED,), N_("ended"))
    encounter = appointment.encounter or admit(appointment, by=by)
    if notes is not None or diagnosis is not None:
        save_note(appointment, by=by, notes=notes, diagnosis=diagnosis)
    now = db.utcnow()
    appointment.status = AppointmentStatus.FULFILLED
    encounter.status = EncounterStatus.FINISHED
    encounter.ended_at = now
    session = appointment.session
    if session is not None:
        recordings.stop_if_running(appointment, by=by, reason="consult ended")
    _end_session(appointment)  # participant rows before the signal lock (see signals.send)
    if session is not None:
        signals.send(session, by, "bye", {"reason": "ended"})
    audit.record("consult.end", by=by, patient_id=appointment.patient_id, resource_type="Encounter",
                 resource_id=encounter.id)
    for hook in CONSULT_ENDED:
        hook(appointment, by)
    return encounter


# ---------------------------------------------------------------- participants, join tokens, ICE servers


def participant_of(appointment: Appointment, user: User) -> ConsultParticipant | None:
    """The user's seat in the consult. A caregiver with the right to join takes a seat on the patient's side on
    first use (often for a patient who has no account or device of their own); the doctor admits them as they
    would the patient."""
    found = access.participant_of(appointment, user)
    session = appointment.session
    if found is None and session is not None and user.role is Role.PATIENT \
            and patient_access.may_act_for(user, appointment.patient, CaregiverRight.JOIN):
        found = ConsultParticipant(user_id=user.id, kind=ParticipantKind.PATIENT)
        session.participants.append(found)
        db.session.flush()
        audit.record("consult.caregiver_seat", by=user, patient_id=appointment.patient_id,
                     resource_type="ConsultSession", resource_id=session.id)
    return found


def invite(appointment: Appointment, *, user_id: int, by: User) -> ConsultParticipant:
    """The doctor brings a colleague (staff) into the consult."""
    access.require_doctor(appointment, by, "consult.invite")
    guest = db.session.get(User, user_id)
    if guest is None or not guest.active or guest.role in (Role.PATIENT, Role.ADMIN):
        raise _invalid("user_id", "Choose an active staff member.")
    session = _ensure_session(appointment)
    existing = access.participant_of(appointment, guest)
    if existing is not None:
        return existing
    participant = ConsultParticipant(user_id=guest.id, kind=ParticipantKind.GUEST, invited_by_id=by.id)
    session.participants.append(participant)
    db.session.flush()
    audit.record("consult.invite", by=by, patient_id=appointment.patient_id, resource_type="ConsultSession",
                 resource_id=session.id, detail={"user_id": guest.id})
    return participant


class _ClockSigner(TimestampSigner):
    """Join tokens age by :mod:`app.clock`, like everything else."""

    def get_timestamp(self) -> int:
        return int(clock.timestamp())


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_cfg("SECRET_KEY"), salt="consult-join", signer=_ClockSigner)


def _open_for(appointment: Appointment, by: User, action: str) -> tuple[ConsultSession, ConsultParticipant]:
    participant = participant_of(appointment, by)
    if participant is None:
        access.refuse(action, by, appointment.id, appointment.patient_id)
    if participant.removed_at is not None:
        audit.forbid(action, by=by, patient_id=appointment.patient_id,
                     resource_type="Appointment", resource_id=appointment.id, detail={"why": "removed"},
                     error=Forbidden("The doctor removed you from this consult."))
    session = appointment.session
    assert session is not None
    if session.ended_at is not None or appointment.status is not AppointmentStatus.ARRIVED:
        audit.forbid(action, by=by, patient_id=appointment.patient_id,
                     resource_type="ConsultSession", resource_id=session.id, detail={"why": "finished"},
                     error=Conflict("This consult has ended."))
    if appointment.admitted_at is None and participant.kind is not ParticipantKind.DOCTOR:
        raise Conflict("The doctor has not admitted you yet. Please wait in the waiting room.")
    return session, participant


def issue_join_token(appointment: Appointment, *, by: User) -> str:
    """A short-lived, single-use token bound to this consult and this user."""
    session, _participant_row = _open_for(appointment, by, "consult.token")
    return _serializer().dumps({"c": session.id, "u": by.id, "j": secrets.token_hex(16)})


def _bad_token(appointment: Appointment, by: User, why: str) -> NoReturn:
    audit.forbid("consult.join", by=by, patient_id=appointment.patient_id, resource_type="Appointment",
                 resource_id=appointment.id, detail={"why": why},
                 error=Forbidden("This join link is not valid any more. Reload the page to get a new one."))


def join(appointment: Appointment, *, token: str, by: User, since: int | None = None) -> ConsultParticipant:
    """Enter the consult with a join token.

    ``since``: the page already reads the consult's signals after this id, so an offer sent since then
    reaches it; the others' pages see it in the hello and need not make a fresh offer.

    :raises Forbidden: expired, tampered, replayed, or another consult's/user's token (audited).
    :raises Conflict: the consult has ended or the patient is not admitted yet.
    :raises NotFound: not a participant (audited).
    """
    session, participant = _open_for(appointment, by, "consult.join")
    try:
        data = _serializer().loads(token, max_age=_cfg("CONSULT_JOIN_TOKEN_SECONDS"))
    except SignatureExpired:
        _bad_token(appointment, by, "expired")
    except BadSignature:
        _bad_token(appointment, by, "bad signature")
    if not isinstance(data, dict) or data.get("c") != session.id or data.get("u") != by.id:
        _bad_token(appointment, by, "other consult or user")
    try:
        with db.session.begin_nested():
            db.session.add(JoinTokenUse(jti=str(data.get("j"))[:32], session_id=session.id, user_id=by.id))
            db.session.flush()
    except sa.exc.IntegrityError:
        _bad_token(appointment, by, "replayed")
    participant.joined_at = db.utcnow()
    participant.left_at = None
    hello = signals.send(session, by, "hello", {"role": participant.kind.value, "since": since})
    participant.joined_signal_id = hello.id
    audit.record("consult.join", by=by, patient_id=appointment.patient_id, resource_type="ConsultSession",
                 resource_id=session.id)
    return participant


def relay_join(appointment: Appointment, *, by: User) -> ConsultSession:
    """Authorise a participant (booked patient, doctor, invited staff) to send media through the relay, and
    switch the consult to relay mode. The caller forwards the SDP to the consult's media worker.

    :raises NotFound: not a participant (audited). :raises Conflict: ended, or not admitted yet.
    """
    session, _participant_row = _open_for(appointment, by, "consult.relay_join")
    session.media_mode = "relay"
    audit.record("consult.relay_join", by=by, patient_id=appointment.patient_id, resource_type="ConsultSession",
                 resource_id=session.id)
    return session


RELAY_REASONS = ("p2p-failed",)


def switch_to_relay(appointment: Appointment, *, by: User, reason: str) -> ConsultSession:
    """A participant's page could not connect peer to peer in time: move the whole consult to the relay.

    Emits ``mode`` ``{"mode": "relay", "reason": ...}`` so the other pages follow without user action (the
    caller's own page moves on the response). Idempotent: a consult already relayed gets no second signal.

    :raises NotFound: not a participant (audited). :raises Conflict: ended, or not admitted yet.
    :raises ValidationFailed: unknown reason.
    """
    session, _participant_row = _open_for(appointment, by, "consult.relay_switch")
    if reason not in RELAY_REASONS:
        raise _invalid("reason", _("Use one of: %(choices)s.", choices=", ".join(RELAY_REASONS)))
    switched = signals.move_to_relay(session, by=by, reason=reason)
    audit.record("consult.relay_switch", by=by, patient_id=appointment.patient_id, resource_type="ConsultSession",
                 resource_id=session.id, detail={"reason": reason, "switched": switched})
    return session


def relay_names(appointment: Appointment, *, by: User) -> list[dict[str, Any]]:
    """Who may appear on the viewer's relay tiles, with the label to show. A guest (interpreter, family) sees
    the patient labelled "Patient": guest pages carry no patient identity."""
    session = appointment.session
    if session is None:
        return []
    return [{"user_id": p.user_id, "kind": p.kind.value,
             "name": "Patient" if p.kind is ParticipantKind.PATIENT and by.role is Role.GUEST else p.user.full_name}
            for p in session.participants if p.removed_at is None]


def leave(appointment: Appointment, *, by: User) -> None:
    participant = participant_of(appointment, by)
    if participant is None:
        access.refuse("consult.leave", by, appointment.id, appointment.patient_id)
    if participant.present:
        participant.left_at = db.utcnow()
        assert appointment.session is not None
        signals.send(appointment.session, by, "bye", {"reason": "left"})
    audit.record("consult.leave", by=by, patient_id=appointment.patient_id, resource_type="ConsultSession",
                 resource_id=participant.session_id)


def turn_credentials(user: User, *, now: float | None = None) -> tuple[str, str]:
    """coturn "TURN REST API": username ``<expiry>:<user id>``, password base64(HMAC-SHA1(secret, username))."""
    expiry = int((now or clock.timestamp()) + _cfg("TURN_TTL_SECONDS"))
    username = f"{expiry}:{user.id}"
    digest = hmac.new(_cfg("TURN_SECRET").encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(user: User) -> list[dict[str, Any]]:
    """The RTCPeerConnection ``iceServers`` for this user, from configuration."""
    servers: list[dict[str, Any]] = []
    stun = [u.strip() for u in _cfg("STUN_URLS").split(",") if u.strip()]
    if stun:
        servers.append({"urls": stun})
    turn = [u.strip() for u in _cfg("TURN_URLS").split(",") if u.strip()]
    if turn and _cfg("TURN_SECRET"):
        username, credential = turn_credentials(user)
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers


# ---------------------------------------------------------------- signaling


def validate_sdp(sdp: object, field: str = "sdp") -> str:
    """Accept only something that looks like a session description; refuse the rest with a 422."""
    if not isinstance(sdp, str) or not sdp:
        raise _invalid(field, "An SDP session description is required.")
    if len(sdp) > MAX_SDP:
        raise _invalid(field, _("Session descriptions are limited to %(limit)d characters.", limit=MAX_SDP))
    lines = sdp.replace("\r\n", "\n").strip().split("\n")
    if lines[0] != "v=0" or not any(line.startswith("m=") for line in lines) \
            or not any(line.startswith("o=") for line in lines):
        raise _invalid(field, "This is not a valid SDP session description.")
    if any(len(line) < 2 or line[1] != "=" or any(ord(c) < 32 and c != "\t" for c in line) for line in lines):
        raise _invalid(field, "This is not a valid SDP session description.")
    return sdp


def validate_signal(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    if kind not in SIGNAL_KINDS:
        raise _invalid("kind", _("Use one of: %(choices)s.", choices=", ".join(sorted(SIGNAL_KINDS))))
    gen = payload.get("gen")
    if gen is not None and (not isinstance(gen, str) or len(gen) > 64):
        raise _invalid("gen", "A short string.")
    clean: dict[str, Any] = {"gen": gen}
    if kind == "hello" and payload.get("since") is not None:
        since = payload["since"]
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            raise _invalid("since", "A signal id.")
        clean["since"] = since
    if kind == "media":
        for flag in ("camera", "audio_only"):
            if not isinstance(payload.get(flag), bool):
                raise _invalid(flag, "true or false.")
            clean[flag] = payload[flag]
    if kind in ("offer", "answer"):
        clean["sdp"] = validate_sdp(payload.get("sdp"))
    elif kind == "candidate":
        candidate = payload.get("candidate")
        if candidate is not None:
            if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate", ""), str) \
                    or len(json.dumps(candidate)) > MAX_CANDIDATE:
                raise _invalid("candidate", "Not an ICE candidate.")
            text = candidate.get("candidate", "")
            if text and not text.startswith(("candidate:", "a=candidate:")):
                raise _invalid("candidate", "Not an ICE candidate.")
            candidate = {k: candidate.get(k) for k in ("candidate", "sdpMid", "sdpMLineIndex")}
        clean["candidate"] = candidate
    return clean


def post_signal(appointment: Appointment, *, by: User, kind: str, payload: dict[str, Any],
                to: int | None = None) -> SignalMessage:
    """Relay an offer, answer, ICE candidate or bye to the other participants of this consult.

    :raises NotFound: not a participant (audited). :raises Conflict: ended or not joined.
    :raises ValidationFailed: malformed message. (A flood is refused at the route: consults.api.)
    """
    session, participant = _open_for(appointment, by, "consult.signal")
    if not participant.present:
        raise Conflict("Join the consult before sending media negotiation messages.")
    clean = validate_signal(kind, payload)
    if to is not None and not any(p.user_id == to for p in session.participants):
        raise _invalid("to", "Not a participant of this consult.")
    return signals.send(session, by, kind, clean, recipient_id=to)


def pending_signals(appointment: Appointment, *, by: User, after: int = 0, limit: int = 200
                    ) -> list[dict[str, Any]]:
    """Messages for ``by`` newer than ``after`` (from the others; addressed to everyone or to ``by``).

    Readable after the end too, so a page learns the consult ended.
    """
    participant = participant_of(appointment, by)
    if participant is None:
        access.refuse("consult.signal", by, appointment.id, appointment.patient_id)
    session = appointment.session
    assert session is not None
    rows = db.session.scalars(sa.select(SignalMessage).where(
        SignalMessage.session_id == session.id, SignalMessage.id > after, SignalMessage.sender_id != by.id,
        sa.or_(SignalMessage.recipient_id.is_(None), SignalMessage.recipient_id == by.id))
        .order_by(SignalMessage.id).limit(limit)).all()
    return [{"id": m.id, "kind": m.kind, "from": m.sender_id, **json.loads(m.payload)} for m in rows]


def state(appointment: Appointment) -> dict[str, Any]:
    """What the waiting room and the consult page show (no patient data)."""
    session = appointment.session
    ended = appointment.status in (AppointmentStatus.FULFILLED, AppointmentStatus.CANCELLED,
                                   AppointmentStatus.NOSHOW)
    return {
        "id": appointment.id,
        "status": appointment.status.value,
        "admitted": appointment.admitted_at is not None,
        "ended": ended or (session is not None and session.ended_at is not None),
        "start": appointment.start_at.isoformat(),
        "check_in_opens": check_in_opens_at(appointment).isoformat(),
        "can_check_in": appointment.status is AppointmentStatus.BOOKED
        and db.utcnow() >= check_in_opens_at(appointment),
        "present": [p.user_id for p in session.participants if p.present] if session else [],
        "message": status_text(appointment),
    }


def status_text(appointment: Appointment) -> str:
    """An honest sentence for the patient about where things stand."""
    match appointment.status:
        case AppointmentStatus.BOOKED:
            if db.utcnow() < check_in_opens_at(appointment):
                return f"You can check in from {_when(check_in_opens_at(appointment))}."
            return "You can check in now."
        case AppointmentStatus.ARRIVED if appointment.admitted_at is None:
            return "You are checked in. The doctor will admit you; please keep this page open."
        case AppointmentStatus.ARRIVED:
            return "You are in the consult with the doctor."
        case AppointmentStatus.FULFILLED:
            return "The consult has ended."
        case _:
            return f"This appointment is {appointment.status.label.lower()}."


# ---------------------------------------------------------------- chat


def post_chat(appointment: Appointment, *, by: User, body: str) -> ChatMessage:
    """Send a chat line; it is kept with the encounter and pushed to the other participants."""
    session, participant = _open_for(appointment, by, "consult.chat")
    text = (body or "").strip()
    if not text:
        raise _invalid("body", "Write a message.")
    if len(text) > MAX_CHAT:
        raise _invalid("body", _("Use at most %(limit)d characters.", limit=MAX_CHAT))
    if any(ord(c) < 32 and c not in "\n\t" for c in text):
        raise _invalid("body", "Remove control characters.")
    encounter = appointment.encounter
    if encounter is None:
        raise Conflict("The consult has not started.")
    message = ChatMessage(sender_id=by.id, body=text)
    encounter.messages.append(message)
    db.session.flush()
    signals.send(session, by, "chat", {"chat_id": message.id, "body": text, "name": by.full_name,
                                  "at": message.created_at.isoformat()})
    audit.record("consult.chat", by=by, patient_id=appointment.patient_id, resource_type="ChatMessage",
                 resource_id=message.id)
    return message


def chat_history(appointment: Appointment) -> Sequence[ChatMessage]:
    if appointment.encounter is None:
        return []
    return appointment.encounter.messages
