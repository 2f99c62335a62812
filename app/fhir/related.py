"""RelatedPerson (read and search only): a patient's caregivers, as linked in :mod:`app.patients.caregivers`.

The FHIR shape of a caregiver link: who (the caregiver's name), the patient, the relationship (HL7 v3 RoleCode),
the period, and, as an extension, the rights the patient granted. Links are made and revoked in the app, where
the patient's consent is recorded; this face only reads them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.auth.models import User
from app.fhir import search as fs
from app.fhir.patients import coded, patient_ref, record_id
from app.fhir.search import ResourceType
from app.patients import access
from app.patients.models import CaregiverLink, Patient

ROLE_CODES = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
RIGHTS_EXTENSION = "urn:townhealth:caregiver-rights"


def related_person_to_fhir(link: CaregiverLink) -> dict[str, Any]:
    end = link.revoked_at or link.valid_until
    return fs.compact({
        "resourceType": "RelatedPerson",
        "id": str(link.id),
        "active": link.is_active(db.utcnow()),
        "patient": patient_ref(link.patient_id),
        "relationship": [coded(ROLE_CODES, link.relationship.code, link.relationship.value.replace("_", " "))],
        "name": [{"text": link.caregiver.full_name}],
        "period": fs.compact({"start": fs.instant(link.valid_from), "end": fs.instant(end)}),
        "extension": [{"url": RIGHTS_EXTENSION, "valueCode": right.value} for right in link.rights],
    })


def _may_read(by: User, link: CaregiverLink) -> bool:
    return link.caregiver_id == by.id or access.can_read(by, link.patient)


def read_related_person(rid: str, by: User) -> CaregiverLink:
    link = db.session.get(CaregiverLink, record_id(rid))
    if link is None or not _may_read(by, link):
        audit.forbid("fhir.relatedperson.read", by=by, patient_id=link.patient_id if link else None,
                     resource_type="RelatedPerson", resource_id=rid[:64])
    audit.record("fhir.relatedperson.read", by=by, patient_id=link.patient_id, resource_type="RelatedPerson",
                 resource_id=link.id)
    return link


def visible_related_persons(by: User) -> fs.Query:
    """The caregivers of the patients ``by`` may read, and ``by``'s own links as a caregiver."""
    return (sa.select(CaregiverLink).join(Patient, Patient.id == CaregiverLink.patient_id)
            .where(sa.or_(access.visible_clause(by), CaregiverLink.caregiver_id == by.id)))


fs.register(ResourceType(
    name="RelatedPerson", model=CaregiverLink, to_fhir=related_person_to_fhir, read=read_related_person,
    visible=visible_related_persons, patient_of=lambda link: link.patient_id,
    documentation="A patient's caregivers (family members who act for them with the rights the patient chose). "
                  "Read only: links are made and revoked in the app, with the patient's consent.",
    params=fs.patient_params(CaregiverLink.patient_id),
    sorts={"date": CaregiverLink.valid_from},
    includes={"patient": ("Patient", lambda link: [str(link.patient_id)])},
))
