"""FHIR R4 shapes of the reading loop: ServiceRequest (the request) and DiagnosticReport (the report), linked to
the ImagingStudy. Built from the domain rows on each call; no second copy is kept."""

from __future__ import annotations

import base64
from typing import Any

from app.reading.models import Priority, ReadingRequest, ReadingStatus, Report

LOINC = "http://loinc.org"
STUDY_UID_SYSTEM = "urn:dicom:uid"
REQUEST_STATUS = {ReadingStatus.REQUESTED: "active", ReadingStatus.IN_PROGRESS: "active",
                  ReadingStatus.PRELIMINARY: "active", ReadingStatus.FINAL: "completed",
                  ReadingStatus.AMENDED: "completed", ReadingStatus.CANCELLED: "revoked"}
FHIR_PRIORITY = {Priority.ROUTINE: "routine", Priority.URGENT: "urgent", Priority.STAT: "stat"}


def _study_ref(req: ReadingRequest) -> dict[str, Any]:
    return {"reference": f"ImagingStudy/{req.study_id}",
            "identifier": {"system": STUDY_UID_SYSTEM, "value": f"urn:oid:{req.study.study_instance_uid}"}}


def service_request(req: ReadingRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "ServiceRequest", "id": str(req.id), "status": REQUEST_STATUS[req.status],
        "intent": "order", "priority": FHIR_PRIORITY[req.priority],
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}]}],
        "code": {"text": f"Report on {req.modality or 'imaging'} study"},
        "subject": {"reference": f"Patient/{req.patient_id}"},
        "authoredOn": req.requested_at.isoformat(),
        "requester": {"reference": f"Practitioner/{req.requested_by_id}"},
        "reasonCode": [{"text": req.clinical_question}],
        "supportingInfo": [_study_ref(req)],
        "extension": [{"url": "urn:town-health:reading-status", "valueCode": req.status.value}],
    }
    if req.assigned_to_id or req.claimed_by_id:
        body["performer"] = [{"reference": f"Practitioner/{req.claimed_by_id or req.assigned_to_id}"}]
    if req.study.accession_number:
        body["identifier"] = [{"type": {"text": "Accession Number"}, "value": req.study.accession_number}]
    return body


def _text(report: Report) -> str:
    return f"FINDINGS\n{report.findings}\n\nIMPRESSION\n{report.impression}"


def diagnostic_report(report: Report, *, qr_payload: str | None = None) -> dict[str, Any]:
    req = report.request
    status = {ReadingStatus.PRELIMINARY: "preliminary", ReadingStatus.FINAL: "final",
              ReadingStatus.AMENDED: "amended"}.get(req.status, "preliminary" if not report.is_signed else "final")
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": str(report.id), "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]},
        "subject": {"reference": f"Patient/{req.patient_id}"},
        "basedOn": [{"reference": f"ServiceRequest/{req.id}"}],
        "imagingStudy": [_study_ref(req)],
        "resultsInterpreter": [{"reference": f"Practitioner/{report.author_id}", "display": report.author.full_name}],
        "conclusion": report.impression,
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "title": "Findings and impression",
                           "data": base64.b64encode(_text(report).encode()).decode()}],
        "extension": [{"url": "urn:town-health:patient-summary", "valueString": report.patient_summary},
                      {"url": "urn:town-health:critical", "valueBoolean": report.critical}],
    }
    if report.signed_at:
        body["issued"] = report.signed_at.isoformat()
    if report.key_images:
        body["media"] = [{"comment": "Key image",
                          "link": {"identifier": {"system": STUDY_UID_SYSTEM, "value": f"urn:oid:{k['instance']}"}}}
                         for k in report.key_images]
    if report.addenda:
        body["extension"].append({"url": "urn:town-health:addenda", "valueString": "\n\n".join(
            f"Addendum by {v.author.full_name} ({v.created_at.isoformat()}): {v.text}" for v in report.addenda)})
    if qr_payload:
        body["extension"].append({"url": "urn:town-health:signature", "valueString": qr_payload})
    return body
