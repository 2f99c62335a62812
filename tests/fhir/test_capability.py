"""The CapabilityStatement is exactly true: every route under /fhir is advertised, every advertised interaction
and search parameter answers, and everything the server emits validates against FHIR R4 (4.0.1)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir.conftest import World, validate

# A value per advertised search parameter that matches the world fixture's resource of that type.
MATCHING: dict[str, Any] = {
    "patient": lambda w, t: f"Patient/{w.patient.id}",
    "subject": lambda w, t: f"Patient/{w.patient.id}",
    "identifier": lambda w, t: {"Patient": f"urn:town-health:mrn|{w.patient.mrn}",
                                "ImagingStudy": f"urn:dicom:uid|urn:oid:{w.study.study_instance_uid}",
                                }.get(t, "urn:town-health:facility|" + w.patient.facility.code),
    "name": lambda w, t: {"Patient": "gonz", "Practitioner": "Dr Ada"}.get(t, w.patient.facility.name[:5]),
    "family": lambda w, t: "Gonzalez",
    "given": lambda w, t: "Maria",
    "birthdate": lambda w, t: w.patient.birth_date.isoformat(),
    "gender": lambda w, t: "female",
    "organization": lambda w, t: f"Organization/{w.patient.facility_id}",
    "clinical-status": lambda w, t: "active",
    "status": lambda w, t: {"MedicationRequest": "active", "MedicationDispense": "preparation",
                            "MedicationStatement": "active", "Appointment": "booked", "Encounter": "in-progress",
                            "Consent": "active", "Communication": "preparation", "Slot": "free",
                            "Medication": "active"}[t],
    "date": lambda w, t: "ge2000-01-01",
    "recorded-date": lambda w, t: "ge2000-01-01",
    "effective": lambda w, t: "ge2000-01-01",
    "authoredon": lambda w, t: "ge2000-01-01",
    "whenhandedover": lambda w, t: "lt2100",
    "started": lambda w, t: "ge2000",
    "sent": lambda w, t: "lt2100",
    "recorded": lambda w, t: "ge2000-01",
    "start": lambda w, t: "ge2000-01-01T00:00:00Z",
    "code": lambda w, t: {"Condition": "http://hl7.org/fhir/sid/icd-10-cm|E11.9", "Medication": "PARA500"}.get(
        t, "urn:town-health:formulary|PARA500"),
    "medication": lambda w, t: f"Medication/{w.rx.drug_id}",
    "requester": lambda w, t: f"Practitioner/{w.doctor.id}",
    "prescription": lambda w, t: f"MedicationRequest/{w.rx.id}",
    "practitioner": lambda w, t: f"Practitioner/{w.doctor.id if t == 'Appointment' else w.nurse.id}",
    "role": lambda w, t: "nurse",
    "actor": lambda w, t: f"Practitioner/{w.doctor.id}",
    "schedule": lambda w, t: f"Schedule/{w.doctor.id}",
    "appointment": lambda w, t: f"Appointment/{w.appointment.id}",
    "modality": lambda w, t: "CT",
    "subtype": lambda w, t: "urn:town-health:audit-action|allergy.create",
    "outcome": lambda w, t: "0",
    "target": lambda w, t: f"Patient/{w.patient.id}",
    "authored": lambda w, t: "ge2000-01-01",
    "issued": lambda w, t: "ge2000-01-01",
    "based-on": lambda w, t: f"ServiceRequest/{w.reading_request.id}",
}
NOT_YET = {("Communication", "sent"), ("MedicationDispense", "whenhandedover"), ("DiagnosticReport", "issued")}


def who_searches(w: World, resource_type: str) -> Any:
    """Who sees the world's resource of this type: the patient for their own record, the admin for audit."""
    return {"AuditEvent": w.admin, "Provenance": w.admin, "MedicationDispense": w.pharmacist,
            "ServiceRequest": w.doctor, "DiagnosticReport": w.doctor}.get(
        resource_type, w.patient_user)


@pytest.mark.smoke
def test_metadata_is_public_and_validates(client):
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200 and resp.mimetype == "application/fhir+json"
    statement = resp.get_json()
    validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert {r["type"] for r in statement["rest"][0]["resource"]} >= {
        "Patient", "AllergyIntolerance", "Condition", "MedicationStatement", "Medication", "MedicationRequest",
        "MedicationDispense", "Practitioner", "PractitionerRole", "Organization", "Location", "Encounter",
        "Appointment", "Schedule", "Slot", "ImagingStudy", "Endpoint", "Consent", "Communication", "AuditEvent",
        "Provenance"}


def test_every_route_is_advertised(app, client):
    statement = client.get("/fhir/metadata").get_json()
    advertised = {(r["type"], i["code"]) for r in statement["rest"][0]["resource"] for i in r["interaction"]}
    codes = {("GET", False): "search-type", ("GET", True): "read", ("POST", False): "create", ("PUT", True): "update"}
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/fhir/") or rule.rule == "/fhir/metadata":
            continue
        if not rule.endpoint.startswith("fhir."):
            assert rule.rule.startswith("/fhir/.well-known/"), rule.rule  # SMART discovery, not an interaction
            continue
        if rule.rule.endswith("/$everything"):
            ops = statement["rest"][0]["operation"]
            assert any(op["name"] == "everything" for op in ops)
            continue
        resource_type = rule.rule.split("/")[2]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((resource_type, codes[(method, "<rid>" in rule.rule)]))
    assert routes == advertised


def test_every_advertised_search_parameter_answers_and_matches(world, client, bearer):
    """Strict handling: an advertised parameter the server did not understand would be an error, not ignored."""
    statement = client.get("/fhir/metadata").get_json()
    for resource in statement["rest"][0]["resource"]:
        resource_type = resource["type"]
        user = who_searches(world, resource_type)
        headers = bearer(user, "patient/*.rs" if user is world.patient_user else "user/*.cruds") | {
            "Prefer": "handling=strict"}
        first = client.get(f"/fhir/{resource_type}", headers=headers).get_json()["entry"][0]["resource"]
        for param in resource["searchParam"]:
            value = first["id"] if param["name"] == "_id" else MATCHING[param["name"]](world, resource_type)
            resp = client.get(f"/fhir/{resource_type}", query_string={param["name"]: value}, headers=headers)
            assert resp.status_code == 200, (resource_type, param["name"], resp.get_json())
            bundle = resp.get_json()
            validate(bundle)
            unset = (resource_type, param["name"]) in NOT_YET  # the fixture's resource has no value there yet
            assert (bundle["total"] == 0) if unset else (bundle["total"] >= 1), (resource_type, param["name"], value)
        if "read" in {i["code"] for i in resource["interaction"]}:
            read = client.get(f"/fhir/{resource_type}/{first['id']}", headers=headers)
            assert read.status_code == 200 and read.get_json() == first


@pytest.mark.parametrize("who", ["patient_user", "doctor", "nurse", "pharmacist", "admin"])
def test_every_emitted_resource_validates_against_r4(world, client, bearer, who):
    user = getattr(world, who)
    headers = bearer(user, "patient/*.rs" if who == "patient_user" else "user/*.cruds")
    statement = client.get("/fhir/metadata").get_json()
    seen = set()
    for resource in statement["rest"][0]["resource"]:
        resp = client.get(f"/fhir/{resource['type']}", query_string={"_count": 100}, headers=headers)
        assert resp.status_code == 200, resp.get_json()
        bundle = resp.get_json()
        validate(bundle)
        for item in bundle.get("entry", []):
            validate(item["resource"])
            seen.add(item["resource"]["resourceType"])
    if who == "patient_user":
        everything = client.get(f"/fhir/Patient/{world.patient.id}/$everything", headers=headers).get_json()
        validate(everything)
        assert {e["resource"]["resourceType"] for e in everything["entry"]} >= {
            "Patient", "AllergyIntolerance", "Condition", "MedicationStatement", "MedicationRequest",
            "MedicationDispense", "Appointment", "Encounter", "Consent", "ImagingStudy", "AuditEvent",
            "Provenance"}
        assert seen >= {"Patient", "AllergyIntolerance", "Condition", "MedicationRequest", "Communication",
                         "AuditEvent", "ImagingStudy", "Endpoint", "Slot"}
    missing = client.get("/fhir/Patient/999999", headers=headers)
    assert missing.status_code == 404
    validate(missing.get_json())
