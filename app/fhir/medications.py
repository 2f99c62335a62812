"""Medication (the formulary), MedicationRequest (prescriptions) and MedicationDispense (the pharmacy).

A MedicationRequest created through FHIR is a draft, written by :func:`app.prescriptions.service.create_draft`:
the same field checks, and the same allergy/interaction/dose findings, returned as contained DetectedIssues.
Signing stays in Town Health, where the doctor reads the findings; FHIR cannot create a signed prescription.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app import db
from app.auth.models import Role, User
from app.errors import NotFound
from app.fhir import inputs
from app.fhir import search as fs
from app.fhir.outcome import FhirError
from app.fhir.patients import check_reference, patient_ref, record_id, user_ref
from app.fhir.search import ResourceType, SearchParam
from app.patients.models import Patient
from app.pharmacy import service as pharmacy
from app.pharmacy.models import Dispense, DispenseStatus
from app.prescriptions import access as rx_access
from app.prescriptions import service as prescriptions
from app.prescriptions.models import Drug, Prescription, RequestStatus
from app.prescriptions.service import PrescriptionInput

FORMULARY_SYSTEM = "urn:town-health:formulary"
UCUM = "http://unitsofmeasure.org"
SEVERITY = {"contraindication": "high", "warning": "moderate"}


def drug_code(drug: Drug) -> dict[str, Any]:
    return {"coding": [{"system": FORMULARY_SYSTEM, "code": drug.code, "display": drug.display}], "text": drug.display}


def medication_ref(drug: Drug) -> dict[str, str]:
    return {"reference": f"Medication/{drug.id}", "display": drug.display}


# ---------------------------------------------------------------- Medication


def medication_to_fhir(d: Drug) -> dict[str, Any]:
    return {
        "resourceType": "Medication",
        "id": str(d.id),
        "code": drug_code(d),
        "status": "active" if d.active else "inactive",
        "form": {"text": d.form},
        "ingredient": [{
            "itemCodeableConcept": {"text": d.name},
            "isActive": True,
            "strength": {"numerator": {"value": d.strength_mg, "unit": "mg", "system": UCUM, "code": "mg"},
                         "denominator": {"value": 1, "unit": d.form}},
        }],
    }


def read_drug(rid: str, _by: User) -> Drug:
    drug = db.session.get(Drug, record_id(rid))
    if drug is None:
        raise NotFound("No Medication with that id.")
    return drug


fs.register(ResourceType(
    name="Medication", model=Drug, to_fhir=medication_to_fhir, read=read_drug,
    visible=lambda _by: sa.select(Drug), audited=False,
    documentation="The formulary: drugs that can be prescribed, with strength and form.",
    params={"code": SearchParam("code", "token", fs.token(Drug.code, system=FORMULARY_SYSTEM),
                                f"Formulary code ({FORMULARY_SYSTEM})"),
            "status": SearchParam("status", "token", fs.token(Drug.active, transform=lambda c: {
                "active": True, "inactive": False}[c]), "active, inactive")},
    sorts={"code": Drug.code},
))


# ---------------------------------------------------------------- MedicationRequest


def _findings(rx: Prescription) -> list[dict[str, Any]]:
    if rx.status is not RequestStatus.DRAFT:
        return []
    return [{"resourceType": "DetectedIssue", "id": f"finding{n}", "status": "preliminary",
             "code": {"coding": [{"system": "urn:town-health:safety-check", "code": f.code}], "text": f.kind},
             "severity": SEVERITY.get(f.level, "low"), "patient": patient_ref(rx.patient_id), "detail": f.message}
            for n, f in enumerate(prescriptions.findings(rx), 1)]


def request_to_fhir(rx: Prescription) -> dict[str, Any]:
    form = rx.drug.form
    contained = _findings(rx)
    instructions = rx.sig + (f". {rx.instructions}" if rx.instructions else "")
    return fs.compact({
        "resourceType": "MedicationRequest",
        "id": str(rx.id),
        "meta": {"lastUpdated": fs.instant(rx.updated_at)},
        "contained": contained,
        "status": rx.status.value,
        "statusReason": {"text": rx.status_reason} if rx.status_reason else None,
        "intent": "order",
        "medicationReference": medication_ref(rx.drug),
        "subject": patient_ref(rx.patient_id),
        "authoredOn": fs.instant(rx.created_at),
        "requester": {"reference": f"Practitioner/{rx.prescriber_id}", "display": rx.prescriber.full_name},
        "detectedIssue": [{"reference": f"#{c['id']}"} for c in contained],
        "dosageInstruction": [fs.compact({
            "text": instructions,
            "patientInstruction": rx.instructions,
            "route": {"text": rx.drug.route},
            "timing": {"repeat": {"frequency": rx.frequency_per_day, "period": 1, "periodUnit": "d",
                                  "boundsDuration": {"value": rx.duration_days, "unit": "days", "system": UCUM,
                                                     "code": "d"}}},
            "doseAndRate": [{"doseQuantity": {"value": rx.dose_units, "unit": form}}],
        })],
        "dispenseRequest": {
            "numberOfRepeatsAllowed": rx.refills,
            "quantity": {"value": rx.quantity, "unit": form},
            "performer": {"reference": f"Organization/{rx.dispensing_facility_id}",
                          "display": rx.dispensing_facility.name},
        },
    })


def read_request(rid: str, by: User) -> Prescription:
    return prescriptions.get(record_id(rid), by=by, action="fhir.medicationrequest.read")


def visible_requests(by: User) -> fs.Query:
    return (sa.select(Prescription).join(Patient, Patient.id == Prescription.patient_id)
            .where(rx_access.visible_clause(by)))


def _drug_id(body: dict[str, Any]) -> int | None:
    ref = inputs.get(body, "medicationReference", dict, resource="MedicationRequest")
    if ref is not None:
        return inputs.reference_id(ref, "Medication", "MedicationRequest.medicationReference")
    for coding in inputs.get(body, "medicationCodeableConcept.coding", list, resource="MedicationRequest") or []:
        if isinstance(coding, dict) and coding.get("system") == FORMULARY_SYSTEM:
            return db.session.scalar(sa.select(Drug.id).where(Drug.code == str(coding.get("code"))))
    raise FhirError("MedicationRequest.medication[x] must name a formulary drug: medicationReference "
                    f"Medication/<id>, or a coding with system {FORMULARY_SYSTEM}.", status=422, code="required",
                    expression=["MedicationRequest.medication"])


def request_input(body: dict[str, Any]) -> PrescriptionInput:
    """The prescription form's fields from a MedicationRequest (one dosage line, daily frequency)."""
    inputs.only(body, {"status", "intent", "medicationReference", "medicationCodeableConcept", "subject",
                       "requester", "authoredOn", "dosageInstruction", "dispenseRequest", "note"},
                "MedicationRequest")
    status = inputs.get(body, "status", str, required=True, resource="MedicationRequest")
    if status != "draft":
        raise FhirError("A MedicationRequest is created as a draft (status 'draft'): the prescriber signs it in "
                        "Town Health after reading the safety checks.", status=422, code="business-rule",
                        expression=["MedicationRequest.status"])
    if inputs.get(body, "intent", str, required=True, resource="MedicationRequest") != "order":
        raise FhirError("MedicationRequest.intent must be 'order'.", status=422, code="value",
                        expression=["MedicationRequest.intent"])
    get = inputs.get
    dosage = get(body, "dosageInstruction[0]", dict, required=True, resource="MedicationRequest")
    repeat = get(dosage, "timing.repeat", dict, required=True, resource="MedicationRequest.dosageInstruction[0]")
    if repeat.get("period", 1) != 1 or repeat.get("periodUnit", "d") != "d":
        raise FhirError("Give the frequency per day (timing.repeat.period 1, periodUnit 'd').", status=422,
                        code="not-supported", expression=["MedicationRequest.dosageInstruction[0].timing"])
    number = (int, float)
    performer = get(body, "dispenseRequest.performer", dict, resource="MedicationRequest")
    return PrescriptionInput(
        drug_id=_drug_id(body),
        dose_units=get(dosage, "doseAndRate[0].doseQuantity.value", number, required=True,
                       resource="MedicationRequest.dosageInstruction[0]"),
        frequency_per_day=get(repeat, "frequency", number, required=True,
                              resource="MedicationRequest.dosageInstruction[0].timing.repeat"),
        duration_days=get(repeat, "boundsDuration.value", number, required=True,
                          resource="MedicationRequest.dosageInstruction[0].timing.repeat"),
        quantity=get(body, "dispenseRequest.quantity.value", number, required=True, resource="MedicationRequest"),
        refills=get(body, "dispenseRequest.numberOfRepeatsAllowed", int, resource="MedicationRequest") or 0,
        instructions=get(dosage, "patientInstruction", str, resource="MedicationRequest.dosageInstruction[0]"),
        dispensing_facility_id=inputs.reference_id(performer, "Organization",
                                                   "MedicationRequest.dispenseRequest.performer", required=False),
    )


def _drug_code_filter(query: fs.Query, values: list[str], modifier: str | None) -> fs.Query:
    codes = [code for system, code in fs.token_values(values) if system in (None, FORMULARY_SYSTEM)]
    return query.where(Prescription.drug_id.in_(sa.select(Drug.id).where(Drug.code.in_(codes or [""]))))


def create_request(body: dict[str, Any], by: User) -> Prescription:
    if by.role is not Role.DOCTOR:
        raise FhirError("Only doctors write prescriptions.", status=403, code="forbidden")
    data = request_input(body)
    patient_id = inputs.reference_id(inputs.get(body, "subject", dict, required=True, resource="MedicationRequest"),
                                     "Patient", "MedicationRequest.subject")
    assert patient_id is not None
    requester = inputs.get(body, "requester", dict, resource="MedicationRequest")
    if requester is not None and inputs.reference_id(requester, "Practitioner",
                                                     "MedicationRequest.requester") != by.id:
        raise FhirError("MedicationRequest.requester must be you (the prescriber is whoever writes it).",
                        status=422, code="business-rule", expression=["MedicationRequest.requester"])
    patient = check_reference(patient_id, by, "MedicationRequest.subject")
    return prescriptions.create_draft(patient, data, by=by)


def update_request(rx: Prescription, body: dict[str, Any], by: User) -> Prescription:
    """Change a draft, or change the status (hold, resume, stop, cancel) as the prescriber can on the web; with a
    new status only ``status`` and ``statusReason`` are read. Nothing here signs: a draft never becomes active."""
    status = inputs.get(body, "status", str, required=True, resource="MedicationRequest")
    if status != rx.status.value:
        if rx.status is RequestStatus.DRAFT and status == RequestStatus.ACTIVE.value:
            raise FhirError("A draft becomes active only when the prescriber signs it in Town Health.", status=422,
                            code="business-rule", expression=["MedicationRequest.status"])
        reason = inputs.get(body, "statusReason.text", str, resource="MedicationRequest")
        return prescriptions.set_status(rx, status, by=by, reason=reason)
    if rx.status is not RequestStatus.DRAFT:
        raise FhirError("A signed prescription cannot be edited; stop it and write a new one.", status=409,
                        code="conflict")
    subject = inputs.get(body, "subject", dict, resource="MedicationRequest")
    if subject is not None and inputs.reference_id(subject, "Patient", "MedicationRequest.subject") != rx.patient_id:
        raise FhirError("MedicationRequest.subject cannot change; write a new prescription for another patient.",
                        status=422, code="business-rule", expression=["MedicationRequest.subject"])
    computed = ("subject", "requester", "contained", "detectedIssue", "statusReason")  # set by the server
    return prescriptions.update_draft(rx, request_input({k: v for k, v in body.items() if k not in computed}), by=by)


fs.register(ResourceType(
    name="MedicationRequest", model=Prescription, to_fhir=request_to_fhir, read=read_request,
    visible=visible_requests, patient_of=lambda rx: rx.patient_id, create=create_request, update=update_request,
    documentation="Prescriptions. Create writes a draft (status 'draft') with its safety findings as "
                  "contained DetectedIssues; update changes a draft or the status (hold, resume, stop, cancel). "
                  "Signing happens in Town Health.",
    params={
        **fs.patient_params(Prescription.patient_id, "patient", "subject"),
        "status": SearchParam("status", "token", fs.token(Prescription.status, transform=RequestStatus),
                              "draft, active, on-hold, cancelled, completed, stopped"),
        "authoredon": SearchParam("authoredon", "date", fs.date_param(Prescription.created_at), "When written"),
        "code": SearchParam("code", "token", _drug_code_filter, f"Formulary code ({FORMULARY_SYSTEM})"),
        "medication": fs.ref_param("medication", Prescription.drug_id, "Medication", "The drug"),
        "requester": fs.ref_param("requester", Prescription.prescriber_id, "Practitioner", "The prescriber"),
    },
    sorts={"authoredon": Prescription.created_at, "status": Prescription.status},
    includes={"patient": ("Patient", lambda rx: [str(rx.patient_id)]),
              "medication": ("Medication", lambda rx: [str(rx.drug_id)]),
              "requester": ("Practitioner", lambda rx: [str(rx.prescriber_id)])},
))


# ---------------------------------------------------------------- MedicationDispense


def dispense_to_fhir(d: Dispense) -> dict[str, Any]:
    rx = d.prescription
    receiver = None
    if d.receiver is not None:
        receiver = [patient_ref(rx.patient_id) if d.receiver.value == "patient"
                    else {"display": f"{d.proxy_name} ({d.proxy_relation})"}]
    return fs.compact({
        "resourceType": "MedicationDispense",
        "id": str(d.id),
        "status": d.status.value,
        "statusReasonCodeableConcept": {"text": d.status_reason} if d.status_reason else None,
        "medicationReference": medication_ref(rx.drug),
        "subject": patient_ref(rx.patient_id),
        "authorizingPrescription": [{"reference": f"MedicationRequest/{rx.id}"}],
        "location": {"reference": f"Location/{d.facility_id}", "display": d.facility.name},
        "quantity": {"value": d.quantity, "unit": rx.drug.form},
        "performer": [{"actor": user_ref(d.prepared_by_id)}] if d.prepared_by_id else None,
        "whenPrepared": fs.instant(d.ready_at),
        "whenHandedOver": fs.instant(d.handed_over_at),
        "receiver": receiver,
    })


def read_dispense(rid: str, by: User) -> Dispense:
    return pharmacy.get_dispense(record_id(rid), by=by, action="fhir.medicationdispense.read")


def visible_dispenses(by: User) -> fs.Query:
    query = (sa.select(Dispense).join(Prescription, Prescription.id == Dispense.prescription_id)
             .join(Patient, Patient.id == Prescription.patient_id))
    if by.role is Role.PHARMACIST:
        return query.where(Dispense.facility_id == by.facility_id)
    return query.where(rx_access.visible_clause(by))


fs.register(ResourceType(
    name="MedicationDispense", model=Dispense, to_fhir=dispense_to_fhir, read=read_dispense,
    visible=visible_dispenses, patient_of=lambda d: d.prescription.patient_id,
    documentation="Pharmacy dispenses; 'in-progress' means ready for pickup.",
    params={
        **fs.patient_params(Prescription.patient_id, "patient", "subject"),
        "status": SearchParam("status", "token", fs.token(Dispense.status, transform=DispenseStatus),
                              "preparation, in-progress, on-hold, completed, declined, cancelled"),
        "prescription": fs.ref_param("prescription", Dispense.prescription_id, "MedicationRequest",
                                     "The prescription"),
        "whenhandedover": SearchParam("whenhandedover", "date", fs.date_param(Dispense.handed_over_at),
                                      "When handed over"),
        "code": SearchParam("code", "token", _drug_code_filter, f"Formulary code ({FORMULARY_SYSTEM})"),
    },
    sorts={"whenhandedover": Dispense.handed_over_at},
    includes={"prescription": ("MedicationRequest", lambda d: [str(d.prescription_id)]),
              "patient": ("Patient", lambda d: [str(d.prescription.patient_id)])},
))
