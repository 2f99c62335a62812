"""Imaging orders: a requested imaging procedure for a patient of a clinic, made by its staff from the chart.

The clinic's scanner reads them as its Modality Worklist (:mod:`app.imaging.dimse.worklist`), copies the
patient's MRN and the Accession Number into what it sends back, and so the scans land on the chart rather than
under "Unmatched scans". Times are UTC.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.auth.models import Role, User
from app.errors import Forbidden, ValidationFailed
from app.imaging.models import ImagingOrder
from app.patients.models import Patient

MODALITIES = ("CT", "MR", "CR", "DX", "US", "MG", "NM", "XA")


@dataclass(frozen=True)
class ReadingAsk:
    """What an order asks of the reading service once its scan arrives (as "Send to be read" would)."""

    priority: str
    question: str
    assigned_to_id: int | None = None  # None: the hospital's reading pool


ReadingCheck = Callable[[ReadingAsk], dict[str, list[str]]]
_reading_checks: list[ReadingCheck] = []


def on_reading_ask(check: ReadingCheck) -> Callable[[], None]:
    """Have ``check(ask)`` judge what an order asks to be read, returning field errors (empty when fine): the
    reading domain owns those rules and registers its check, since imaging does not import it. Returns a function
    that removes the check."""
    if check not in _reading_checks:
        _reading_checks.append(check)
    return lambda: _reading_checks.remove(check) if check in _reading_checks else None


def _accession_number() -> str:
    """A new Accession Number (SH, at most 16 characters), unique among orders."""
    while True:
        number = f"TH{secrets.randbelow(10**10):010d}"
        if db.session.scalar(sa.select(ImagingOrder.id).where(ImagingOrder.accession_number == number)) is None:
            return number


def create_order(patient: Patient, *, by: User, modality: str, description: str, scheduled_at: datetime,
                 read: ReadingAsk | None = None) -> ImagingOrder:
    """Request an imaging procedure for a patient of the actor's clinic, and with ``read`` also its reading
    once the scan arrives; the caller opened the patient with ``patients.service.get_patient`` and commits.

    :raises Forbidden: not clinic staff of the patient's clinic (audited).
    :raises ValidationFailed: unknown modality, empty description, a time without a zone, or a reading ask that
        "Send to be read" would refuse.
    """
    if by.role is not Role.CLINIC_STAFF or by.facility_id != patient.facility_id:
        audit.forbid("imaging.order.create", by=by, patient_id=patient.id,
                     resource_type="ImagingOrder",
                     error=Forbidden("Only staff of the patient's clinic request scans."))
    errors: dict[str, list[str]] = {}
    if modality not in MODALITIES:
        errors["modality"] = ["Choose a modality from the list."]
    if not description.strip():
        errors["description"] = ["Say which procedure, e.g. CT chest without contrast."]
    if scheduled_at.tzinfo is None:
        errors["scheduled_at"] = ["The time needs its zone."]
    if read is not None:
        if not _reading_checks:
            errors["read"] = ["Reading requests are not available here."]
        for check in _reading_checks:
            errors |= check(read)
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    order = ImagingOrder(accession_number=_accession_number(), patient_id=patient.id,
                         facility_id=patient.facility_id, modality=modality, description=description.strip()[:64],
                         scheduled_at=scheduled_at, status="scheduled", created_by_id=by.id)
    if read is not None:
        order.read_priority, order.read_question = read.priority, read.question.strip()
        order.read_assigned_to_id = read.assigned_to_id
    db.session.add(order)
    db.session.flush()
    audit.record("imaging.order.create", by=by, patient_id=patient.id, resource_type="ImagingOrder",
                 resource_id=order.id, detail={"modality": modality, "accession_number": order.accession_number,
                                               "read_priority": order.read_priority})
    return order


def orders_for_patient(patient: Patient, *, by: User) -> list[ImagingOrder]:
    """The orders on a chart the viewer already opened (that read is audited there)."""
    if by.role not in (Role.CLINIC_STAFF, Role.DOCTOR):
        return []
    return list(db.session.scalars(sa.select(ImagingOrder).where(ImagingOrder.patient_id == patient.id)
                                   .order_by(ImagingOrder.scheduled_at.desc())))


def worklist(*, facility_id: int, clauses: list[sa.ColumnElement[bool]], limit: int) -> list[ImagingOrder]:
    """Scheduled orders of a clinic matching ``clauses`` (on :class:`ImagingOrder` and :class:`Patient`)."""
    return list(db.session.scalars(
        sa.select(ImagingOrder).join(ImagingOrder.patient)
        .where(ImagingOrder.facility_id == facility_id, ImagingOrder.status == "scheduled", *clauses)
        .order_by(ImagingOrder.scheduled_at, ImagingOrder.id).limit(limit)))


def order_for_study(*, accession_number: str | None, facility_id: int | None, patient_id: int | None,
                    lock: bool = False) -> ImagingOrder | None:
    """The live order a study answers: same Accession Number, clinic and patient; with ``lock``, its row is
    locked until the transaction ends, so two arrivals of one study act on it one after the other."""
    if not accession_number or facility_id is None or patient_id is None:
        return None
    query = sa.select(ImagingOrder).where(ImagingOrder.accession_number == accession_number,
                                          ImagingOrder.facility_id == facility_id,
                                          ImagingOrder.patient_id == patient_id, ImagingOrder.status != "cancelled")
    if not lock:
        return db.session.scalar(query)
    order = db.session.scalar(query.with_for_update())
    if order is not None:
        db.hold_row(order)
    return order
