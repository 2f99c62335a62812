"""Modality Worklist C-FIND SCP: the clinic's scanner fetches its scheduled procedures (imaging orders of
patients registered at the clinic), with the patient's demographics, so what it sends back matches the chart.

Matching keys: PatientID, PatientName (wildcards, case-insensitive), AccessionNumber, and in the Scheduled
Procedure Step: Modality and ScheduledProcedureStepStartDate (a date or a range). Times are UTC
(TimezoneOffsetFromUTC +0000 in each answer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app import db
from app.audit import service as audit
from app.errors import ValidationFailed
from app.imaging import orders, service
from app.imaging.dimse import query
from app.imaging.dimse.status import (
    CANCELLED,
    CANNOT_UNDERSTAND,
    IDENTIFIER_MISMATCH,
    OUT_OF_RESOURCES,
    PENDING,
    failure,
)
from app.imaging.models import ImagingOrder
from app.patients.models import Patient

logger = logging.getLogger(__name__)
SEX = {"female": "F", "male": "M", "other": "O"}


def _text(ds: Dataset | None, keyword: str) -> str:
    if ds is None:
        return ""
    try:
        return str(ds.get(keyword) or "").strip()
    except Exception:  # noqa: BLE001 - a badly encoded value
        raise query.QueryError(IDENTIFIER_MISMATCH, f"{keyword} cannot be read") from None


def clauses(ds: Dataset) -> list[sa.ColumnElement[bool]]:
    """The matching keys of a worklist identifier. :raises QueryError: malformed."""
    out: list[sa.ColumnElement[bool]] = []
    if v := _text(ds, "PatientID"):
        out.append(query.like(Patient.mrn, v))
    if v := _text(ds, "PatientName"):
        family, _, given = v.partition("^")
        if family and family != "*":
            out.append(query.like(Patient.family_name_search, family, lower=True))
        if given.split("^")[0] and given.split("^")[0] != "*":
            out.append(query.like(Patient.given_name_search, given.split("^")[0], lower=True))
    if v := _text(ds, "AccessionNumber"):
        out.append(query.like(ImagingOrder.accession_number, v))
    try:
        steps = ds.get("ScheduledProcedureStepSequence")
    except Exception:  # noqa: BLE001
        raise query.QueryError(IDENTIFIER_MISMATCH, "ScheduledProcedureStepSequence cannot be read") from None
    step = steps[0] if steps else None
    if v := _text(step, "Modality"):
        out.append(query.like(ImagingOrder.modality, v))
    if v := _text(step, "ScheduledProcedureStepStartDate"):
        try:
            start, end = service.parse_date_range(v)
        except ValidationFailed:
            raise query.QueryError(IDENTIFIER_MISMATCH,
                                   "ScheduledProcedureStepStartDate must be YYYYMMDD or a range") from None
        if start:
            out.append(sa.func.date(ImagingOrder.scheduled_at) >= start)
        if end:
            out.append(sa.func.date(ImagingOrder.scheduled_at) <= end)
    return out


def study_uid(order: ImagingOrder) -> str:
    """The Study Instance UID the scanner is to use: derived from the accession number, so it never changes."""
    return str(generate_uid(entropy_srcs=["town-health-imaging-order", order.accession_number]))


def answer(order: ImagingOrder, *, calling: str) -> Dataset:
    patient = order.patient
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.PatientName = f"{patient.family_name}^{patient.given_name}"
    ds.PatientID = patient.mrn
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = SEX.get(patient.sex.value, "")
    ds.AccessionNumber = order.accession_number
    ds.StudyInstanceUID = study_uid(order)
    ds.RequestedProcedureID = order.accession_number
    ds.RequestedProcedureDescription = order.description
    ds.ReferringPhysicianName = ""
    step = Dataset()
    step.Modality = order.modality
    step.ScheduledStationAETitle = calling
    step.ScheduledProcedureStepStartDate = order.scheduled_at.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = order.scheduled_at.strftime("%H%M%S")
    step.ScheduledProcedureStepDescription = order.description
    step.ScheduledProcedureStepID = order.accession_number
    step.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def respond(event: Any, *, facility_id: int, calling: str) -> Iterator[tuple[Any, Dataset | None]]:
    """The worklist C-FIND responses: pending ones with the scheduled orders, or one failure that says why."""
    try:
        found = orders.worklist(facility_id=facility_id, clauses=clauses(event.identifier),
                                limit=query.MAX_MATCHES + 1)
        if len(found) > query.MAX_MATCHES:
            raise query.QueryError(OUT_OF_RESOURCES, f"more than {query.MAX_MATCHES} matches; narrow the query")
        for patient_id in {o.patient_id for o in found}:
            audit.record("imaging.dicom.worklist", by=None, actor_name=f"DICOM AE {calling}", patient_id=patient_id,
                         resource_type="ImagingOrder",
                         detail={"orders": [o.id for o in found if o.patient_id == patient_id]})
        answers = [answer(o, calling=calling) for o in found]
        db.session.commit()
    except query.QueryError as exc:
        yield failure(exc.status, exc.comment), None
        return
    except Exception:
        logger.exception("worklist C-FIND from %s failed", calling)
        yield failure(CANNOT_UNDERSTAND, "the worklist query could not be run"), None
        return
    for ds in answers:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, ds
