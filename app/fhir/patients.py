"""Patient, AllergyIntolerance, Condition and MedicationStatement from the patient record
(:mod:`app.patients`); a clinic system registers and updates Patients as clinic staff do on the web."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.auth.models import User
from app.errors import NotFound
from app.fhir import inputs
from app.fhir import search as fs
from app.fhir.outcome import FhirError
from app.fhir.search import ResourceType, SearchParam
from app.patients import access
from app.patients import service as patients
from app.patients.models import Allergy, ClinicalStatus, Condition, MedicationStatement, Patient, Sex
from app.patients.service import PatientInput

MRN_SYSTEM = "urn:town-health:mrn"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def record_id(rid: str) -> int:
    """A numeric id, or -1 (which matches nothing, so an odd id gets the same 404 as a missing one)."""
    found = fs.numeric_id(rid)
    return -1 if found is None else found


def patient_ref(patient_id: int) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id}"}


def user_ref(user_id: int | None) -> dict[str, str] | None:
    return {"reference": f"Practitioner/{user_id}"} if user_id else None


def coded(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [fs.compact({"system": system, "code": code, "display": display})]}


# ---------------------------------------------------------------- Patient


def patient_to_fhir(p: Patient) -> dict[str, Any]:
    telecom = [t for t in ({"system": "phone", "value": p.phone, "use": "home"} if p.phone else None,
                           {"system": "email", "value": p.email} if p.email else None) if t]
    return fs.compact({
        "resourceType": "Patient",
        "id": str(p.id),
        "meta": {"lastUpdated": fs.instant(p.updated_at)},
        "identifier": [{"use": "usual", "type": coded(V2_0203, "MR", "Medical record number"),
                        "system": MRN_SYSTEM, "value": p.mrn}],
        "active": True,
        "name": [{"use": "official", "text": f"{p.given_name} {p.family_name}", "family": p.family_name,
                  "given": [p.given_name]}],
        "telecom": telecom,
        "gender": p.sex.value,
        "birthDate": fs.day(p.birth_date),
        "address": [{"text": p.address}] if p.address else None,
        "managingOrganization": {"reference": f"Organization/{p.facility_id}", "display": p.facility.name},
    })


def patient_input(body: dict[str, Any]) -> PatientInput:
    """Map a FHIR Patient to the registration form's fields."""
    inputs.only(body, {"identifier", "active", "name", "telecom", "gender", "birthDate", "address",
                       "managingOrganization"}, "Patient")
    get = inputs.get
    family = get(body, "name[0].family", str, required=True, resource="Patient")
    given = get(body, "name[0].given[0]", str, required=True, resource="Patient")
    gender = get(body, "gender", str, required=True, resource="Patient")
    try:
        sex = Sex(gender)
    except ValueError:
        raise FhirError("Patient.gender must be one of male, female, other, unknown.", status=422,
                           code="value", expression=["Patient.gender"]) from None
    birth = inputs.fhir_date(get(body, "birthDate", str, required=True, resource="Patient"), "Patient.birthDate")
    mrn = None
    for item in get(body, "identifier", list, resource="Patient") or []:
        if isinstance(item, dict) and item.get("system") == MRN_SYSTEM:
            mrn = get(item, "value", str, required=True, resource="Patient.identifier")
    contact: dict[str, str | None] = {"phone": None, "email": None}
    for item in get(body, "telecom", list, resource="Patient") or []:
        system = item.get("system") if isinstance(item, dict) else None
        if system in contact:
            contact[system] = get(item, "value", str, resource=f"Patient.telecom({system})")
    address = get(body, "address[0]", dict, resource="Patient")
    address_text = None
    if address:
        lines = get(address, "line", list, resource="Patient.address[0]") or []
        parts = [get(address, key, str, resource="Patient.address[0]") for key in ("city", "postalCode")]
        address_text = get(address, "text", str, resource="Patient.address[0]") or ", ".join(
            str(x) for x in [*lines, *parts] if x)
    assert birth is not None
    return PatientInput(given_name=given, family_name=family, birth_date=birth, sex=sex, phone=contact["phone"],
                        email=contact["email"], address=address_text or None, mrn=mrn)


def create_patient(body: dict[str, Any], by: User) -> Patient:
    return patients.register(patient_input(body), by=by)


def update_patient(patient: Patient, body: dict[str, Any], by: User) -> Patient:
    data = patient_input(body)
    if data.mrn is not None and data.mrn != patient.mrn:
        raise FhirError("The MRN identifier cannot be changed.", status=422, code="business-rule",
                           expression=["Patient.identifier"])
    data.mrn = None
    return patients.update_demographics(patient, data, by=by)


def read_patient(rid: str, by: User) -> Patient:
    return patients.get_patient(record_id(rid), by=by, action="fhir.patient.read")


def visible_patients(by: User) -> fs.Query:
    return sa.select(Patient).where(access.visible_clause(by))


PATIENT = fs.register(ResourceType(
    name="Patient", model=Patient, to_fhir=patient_to_fhir, read=read_patient, visible=visible_patients,
    patient_of=lambda p: p.id, create=create_patient, update=update_patient,
    documentation="Patients registered at a clinic. Clinic staff register (create) and update demographics.",
    params={
        "identifier": SearchParam("identifier", "token", fs.token(Patient.mrn, system=MRN_SYSTEM),
                                  f"Medical record number ({MRN_SYSTEM}|12345674)"),
        "name": SearchParam("name", "string", fs.string(Patient.family_name, Patient.given_name, folded=(
            Patient.family_name_search, Patient.given_name_search)),
                            "Start of the family or given name"),
        "family": SearchParam("family", "string", fs.string(Patient.family_name, folded=(Patient.family_name_search,)),
                              "Start of the family name"),
        "given": SearchParam("given", "string", fs.string(Patient.given_name, folded=(Patient.given_name_search,)),
                             "Start of the given name"),
        "birthdate": SearchParam("birthdate", "date", fs.date_param(Patient.birth_date, is_date=True),
                                 "Date of birth"),
        "gender": SearchParam("gender", "token", fs.token(Patient.sex, transform=Sex), "male, female, other, unknown"),
        "organization": fs.ref_param("organization", Patient.facility_id, "Organization",
                                     "The clinic that holds the record"),
    },
    sorts={"name": Patient.family_name_search, "family": Patient.family_name_search,
           "given": Patient.given_name_search, "birthdate": Patient.birth_date},
    includes={"organization": ("Organization", lambda p: [str(p.facility_id)])},
))


# ---------------------------------------------------------------- list entries on the record


def _item_reader(model: type, resource_type: str) -> Any:
    def read(rid: str, by: User) -> Any:
        item = db.session.get(model, record_id(rid))
        if item is None or not access.can_read(by, item.patient):
            audit.forbid(f"fhir.{resource_type.lower()}.read", by=by,
                         patient_id=item.patient_id if item else None, resource_type=resource_type,
                         resource_id=rid[:64])
        audit.record(f"fhir.{resource_type.lower()}.read", by=by, patient_id=item.patient_id,
                     resource_type=resource_type, resource_id=item.id)
        return item

    return read


def _item_visible(model: Any) -> Any:
    def visible(by: User) -> fs.Query:
        return sa.select(model).join(Patient, Patient.id == model.patient_id).where(access.visible_clause(by))

    return visible


def _clinical(system: str, status: ClinicalStatus) -> dict[str, Any]:
    return coded(system, status.value)


def allergy_to_fhir(a: Allergy) -> dict[str, Any]:
    return fs.compact({
        "resourceType": "AllergyIntolerance",
        "id": str(a.id),
        "clinicalStatus": _clinical("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", a.status),
        "verificationStatus": coded("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                    "confirmed"),
        "criticality": "high" if a.severity.value == "severe" else "low",
        "code": {"text": a.substance},
        "patient": patient_ref(a.patient_id),
        "recordedDate": fs.instant(a.recorded_at),
        "recorder": user_ref(a.recorded_by_id),
        "reaction": [{"manifestation": [{"text": a.reaction}], "severity": a.severity.value}] if a.reaction else None,
    })


def condition_to_fhir(c: Condition) -> dict[str, Any]:
    code: dict[str, Any] = {"text": c.description}
    if c.code:
        code["coding"] = [{"system": ICD10_SYSTEM, "code": c.code, "display": c.description}]
    return fs.compact({
        "resourceType": "Condition",
        "id": str(c.id),
        "clinicalStatus": _clinical("http://terminology.hl7.org/CodeSystem/condition-clinical", c.status),
        "verificationStatus": coded("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
        "category": [coded("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item",
                           "Problem List Item")],
        "code": code,
        "subject": patient_ref(c.patient_id),
        "onsetDateTime": fs.day(c.onset_date),
        "recordedDate": fs.instant(c.recorded_at),
        "recorder": user_ref(c.recorded_by_id),
    })


STATEMENT_STATUS = {ClinicalStatus.ACTIVE: "active", ClinicalStatus.INACTIVE: "stopped",
                    ClinicalStatus.RESOLVED: "completed"}


def statement_to_fhir(m: MedicationStatement) -> dict[str, Any]:
    return fs.compact({
        "resourceType": "MedicationStatement",
        "id": str(m.id),
        "status": STATEMENT_STATUS[m.status],
        "medicationCodeableConcept": {"text": m.name},
        "subject": patient_ref(m.patient_id),
        "dateAsserted": fs.instant(m.recorded_at),
        "informationSource": user_ref(m.recorded_by_id),
        "dosage": [{"text": m.dosage}] if m.dosage else None,
    })


def _status_token(column: Any, mapping: dict[str, ClinicalStatus] | None = None) -> fs.Apply:
    def transform(code: str) -> ClinicalStatus:
        return mapping[code] if mapping and code in mapping else ClinicalStatus(code)

    return fs.token(column, transform=transform)


@dataclass(frozen=True)
class EntryForm:
    """How a FHIR list entry maps to the chart's "add" form: the service, its fields, and the status element."""

    subject: str
    elements: set[str]
    fields: Callable[[dict[str, Any]], dict[str, Any]]
    status: Callable[[dict[str, Any]], ClinicalStatus | None]
    add: Callable[..., Any]
    key: str
    """The field that identifies the entry: entries are never edited (only their status), so it cannot change."""


def _editing(name: str) -> FhirError:
    return FhirError(f"You may not change this patient's {name} entries (the clinic that holds the record and the "
                     "treating doctor can).", status=403, code="forbidden")


def _entry_writers(name: str, form: EntryForm) -> tuple[Any, Any]:
    def create(body: dict[str, Any], by: User) -> Any:
        inputs.only(body, form.elements | {form.subject}, name)
        path = f"{name}.{form.subject}"
        patient = check_reference(inputs.reference_id(inputs.get(body, form.subject, dict, required=True,
                                                                 resource=name), "Patient", path), by, path)
        if form.status(body) not in (None, ClinicalStatus.ACTIVE):
            raise FhirError(f"A new {name} is recorded as active; change its status afterwards.", status=422,
                            code="business-rule", expression=[f"{name}.status"])
        try:
            return form.add(patient, by=by, **form.fields(body))
        except NotFound:
            raise _editing(name) from None

    def update(item: Any, body: dict[str, Any], by: User) -> Any:
        inputs.only(body, form.elements | {form.subject}, name)
        if form.fields(body)[form.key] != getattr(item, form.key):
            raise FhirError(f"Only the status of a {name} changes; record a new entry for anything else.",
                            status=422, code="business-rule")
        status = form.status(body)
        if status is None:
            raise FhirError(f"Give the {name}'s status.", status=422, code="required")
        if status is not item.status:
            try:
                patients.set_clinical_status(item, status.value, by=by)
            except NotFound:
                raise _editing(name) from None
        return item

    return create, update


def _clinical_status(name: str) -> Callable[[dict[str, Any]], ClinicalStatus | None]:
    def status(body: dict[str, Any]) -> ClinicalStatus | None:
        code = inputs.get(body, "clinicalStatus.coding[0].code", str, resource=name)
        try:
            return None if code is None else ClinicalStatus(code)
        except ValueError:
            raise FhirError(f"{name}.clinicalStatus must be active, inactive or resolved.", status=422,
                            code="value", expression=[f"{name}.clinicalStatus"]) from None

    return status


def _statement_status(body: dict[str, Any]) -> ClinicalStatus | None:
    code = inputs.get(body, "status", str, resource="MedicationStatement")
    by_code = {v: k for k, v in STATEMENT_STATUS.items()}
    if code is not None and code not in by_code:
        raise FhirError("MedicationStatement.status must be active, stopped or completed.", status=422,
                        code="value", expression=["MedicationStatement.status"])
    return None if code is None else by_code[code]


def _allergy_fields(body: dict[str, Any]) -> dict[str, Any]:
    get = inputs.get
    severity = get(body, "reaction[0].severity", str, resource="AllergyIntolerance") or {
        "high": "severe", "low": "mild"}.get(get(body, "criticality", str, resource="AllergyIntolerance") or "")
    if severity is None:
        raise FhirError("Give AllergyIntolerance.reaction[0].severity (mild, moderate or severe).", status=422,
                        code="required", expression=["AllergyIntolerance.reaction[0].severity"])
    return {"substance": get(body, "code.text", str, required=True, resource="AllergyIntolerance"),
            "severity": severity,
            "reaction": get(body, "reaction[0].manifestation[0].text", str, resource="AllergyIntolerance")}


def _condition_fields(body: dict[str, Any]) -> dict[str, Any]:
    code = None
    for coding in inputs.get(body, "code.coding", list, resource="Condition") or []:
        if isinstance(coding, dict) and coding.get("system") == ICD10_SYSTEM:
            code = inputs.get(coding, "code", str, resource="Condition.code.coding")
    onset = inputs.get(body, "onsetDateTime", str, resource="Condition")
    return {"description": inputs.get(body, "code.text", str, required=True, resource="Condition"), "code": code,
            "onset_date": inputs.fhir_date(onset[:10] if onset else None, "Condition.onsetDateTime")}


def _statement_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {"name": inputs.get(body, "medicationCodeableConcept.text", str, required=True,
                               resource="MedicationStatement"),
            "dosage": inputs.get(body, "dosage[0].text", str, resource="MedicationStatement")}


FORMS = {
    "AllergyIntolerance": EntryForm("patient", {"clinicalStatus", "verificationStatus", "criticality", "code",
                                                "recordedDate", "recorder", "reaction"},
                                    _allergy_fields, _clinical_status("AllergyIntolerance"), patients.add_allergy,
                                    "substance"),
    "Condition": EntryForm("subject", {"clinicalStatus", "verificationStatus", "category", "code", "onsetDateTime",
                                       "recordedDate", "recorder"},
                           _condition_fields, _clinical_status("Condition"), patients.add_condition, "description"),
    "MedicationStatement": EntryForm("subject", {"status", "medicationCodeableConcept", "dateAsserted",
                                                 "informationSource", "dosage"},
                                     _statement_fields, _statement_status, patients.add_medication, "name"),
}


def _register_item(name: str, model: Any, to_fhir: Any, params: dict[str, SearchParam], subject: str) -> None:
    create, update = _entry_writers(name, FORMS[name])
    fs.register(ResourceType(
        name=name, model=model, to_fhir=to_fhir, read=_item_reader(model, name), visible=_item_visible(model),
        patient_of=lambda item: item.patient_id, create=create, update=update,
        documentation="An entry on the patient's chart. Create adds one (clinic staff, the treating doctor); "
                      "update changes only its status (entries are never edited or deleted).",
        params={**fs.patient_params(model.patient_id), **params},
        sorts={"date": model.recorded_at},
        includes={subject: ("Patient", lambda item: [str(item.patient_id)])},
    ))


_register_item("AllergyIntolerance", Allergy, allergy_to_fhir, {
    "clinical-status": SearchParam("clinical-status", "token", _status_token(Allergy.status),
                                   "active, inactive, resolved"),
    "date": SearchParam("date", "date", fs.date_param(Allergy.recorded_at), "When recorded"),
}, "patient")
_register_item("Condition", Condition, condition_to_fhir, {
    **fs.patient_params(Condition.patient_id, "subject"),
    "clinical-status": SearchParam("clinical-status", "token", _status_token(Condition.status),
                                   "active, inactive, resolved"),
    "code": SearchParam("code", "token", fs.token(Condition.code, system=ICD10_SYSTEM), f"ICD-10-CM ({ICD10_SYSTEM})"),
    "recorded-date": SearchParam("recorded-date", "date", fs.date_param(Condition.recorded_at), "When recorded"),
}, "patient")
_register_item("MedicationStatement", MedicationStatement, statement_to_fhir, {
    **fs.patient_params(MedicationStatement.patient_id, "subject"),
    "status": SearchParam("status", "token", _status_token(MedicationStatement.status, {
        v: k for k, v in STATEMENT_STATUS.items()}), "active, stopped, completed"),
    "effective": SearchParam("effective", "date", fs.date_param(MedicationStatement.recorded_at),
                             "When asserted"),
}, "patient")


def check_reference(patient_id: int, by: User, path: str) -> Patient:
    """Open a referenced patient for a write (no read event: the write itself is audited)."""
    try:
        return patients.get_patient(patient_id, by=by, action="fhir.reference", audit_read=False)
    except NotFound as exc:
        raise inputs.referenced(exc, path) from None
