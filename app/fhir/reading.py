"""ServiceRequest (a request to read a study) and DiagnosticReport (the report), from :mod:`app.reading`.

The shapes are the reading domain's own (:mod:`app.reading.fhir`); this module adds search and access. A patient
sees a report only once it is released to them, and never the request behind a report they cannot see.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.auth.models import Role, User
from app.fhir import search as fs
from app.fhir.patients import record_id
from app.fhir.search import ResourceType, SearchParam
from app.patients.models import Patient
from app.reading import access
from app.reading import fhir as shapes
from app.reading import service as reading
from app.reading.models import ReadingRequest, Report


def visible_requests(by: User) -> fs.Query:
    query = (sa.select(ReadingRequest).join(Patient, Patient.id == ReadingRequest.patient_id)
             .where(access.visible_clause(by)))
    if by.role is Role.PATIENT:
        released = sa.select(Report.request_id).where(Report.released_at.is_not(None))
        query = query.where(ReadingRequest.id.in_(released))
    return query


def visible_reports(by: User) -> fs.Query:
    query = (sa.select(Report).join(ReadingRequest, ReadingRequest.id == Report.request_id)
             .join(Patient, Patient.id == ReadingRequest.patient_id).where(access.visible_clause(by)))
    return query.where(Report.released_at.is_not(None)) if by.role is Role.PATIENT else query


fs.register(ResourceType(
    name="ServiceRequest", model=ReadingRequest, to_fhir=shapes.service_request,
    read=lambda rid, by: reading.get_request(record_id(rid), by=by, action="fhir.servicerequest.read"),
    visible=visible_requests, patient_of=lambda r: r.patient_id,
    documentation="Requests to read an imaging study (the findings loop).",
    params={**fs.patient_params(ReadingRequest.patient_id, "patient", "subject"),
            "authored": SearchParam("authored", "date", fs.date_param(ReadingRequest.requested_at), "When requested")},
    sorts={"authored": ReadingRequest.requested_at},
    includes={"patient": ("Patient", lambda r: [str(r.patient_id)])},
))


def report_to_fhir(report: Report) -> dict[str, Any]:
    return shapes.diagnostic_report(report, qr_payload=reading.qr_payload(report))


fs.register(ResourceType(
    name="DiagnosticReport", model=Report, to_fhir=report_to_fhir,
    read=lambda rid, by: reading.get_report(record_id(rid), by=by, action="fhir.diagnosticreport.read"),
    visible=visible_reports, patient_of=lambda r: r.request.patient_id,
    documentation="Imaging reports; a patient sees theirs once released.",
    params={**fs.patient_params(ReadingRequest.patient_id, "patient", "subject"),
            "issued": SearchParam("issued", "date", fs.date_param(Report.signed_at), "When signed"),
            "based-on": fs.ref_param("based-on", Report.request_id, "ServiceRequest", "The reading request")},
    sorts={"issued": Report.signed_at},
    includes={"patient": ("Patient", lambda r: [str(r.request.patient_id)]),
              "based-on": ("ServiceRequest", lambda r: [str(r.request_id)])},
))
