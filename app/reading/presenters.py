"""How reading rows are shown: the waiting clock and the pool's age/sex line (computed here, not in Jinja)."""

from __future__ import annotations

from datetime import date, datetime

from flask_babel import gettext

from app import db
from app.patients.models import Patient
from app.reading.models import ReadingRequest


def duration_text(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return gettext("%(minutes)s min", minutes=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return gettext("%(hours)s h %(minutes)s min", hours=hours, minutes=str(minutes).zfill(2))
    return gettext("%(days)s days %(hours)s h", days=hours // 24, hours=hours % 24)


def waiting(req: ReadingRequest, now: datetime | None = None) -> str:
    """How long the request has waited (to the report being signed, once it is)."""
    end = req.final_at or req.cancelled_at or now or db.utcnow()
    return duration_text((end - req.requested_at).total_seconds())


def age_sex(patient: Patient, today: date | None = None) -> str:
    today = today or db.utcnow().date()
    b = patient.birth_date
    years = today.year - b.year - ((today.month, today.day) < (b.month, b.day))
    return f"{years} y, {patient.sex.value}"
