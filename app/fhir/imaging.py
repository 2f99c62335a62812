"""ImagingStudy (scans matched to a patient) and the Endpoint that serves their pixels over DICOMweb.

Studies not yet matched to a patient stay out of FHIR (an ImagingStudy must have a subject); clinic staff
reconcile them on the web first.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import request

from app import db
from app.auth.models import User
from app.errors import NotFound
from app.fhir import search as fs
from app.fhir.patients import patient_ref, record_id
from app.fhir.search import ResourceType, SearchParam
from app.imaging import service as imaging
from app.imaging.models import Study

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENDPOINT_ID = "dicomweb"


def _modality(code: str) -> dict[str, str]:
    return {"system": DCM, "code": code}


def study_to_fhir(s: Study) -> dict[str, Any]:
    series = []
    for item in s.series:
        series.append(fs.compact({
            "uid": item.series_instance_uid,
            "number": item.series_number,
            "modality": _modality(item.modality or "OT"),
            "description": item.series_description,
            "numberOfInstances": len(item.instances),
            "bodySite": {"display": item.body_part_examined} if item.body_part_examined else None,
        }))
    started = s.study_date.isoformat() if s.study_date else None
    return fs.compact({
        "resourceType": "ImagingStudy",
        "id": str(s.id),
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{s.study_instance_uid}"}]
        + ([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
             "value": s.accession_number}] if s.accession_number else []),
        "status": "available",
        "modality": [_modality(m) for m in s.modality_list],
        "subject": patient_ref(s.patient_id) if s.patient_id else None,
        "started": started,
        "endpoint": [{"reference": f"Endpoint/{ENDPOINT_ID}"}],
        "numberOfSeries": len(series),
        "numberOfInstances": sum(x.get("numberOfInstances", 0) for x in series),
        "description": s.study_description,
        "series": series,
    })


def visible_studies(by: User) -> fs.Query:
    return sa.select(Study).where(imaging.visible_clause(by), Study.patient_id.is_not(None))


def read_study(rid: str, by: User) -> Study:
    uid = db.session.scalar(sa.select(Study.study_instance_uid).where(Study.id == record_id(rid),
                                                                      Study.patient_id.is_not(None)))
    return imaging.get_study(uid or "-", by=by, action="fhir.imagingstudy.read")


def _uid_token(query: fs.Query, values: list[str], _modifier: str | None) -> fs.Query:
    uids = [code.removeprefix("urn:oid:") for system, code in fs.token_values(values)
            if system in (None, "urn:dicom:uid")]
    return query.where(Study.study_instance_uid.in_(uids or [""]))


def _modality_token(query: fs.Query, values: list[str], _modifier: str | None) -> fs.Query:
    codes = [code for system, code in fs.token_values(values) if system in (None, DCM) and code.isalnum()]
    return query.where(sa.or_(*[Study.modalities.contains(code) for code in codes]) if codes else sa.false())


fs.register(ResourceType(
    name="ImagingStudy", model=Study, to_fhir=study_to_fhir, read=read_study, visible=visible_studies,
    patient_of=lambda s: s.patient_id,
    documentation="Scans matched to a patient; pixels and metadata through the DICOMweb Endpoint.",
    params={
        **fs.patient_params(Study.patient_id, "patient", "subject"),
        "started": SearchParam("started", "date", fs.date_param(Study.study_date, is_date=True), "Study date"),
        "identifier": SearchParam("identifier", "token", _uid_token, "Study Instance UID (urn:dicom:uid|urn:oid:...)"),
        "modality": SearchParam("modality", "token", _modality_token, f"Modality ({DCM})"),
    },
    sorts={"started": Study.study_date},
    includes={"patient": ("Patient", lambda s: [str(s.patient_id)])},
))


# ---------------------------------------------------------------- Endpoint


class DicomWeb:
    id = ENDPOINT_ID


def endpoint_to_fhir(_endpoint: DicomWeb) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs", "display": "DICOM WADO-RS"},
        "name": "DICOMweb (QIDO-RS, WADO-RS, STOW-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": request.url_root.rstrip("/") + "/dicomweb",
    }


def read_endpoint(rid: str, _by: User) -> DicomWeb:
    if rid != ENDPOINT_ID:
        raise NotFound("No Endpoint with that id.")
    return DicomWeb()


def search_endpoints(search: fs.Search, _by: User) -> tuple[list[Any], int]:
    for name, _modifier, values in search.filters:
        if name == "_id" and ENDPOINT_ID not in values:
            return [], 0
    return [DicomWeb()][search.offset:search.offset + search.count], 1


fs.register(ResourceType(
    name="Endpoint", model=DicomWeb, to_fhir=endpoint_to_fhir, read=read_endpoint, visible=lambda _by: sa.select(),
    audited=False, rows=search_endpoints, documentation="Where ImagingStudy pixels are served (DICOMweb).",
    params={"_id": SearchParam("_id", "token", lambda q, _v, _m: q, "Logical id ('dicomweb')")},
))
