"""A patient's visit history for the care team: consults with their notes, prescriptions and scans, newest first.

The consult note is written in the room and filed when the consult ends; this is where it is read afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.auth.models import User
from app.consults.models import Encounter
from app.imaging import service as imaging
from app.patients import access as patient_access
from app.patients.models import Patient
from app.prescriptions import service as prescriptions


@dataclass(frozen=True)
class VisitEntry:
    """One line of the history; ``item`` is the encounter, prescription or study it describes."""

    kind: str  # consult | prescription | scan
    at: datetime
    item: Any
    dated_only: bool = False  # scans carry a study date, not a time


def visible_to(user: User, patient: Patient) -> bool:
    """The care team: the clinic that holds the record and the doctors treating the patient."""
    return patient_access.can_edit_clinical(user, patient)


def visit_history(patient: Patient, *, by: User) -> list[VisitEntry]:
    """Consults (with notes), signed prescriptions and scans; the encounter read is audited here, the others by
    their own services. An empty list for anyone outside the care team."""
    if not visible_to(by, patient):
        return []
    encounters = list(db.session.scalars(sa.select(Encounter).where(Encounter.patient_id == patient.id)
                                         .order_by(Encounter.started_at.desc())))
    audit.record("encounter.list", by=by, patient_id=patient.id, resource_type="Encounter",
                 detail={"ids": [e.id for e in encounters]})
    entries = [VisitEntry("consult", e.started_at, e) for e in encounters]
    entries += [VisitEntry("prescription", rx.signed_at, rx)
                for rx in prescriptions.for_patient(patient, by=by) if rx.signed_at is not None]
    entries += [VisitEntry("scan", datetime.combine(s.study_date, time.max, tzinfo=UTC), s, dated_only=True)
                for s in imaging.studies_for_patient(patient, by=by) if s.study_date is not None]
    return sorted(entries, key=lambda e: e.at, reverse=True)
