"""Reminders before each consult, through the notification outbox (in the app, by email and by text message).

``hospital consult-reminders`` (and the worker) calls :func:`send_due`. Each (appointment, lead, appointment time)
is claimed by inserting its :class:`AppointmentReminder` row: the unique key makes a second, concurrent tick wait
for the first and then skip, so a reminder goes out exactly once. The text is in the patient's language with
times in their zone, and carries the join link and the link to change or cancel (sign-in required, then straight
to that consult).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _

from app import db, i18n
from app.audit import service as audit
from app.consults.models import Appointment, AppointmentReminder, AppointmentStatus
from app.consults.service import change_cutoff
from app.notify import service as notify
from app.patients.models import Patient


def reminder_leads(config: Any = None) -> list[int]:
    """Minutes before a consult at which reminders go, farthest first (``CONSULT_REMINDER_MINUTES``)."""
    raw = str((config or current_app.config)["CONSULT_REMINDER_MINUTES"])
    return sorted({int(part) for part in raw.split(",") if part.strip() and int(part) > 0}, reverse=True)


def public_url(endpoint: str, **values: Any) -> str:
    """An absolute link for a message read outside the app, on ``PUBLIC_URL``."""
    base = urlsplit(current_app.config["PUBLIC_URL"])
    adapter = current_app.url_map.bind(base.netloc, script_name=base.path or "/", url_scheme=base.scheme or "https")
    return adapter.build(endpoint, values, force_external=True)


def _claim(appointment: Appointment, lead: int, *, notified: bool) -> bool:
    """Insert this reminder's row; False if another tick already has (or is committing) it."""
    try:
        with db.session.begin_nested():
            db.session.add(AppointmentReminder(appointment_id=appointment.id, lead_minutes=lead,
                                               start_at=appointment.start_at, notified=notified))
            db.session.flush()
    except sa.exc.IntegrityError:
        return False
    return True


def compose(appointment: Appointment, *, zone: str, locale: str) -> dict[str, str]:
    """The reminder's subject, email body and text message, in ``locale`` with times in ``zone``."""
    when = i18n.format_when(appointment.start_at, "weekday", tz=zone, locale=locale)
    cutoff = i18n.format_when(change_cutoff(appointment), "weekday", tz=zone, locale=locale)
    join = public_url("consults.waiting", appointment_id=appointment.id)
    change = public_url("consults.reschedule", appointment_id=appointment.id)
    minutes = current_app.config["CONSULT_CHECKIN_MINUTES"]
    with force_locale(locale):
        return {
            "subject": _("Reminder: video consult on %(when)s", when=when),
            "body": "\n\n".join([
                _("Your video consult with %(doctor)s is on %(when)s.", doctor=appointment.doctor.full_name,
                  when=when),
                _("Join it here (you can check in from %(minutes)d minutes before): %(url)s", minutes=minutes,
                  url=join),
                _("To change the time or cancel, until %(cutoff)s: %(url)s", cutoff=cutoff, url=change),
            ]),
            "sms": _("Town Health: video consult with %(doctor)s on %(when)s. Join: %(join)s Change or cancel: "
                     "%(change)s", doctor=appointment.doctor.full_name, when=when, join=join, change=change),
        }


def _send(appointment: Appointment, lead: int) -> bool:
    patient = db.session.get(Patient, appointment.patient_id)
    user = patient.user if patient is not None else None
    if user is None:
        return False  # no account to sign in with (the clinic books and joins for them)
    text = compose(appointment, zone=i18n.zone_of(user), locale=i18n.locale_of(user))
    notify.enqueue(recipient=user, subject=text["subject"], body=text["body"])
    if patient is not None and patient.phone:
        notify.enqueue(recipient=user, subject=text["subject"], body=text["sms"], channel=notify.SMS,
                       address=patient.phone)
    audit.record("appointment.remind", by=None, actor_name="system", patient_id=appointment.patient_id,
                 resource_type="Appointment", resource_id=appointment.id,
                 detail={"lead_minutes": lead, "sms": bool(patient is not None and patient.phone)})
    return True


def send_due(*, now: datetime | None = None) -> list[int]:
    """Queue the reminders now due; returns the appointments reminded. The caller commits.

    Only the nearest due reminder of a consult goes (a tick that was down a while sends one, not two); a reminder
    whose moment came before the consult was booked is passed over (the booking confirmation just went).
    """
    now = now or db.utcnow()
    leads = reminder_leads()
    if not leads:
        return []
    appointments = db.session.scalars(sa.select(Appointment).where(
        Appointment.status == AppointmentStatus.BOOKED, Appointment.start_at > now,
        Appointment.start_at <= now + timedelta(minutes=leads[0])).order_by(Appointment.id)).all()
    if not appointments:
        return []
    done = set(tuple(row) for row in db.session.execute(sa.select(
        AppointmentReminder.appointment_id, AppointmentReminder.lead_minutes, AppointmentReminder.start_at).where(
        AppointmentReminder.appointment_id.in_([a.id for a in appointments]))).all())
    reminded: list[int] = []
    for appointment in appointments:
        due = [lead for lead in leads if appointment.start_at - timedelta(minutes=lead) <= now
               and (appointment.id, lead, appointment.start_at) not in done]
        if not due:
            continue
        nearest = due[-1]
        booked_after = appointment.created_at > appointment.start_at - timedelta(minutes=nearest)
        for lead in due[:-1]:
            _claim(appointment, lead, notified=False)
        if not _claim(appointment, nearest, notified=not booked_after) or booked_after:
            continue
        if _send(appointment, nearest):
            reminded.append(appointment.id)
    db.session.flush()
    return reminded
