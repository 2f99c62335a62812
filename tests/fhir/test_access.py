"""Who reaches what through FHIR: the same rules as the web app (role x facility x care relationship), the
token's SMART scopes (v1 and v2), and an audit event for every read, refused or not."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from tests.fhir.conftest import validate


def events(action: str, actor_id: int) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action,
                                                               AuditEvent.actor_id == actor_id)))


def test_without_a_token_fhir_asks_for_one_in_an_operation_outcome(client):
    resp = client.get("/fhir/Patient")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = resp.get_json()
    validate(body)
    assert body["issue"][0]["code"] == "login"
    bad = client.get("/fhir/Patient", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.smoke
def test_a_patient_token_reaches_only_that_patients_compartment(world, client, bearer):
    headers = bearer(world.patient_user, "patient/*.read")  # SMART v1
    found = client.get("/fhir/Patient", headers=headers).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [str(world.patient.id)]
    assert client.get(f"/fhir/Patient/{world.other_patient.id}", headers=headers).status_code == 404
    other_rx = client.get("/fhir/MedicationRequest", query_string={"patient": f"Patient/{world.other_patient.id}"},
                          headers=headers).get_json()
    assert other_rx["total"] == 0
    own = client.get("/fhir/AllergyIntolerance", headers=headers).get_json()
    assert [e["resource"]["code"]["text"] for e in own["entry"]] == ["Penicillin"]
    denied = events("fhir.patient.read", world.patient_user.id)
    assert [(e.patient_id, e.outcome) for e in denied] == [(world.other_patient.id, Outcome.DENIED)]
    searched = events("fhir.allergyintolerance.search", world.patient_user.id)
    assert [(e.patient_id, e.outcome) for e in searched] == [(world.patient.id, Outcome.SUCCESS)]


def test_a_doctor_sees_only_patients_in_their_care(world, client, bearer):
    mine = bearer(world.doctor, "user/*.rs")
    assert client.get(f"/fhir/Patient/{world.patient.id}", headers=mine).status_code == 200
    assert client.get(f"/fhir/Patient/{world.other_patient.id}", headers=mine).status_code == 404
    stranger = bearer(world.other_doctor, "user/*.rs")
    assert client.get(f"/fhir/Patient/{world.patient.id}", headers=stranger).status_code == 404
    assert client.get(f"/fhir/Condition/{world.condition.id}", headers=stranger).status_code == 404
    assert client.get("/fhir/Condition", headers=stranger).get_json()["total"] == 0
    assert client.get(f"/fhir/Patient/{world.patient.id}/$everything", headers=stranger).status_code == 404
    read = events("fhir.patient.read", world.doctor.id)
    assert {(e.patient_id, e.outcome) for e in read} == {(world.patient.id, Outcome.SUCCESS),
                                                         (world.other_patient.id, Outcome.DENIED)}


def test_v2_scopes_limit_the_resource_types(world, client, bearer):
    headers = bearer(world.patient_user, "patient/Patient.rs")
    assert client.get(f"/fhir/Patient/{world.patient.id}", headers=headers).status_code == 200
    refused = client.get("/fhir/AllergyIntolerance", headers=headers)
    assert refused.status_code == 403
    assert "patient/AllergyIntolerance.s" in refused.get_json()["issue"][0]["diagnostics"]
    everything = client.get(f"/fhir/Patient/{world.patient.id}/$everything", headers=headers).get_json()
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient"}
    included = client.get("/fhir/Patient", query_string={"_revinclude": "AllergyIntolerance:patient"},
                          headers=headers).get_json()
    assert {e["resource"]["resourceType"] for e in included["entry"]} == {"Patient"}
    read_only = bearer(world.nurse, "user/Patient.rs")
    create = client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=read_only)
    assert create.status_code == 403 and create.get_json()["resourceType"] == "OperationOutcome"


def test_audit_events_for_admins_and_for_the_patient_about_their_own_record(world, client, bearer):
    admin = bearer(world.admin, "user/*.rs")
    trail = client.get("/fhir/AuditEvent", query_string={"patient": f"Patient/{world.other_patient.id}"},
                       headers=admin).get_json()
    assert trail["total"] >= 1
    patient = bearer(world.patient_user, "patient/*.rs")
    own = client.get("/fhir/AuditEvent", query_string={"_count": 100}, headers=patient).get_json()
    patients_named = {e["what"]["reference"] for item in own["entry"] for e in item["resource"]["entity"]
                      if e["what"].get("reference", "").startswith("Patient/")}
    assert patients_named == {f"Patient/{world.patient.id}"}
    doctor = bearer(world.doctor, "user/*.rs")
    assert client.get("/fhir/AuditEvent", headers=doctor).get_json()["total"] == 0
    first = trail["entry"][0]["resource"]["id"]
    assert client.get(f"/fhir/AuditEvent/{first}", headers=doctor).status_code == 403
    assert client.get(f"/fhir/AuditEvent/{first}", headers=patient).status_code == 404


def test_notifications_are_only_the_recipients(world, client, bearer):
    mine = client.get("/fhir/Communication", headers=bearer(world.patient_user, "patient/*.rs")).get_json()
    assert mine["total"] >= 1
    assert all(e["resource"]["recipient"] == [{"reference": f"Patient/{world.patient.id}"}] for e in mine["entry"])
    first = mine["entry"][0]["resource"]["id"]
    other = bearer(world.other_patient_user, "patient/*.rs")
    assert client.get(f"/fhir/Communication/{first}", headers=other).status_code == 404


def test_the_fhir_user_claim_is_a_resource_this_server_serves(world, client, bearer):
    headers = bearer(world.patient_user, "openid fhirUser patient/*.rs")
    claims = client.get("/oauth/userinfo", headers=headers).get_json()
    path = urlsplit(claims["fhirUser"]).path
    assert path == f"/fhir/Patient/{world.patient.id}"
    assert client.get(path, headers=headers).get_json()["id"] == str(world.patient.id)
    doctor = bearer(world.doctor, "openid fhirUser user/*.rs")
    practitioner = urlsplit(client.get("/oauth/userinfo", headers=doctor).get_json()["fhirUser"]).path
    assert client.get(practitioner, headers=doctor).get_json()["name"][0]["text"] == world.doctor.full_name


def test_a_launch_patient_token_stays_in_that_patients_compartment(world, client, bearer):
    """A staff member's app launched for one patient (SMART ``launch/patient``) sees only that patient's data
    through its patient/ scopes; with user/ scopes it sees what the person may see."""
    launched = bearer(world.nurse, "patient/*.rs", patient_id=world.patient.id)
    maria = {"patient": f"Patient/{world.patient.id}"}
    # Patient has no "patient" parameter: ignored by the search, so only the compartment keeps Tom out.
    patients = client.get("/fhir/Patient", query_string=maria, headers=launched).get_json()
    assert [e["resource"]["id"] for e in patients["entry"] if e["search"]["mode"] == "match"] == [
        str(world.patient.id)]
    trail = client.get("/fhir/Appointment", query_string=maria | {"_include": "Appointment:patient"},
                       headers=launched).get_json()
    assert {e["resource"]["id"] for e in trail["entry"] if e["resource"]["resourceType"] == "Patient"} == {
        str(world.patient.id)}
    assert client.get(f"/fhir/Patient/{world.other_patient.id}", headers=launched).status_code == 403
    both = client.get("/fhir/Patient", headers=bearer(world.nurse, "user/*.rs patient/*.rs")).get_json()
    assert {str(world.patient.id), str(world.other_patient.id)} <= {e["resource"]["id"] for e in both["entry"]}


def test_consent_to_recording_has_its_provenance(world, client, bearer):
    headers = bearer(world.patient_user, "patient/*.rs")
    consent = client.get(f"/fhir/Consent/{world.consent.id}", headers=headers).get_json()
    assert consent["status"] == "active" and consent["patient"] == {"reference": f"Patient/{world.patient.id}"}
    history = client.get("/fhir/Consent", headers=headers, query_string={
        "_id": world.consent.id, "_revinclude": "Provenance:target"}).get_json()
    provenance = [e["resource"] for e in history["entry"] if e["resource"]["resourceType"] == "Provenance"]
    assert [(p["target"][0]["reference"], p["activity"]["coding"][0]["code"]) for p in provenance] == [
        (f"Consent/{world.consent.id}", "CREATE")]
    assert provenance[0]["agent"][0]["who"]["display"] == world.patient_user.full_name


def test_a_report_reaches_the_patient_only_once_released(world, client, bearer):
    patient = bearer(world.patient_user, "patient/*.rs")
    assert client.get("/fhir/DiagnosticReport", headers=patient).get_json()["total"] == 0
    assert client.get(f"/fhir/DiagnosticReport/{world.report.id}", headers=patient).status_code == 404
    assert client.get(f"/fhir/ServiceRequest/{world.reading_request.id}", headers=patient).status_code == 404
    doctor = bearer(world.doctor, "user/*.rs")
    found = client.get("/fhir/DiagnosticReport", query_string={"_include": "DiagnosticReport:based-on"},
                       headers=doctor).get_json()
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in found["entry"]} == {
        ("DiagnosticReport", str(world.report.id)), ("ServiceRequest", str(world.reading_request.id))}
    assert found["entry"][0]["resource"]["status"] == "preliminary"
    other = bearer(world.other_doctor, "user/*.rs")
    assert client.get("/fhir/ServiceRequest", headers=other).get_json()["total"] == 0
    assert client.get(f"/fhir/DiagnosticReport/{world.report.id}", headers=other).status_code == 404
