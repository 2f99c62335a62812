"""Writes through FHIR do what the web app allows, with the same checks: a clinic system registers a Patient,
a patient app books an Appointment, a doctor's app writes a MedicationRequest that stays a draft. Bad input gets
an OperationOutcome that names the element, and nothing is half-saved."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.consults.models import Appointment
from app.patients.models import Patient
from app.prescriptions.models import Prescription
from tests.fhir.conftest import FHIR, validate
from tests.prescriptions.conftest import drug

NEW_PATIENT = {"resourceType": "Patient", "name": [{"family": "Okoro", "given": ["Ngozi"]}], "gender": "female",
               "birthDate": "1991-04-12", "telecom": [{"system": "phone", "value": "+44 1234 567890"}]}


def post(client: Any, path: str, body: Any, headers: dict[str, str]) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, headers=headers | {"Content-Type": FHIR})


def count(model: Any) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


@pytest.mark.smoke
def test_a_clinic_system_registers_and_updates_a_patient_with_provenance(world, client, bearer):
    headers = bearer(world.nurse, "user/Patient.cruds user/Provenance.rs")
    resp = post(client, "/fhir/Patient", NEW_PATIENT, headers)
    assert resp.status_code == 201, resp.get_json()
    created = resp.get_json()
    validate(created)
    assert resp.headers["Location"].endswith(f"/fhir/Patient/{created['id']}")
    mrn = created["identifier"][0]["value"]
    assert created["managingOrganization"]["reference"] == f"Organization/{world.nurse.facility_id}"
    row = db.session.get(Patient, int(created["id"]))
    assert (row.family_name, row.phone, row.mrn) == ("Okoro", "+44 1234 567890", mrn)

    changed = dict(created, telecom=[{"system": "phone", "value": "+44 1234 000000"}])
    updated = client.put(f"/fhir/Patient/{created['id']}", data=json.dumps(changed),
                         headers=headers | {"Content-Type": FHIR})
    assert updated.status_code == 200 and updated.get_json()["telecom"][0]["value"] == "+44 1234 000000"
    history = client.get("/fhir/Provenance", query_string={"target": f"Patient/{created['id']}"},
                         headers=headers).get_json()
    activities = [e["resource"]["activity"]["coding"][0]["code"] for e in history["entry"]]
    assert activities == ["CREATE", "UPDATE"]
    assert history["entry"][0]["resource"]["agent"][0]["who"]["display"] == world.nurse.full_name

    twin = post(client, "/fhir/Patient", NEW_PATIENT, headers)
    assert twin.status_code == 409
    assert f"Patient/{created['id']}" in json.dumps(twin.get_json())


def test_patient_input_errors_name_the_element_and_save_nothing(world, client, bearer):
    headers = bearer(world.nurse, "user/Patient.cruds")
    before = count(Patient)
    cases = [
        ("{not json", 400, "not valid JSON"),
        ({"resourceType": "Observation"}, 400, "Expected a Patient"),
        ({**NEW_PATIENT, "birthDate": None}, 422, "Patient.birthDate is required"),
        ({**NEW_PATIENT, "birthDate": "12/04/1991"}, 422, "Patient.birthDate must be a date"),
        ({**NEW_PATIENT, "birthDate": "2990-01-01"}, 422, "birth_date: Birth date cannot be in the future"),
        ({**NEW_PATIENT, "gender": "girl"}, 422, "Patient.gender must be one of"),
        ({**NEW_PATIENT, "maritalStatus": {"text": "M"}}, 422, "does not store: maritalStatus"),
        ({**NEW_PATIENT, "name": "Ngozi"}, 422, "name must be a list"),
        ({**NEW_PATIENT, "identifier": [{"system": "urn:town-health:mrn", "value": "12345678"}]}, 422,
         "mrn: An MRN is 8 digits"),
        ({**NEW_PATIENT, "name": [{"family": "X" * 200, "given": ["Y"]}]}, 422, "family_name"),
    ]
    for body, status, words in cases:
        resp = post(client, "/fhir/Patient", body, headers)
        assert resp.status_code == status, (body, resp.get_json())
        outcome = resp.get_json()
        validate(outcome)
        assert words in json.dumps(outcome), (words, outcome)
    huge = post(client, "/fhir/Patient", {**NEW_PATIENT, "text": {"status": "generated", "div": "x" * 300_000}},
                headers)
    assert huge.status_code == 413 and huge.get_json()["issue"][0]["code"] == "too-costly"
    form = client.post("/fhir/Patient", data="a=b", headers=headers | {"Content-Type": "text/plain"})
    assert form.status_code == 415
    doctor = post(client, "/fhir/Patient", NEW_PATIENT, bearer(world.doctor, "user/Patient.cruds"))
    assert doctor.status_code == 403 and "clinic staff" in json.dumps(doctor.get_json())
    assert count(Patient) == before


def test_a_patient_app_books_a_free_slot(world, client, bearer):
    headers = bearer(world.patient_user, "patient/Slot.rs patient/Appointment.cruds")
    slots = client.get("/fhir/Slot", query_string={"schedule": f"Schedule/{world.doctor.id}", "_count": 3},
                       headers=headers).get_json()
    validate(slots)
    slot = slots["entry"][0]["resource"]
    body = {"resourceType": "Appointment", "status": "booked", "slot": [{"reference": f"Slot/{slot['id']}"}],
            "description": "Follow-up on blood sugar",
            "participant": [{"actor": {"reference": f"Patient/{world.patient.id}"}, "status": "accepted"},
                            {"actor": {"reference": f"Practitioner/{world.doctor.id}"}, "status": "needs-action"}]}
    resp = post(client, "/fhir/Appointment", body, headers)
    assert resp.status_code == 201, resp.get_json()
    booked = resp.get_json()
    validate(booked)
    assert (booked["status"], booked["start"]) == ("booked", slot["start"])
    assert client.get(f"/fhir/Slot/{slot['id']}", headers=headers).status_code == 404  # no longer free
    again = post(client, "/fhir/Appointment", body, headers)
    assert again.status_code == 409 and "not available" in json.dumps(again.get_json())

    before = count(Appointment)
    for_someone_else = dict(body, slot=[{"reference": f"Slot/{slots['entry'][1]['resource']['id']}"}],
                            participant=[{"actor": {"reference": f"Patient/{world.other_patient.id}"},
                                          "status": "accepted"}, body["participant"][1]])
    refused = post(client, "/fhir/Appointment", for_someone_else, headers)
    assert refused.status_code == 422 and "participant" in refused.get_json()["issue"][0]["expression"][0]
    assert count(Appointment) == before


def _rx_body(world: Any, code: str = "AMOX500", **extra: Any) -> dict[str, Any]:
    body = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
            "medicationReference": {"reference": f"Medication/{drug(code).id}"},
            "subject": {"reference": f"Patient/{world.patient.id}"},
            "dosageInstruction": [{"timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d",
                                                         "boundsDuration": {"value": 7, "unit": "d"}}},
                                   "doseAndRate": [{"doseQuantity": {"value": 1}}]}],
            "dispenseRequest": {"quantity": {"value": 21}, "numberOfRepeatsAllowed": 0}}
    body.update(extra)
    return body


def test_a_medication_request_is_a_draft_with_the_safety_checks(world, client, bearer):
    headers = bearer(world.doctor, "user/MedicationRequest.cruds")
    resp = post(client, "/fhir/MedicationRequest", _rx_body(world), headers)
    assert resp.status_code == 201, resp.get_json()
    draft = resp.get_json()
    validate(draft)
    assert draft["status"] == "draft"
    issues = [c for c in draft["contained"] if c["resourceType"] == "DetectedIssue"]
    assert issues and issues[0]["severity"] == "high" and "enicillin" in issues[0]["detail"]
    assert draft["detectedIssue"][0]["reference"] == f"#{issues[0]['id']}"
    rx = db.session.get(Prescription, int(draft["id"]))
    assert rx.signed_at is None and rx.prescriber_id == world.doctor.id

    before = count(Prescription)
    signed = post(client, "/fhir/MedicationRequest", _rx_body(world, "PARA500", status="active"), headers)
    assert signed.status_code == 422 and "draft" in signed.get_json()["issue"][0]["diagnostics"]
    stranger = post(client, "/fhir/MedicationRequest",
                    _rx_body(world, subject={"reference": f"Patient/{world.other_patient.id}"}), headers)
    assert stranger.status_code == 422
    assert stranger.get_json()["issue"][0]["expression"] == ["MedicationRequest.subject"]
    too_much = _rx_body(world, "PARA500")
    too_much["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 50
    checked = post(client, "/fhir/MedicationRequest", too_much, headers)
    assert checked.status_code == 422 and "dose_units" in json.dumps(checked.get_json())
    nurse = post(client, "/fhir/MedicationRequest", _rx_body(world), bearer(world.nurse, "user/*.cruds"))
    assert nurse.status_code == 403
    assert count(Prescription) == before


def test_an_appointment_is_cancelled_or_moved_through_update(world, client, bearer):
    headers = bearer(world.patient_user, "patient/Appointment.cruds patient/Slot.rs")
    current = client.get(f"/fhir/Appointment/{world.appointment.id}", headers=headers).get_json()
    slots = client.get("/fhir/Slot", query_string={"schedule": f"Schedule/{world.doctor.id}", "_count": 2},
                       headers=headers).get_json()
    later = slots["entry"][1]["resource"]["start"]
    moved = client.put(f"/fhir/Appointment/{current['id']}", data=json.dumps(dict(current, start=later)),
                       headers=headers | {"Content-Type": FHIR})
    assert moved.status_code == 200 and moved.get_json()["start"] == later
    arrived = client.put(f"/fhir/Appointment/{current['id']}", data=json.dumps(dict(current, status="arrived")),
                         headers=headers | {"Content-Type": FHIR})
    assert arrived.status_code == 422
    cancelled = client.put(f"/fhir/Appointment/{current['id']}", headers=headers | {"Content-Type": FHIR},
                           data=json.dumps(dict(moved.get_json(), status="cancelled",
                                                cancelationReason={"text": "Feeling better"})))
    assert cancelled.status_code == 200
    body = cancelled.get_json()
    validate(body)
    assert (body["status"], body["cancelationReason"]["text"]) == ("cancelled", "Feeling better")
    stranger = bearer(world.other_patient_user, "patient/Appointment.cruds")
    assert client.put(f"/fhir/Appointment/{current['id']}", data=json.dumps(body),
                      headers=stranger | {"Content-Type": FHIR}).status_code == 404


def test_a_draft_is_edited_and_a_prescription_held_but_never_signed_through_fhir(world, client, bearer):
    headers = bearer(world.doctor, "user/MedicationRequest.cruds")
    draft = post(client, "/fhir/MedicationRequest", _rx_body(world, "PARA500"), headers).get_json()
    draft["dispenseRequest"]["quantity"]["value"] = 30
    edited = client.put(f"/fhir/MedicationRequest/{draft['id']}", data=json.dumps(draft),
                        headers=headers | {"Content-Type": FHIR})
    assert edited.status_code == 200, edited.get_json()
    assert edited.get_json()["dispenseRequest"]["quantity"]["value"] == 30
    sign = client.put(f"/fhir/MedicationRequest/{draft['id']}", data=json.dumps(dict(draft, status="active")),
                      headers=headers | {"Content-Type": FHIR})
    assert sign.status_code == 422 and "signs it" in sign.get_json()["issue"][0]["diagnostics"]
    assert db.session.get(Prescription, int(draft["id"])).signed_at is None

    signed = client.get(f"/fhir/MedicationRequest/{world.rx.id}", headers=headers).get_json()
    held = client.put(f"/fhir/MedicationRequest/{world.rx.id}", headers=headers | {"Content-Type": FHIR},
                      data=json.dumps(dict(signed, status="on-hold", statusReason={"text": "Check kidney function"})))
    assert held.status_code == 200 and held.get_json()["status"] == "on-hold"
    changed = dict(held.get_json())
    changed["dispenseRequest"]["quantity"]["value"] = 99
    frozen = client.put(f"/fhir/MedicationRequest/{world.rx.id}", data=json.dumps(changed),
                        headers=headers | {"Content-Type": FHIR})
    assert frozen.status_code == 409
    assert db.session.get(Prescription, world.rx.id).quantity == 21


def test_chart_entries_are_added_and_resolved_but_never_rewritten(world, client, bearer):
    doctor = bearer(world.doctor, "user/*.cruds")
    allergy = post(client, "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{world.patient.id}"},
        "code": {"text": "Latex"}, "reaction": [{"manifestation": [{"text": "Rash"}], "severity": "moderate"}]},
        doctor)
    assert allergy.status_code == 201, allergy.get_json()
    body = allergy.get_json()
    validate(body)
    assert (body["code"]["text"], body["reaction"][0]["severity"]) == ("Latex", "moderate")
    condition = post(client, "/fhir/Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{world.patient.id}"},
        "code": {"text": "Essential hypertension", "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                                              "code": "I10"}]}, "onsetDateTime": "2020-03-01"},
        doctor).get_json()
    assert condition["code"]["coding"][0]["code"] == "I10" and condition["onsetDateTime"] == "2020-03-01"
    resolved = dict(condition, clinicalStatus={"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]})
    done = client.put(f"/fhir/Condition/{condition['id']}", data=json.dumps(resolved),
                      headers=doctor | {"Content-Type": FHIR})
    assert done.status_code == 200 and done.get_json()["clinicalStatus"]["coding"][0]["code"] == "resolved"
    rewritten = client.put(f"/fhir/Condition/{condition['id']}", headers=doctor | {"Content-Type": FHIR},
                           data=json.dumps(dict(resolved, code={"text": "Something else"})))
    assert rewritten.status_code == 422 and "Only the status" in rewritten.get_json()["issue"][0]["diagnostics"]
    stopped = post(client, "/fhir/MedicationStatement", {
        "resourceType": "MedicationStatement", "status": "active",
        "subject": {"reference": f"Patient/{world.patient.id}"},
        "medicationCodeableConcept": {"text": "Lisinopril 10 mg"}}, doctor).get_json()
    stop = client.put(f"/fhir/MedicationStatement/{stopped['id']}", headers=doctor | {"Content-Type": FHIR},
                      data=json.dumps(dict(stopped, status="stopped")))
    assert stop.get_json()["status"] == "stopped"

    before = count(Patient)
    pharmacist = post(client, "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{world.patient.id}"},
        "code": {"text": "Nuts"}, "criticality": "high"}, bearer(world.pharmacist, "user/*.cruds"))
    assert pharmacist.status_code == 403
    stranger = post(client, "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{world.other_patient.id}"},
        "code": {"text": "Nuts"}, "criticality": "high"}, doctor)
    assert stranger.status_code == 422
    no_severity = post(client, "/fhir/AllergyIntolerance", {
        "resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{world.patient.id}"},
        "code": {"text": "Nuts"}}, doctor)
    assert no_severity.status_code == 422 and "severity" in no_severity.get_json()["issue"][0]["diagnostics"]
    names = [e["resource"]["code"]["text"] for e in client.get(
        "/fhir/AllergyIntolerance", query_string={"patient": f"Patient/{world.patient.id}"},
        headers=doctor).get_json()["entry"]]
    assert sorted(names) == ["Latex", "Penicillin"] and count(Patient) == before
