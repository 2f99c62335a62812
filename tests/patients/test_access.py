"""Who may see and change a patient's record: role × facility × care relationship, all audited."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome


def _last_event(patient_id: int) -> AuditEvent:
    return db.session.scalars(sa.select(AuditEvent).where(AuditEvent.patient_id == patient_id)
                              .order_by(AuditEvent.id.desc())).first()


@pytest.fixture
def world(factories):
    """Two clinics; a patient at the first with an assigned doctor and a linked account."""
    other_clinic = factories.facility(name="Far Clinic")
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    return {
        "patient": patient,
        "nurse": factories.nurse(),
        "pharmacist": factories.pharmacist(),
        "doctor": doctor,
        "other_doctor": factories.doctor(),
        "other_nurse": factories.nurse(facility=other_clinic),
        "other_pharmacist": factories.pharmacist(facility=other_clinic),
        "admin": factories.admin(),
        "other_patient": factories.patient(with_account=True).user,
        "self": patient.user,
    }


@pytest.mark.parametrize("who, can_read", [
    ("nurse", True), ("pharmacist", True), ("doctor", True), ("self", True),
    ("other_doctor", False), ("other_nurse", False), ("other_pharmacist", False), ("admin", False),
    ("other_patient", False),
])
def test_chart_read_matrix(make_client, login, world, who, can_read):
    browser = make_client()
    login(browser, world[who])
    patient = world["patient"]
    api = browser.get(f"/api/v1/patients/{patient.id}")
    assert api.status_code == (200 if can_read else 404)
    event = _last_event(patient.id)
    assert event.actor_id == world[who].id
    assert event.outcome is (Outcome.SUCCESS if can_read else Outcome.DENIED)
    if not can_read:
        assert api.mimetype == "application/problem+json"
        assert patient.family_name not in api.get_data(as_text=True)  # nothing leaks in the problem


@pytest.mark.parametrize("who, can_write", [
    ("nurse", True), ("doctor", True), ("pharmacist", False), ("self", False), ("other_nurse", False),
    ("other_doctor", False),
])
def test_allergy_write_matrix(make_client, login, world, who, can_write):
    browser = make_client()
    login(browser, world[who])
    patient = world["patient"]
    resp = browser.post(f"/api/v1/patients/{patient.id}/allergies",
                        json={"substance": "Latex", "severity": "mild"})
    assert resp.status_code == (201 if can_write else 404)
    db.session.expire_all()
    substances = [a.substance for a in db.session.get(type(patient), patient.id).allergies]
    assert ("Latex" in substances) is can_write


def test_only_clinic_staff_of_the_clinic_edit_demographics(make_client, login, world):
    patient = world["patient"]
    body = {"given_name": "Renamed", "family_name": patient.family_name, "birth_date": "1979-12-31", "sex": "female"}
    doctor = make_client()
    login(doctor, world["doctor"])
    assert doctor.put(f"/api/v1/patients/{patient.id}", json=body).status_code == 404
    nurse = make_client()
    login(nurse, world["nurse"])
    resp = nurse.put(f"/api/v1/patients/{patient.id}", json=body)
    assert resp.status_code == 200 and resp.json["given_name"] == "Renamed"
    assert _last_event(patient.id).detail == {"fields": ["birth_date", "given_name"]}


def test_guessing_another_patients_id_gets_404_and_an_audit_row(make_client, login, world):
    browser = make_client()
    login(browser, world["other_patient"])
    patient = world["patient"]
    assert browser.get(f"/patients/{patient.id}").status_code == 404
    missing = browser.get("/patients/987654321")
    assert missing.status_code == 404
    assert b"Not found" in missing.data and b"<html" in missing.data  # a friendly page, not JSON
    denied = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == world["other_patient"].id,
                                                            AuditEvent.outcome == Outcome.DENIED)).all()
    assert {e.patient_id for e in denied} >= {patient.id, 987654321}


def test_search_is_scoped_to_what_the_user_may_see(make_client, login, factories, world):
    family = world["patient"].family_name
    for who, expected in (("nurse", 1), ("doctor", 1), ("other_doctor", 0), ("other_nurse", 0)):
        browser = make_client()
        login(browser, world[who])
        found = browser.get("/api/v1/patients", query_string={"q": family}).json
        assert found["total"] == expected, who
    admin = make_client()
    login(admin, world["admin"])
    assert admin.get("/api/v1/patients").status_code == 403


def test_search_paginates_and_filters_by_birth_date(client, login, factories):
    nurse = factories.nurse()
    for i in range(25):
        factories.patient(family_name=f"Pagetest{i:02d}")
    login(client, nurse)
    first = client.get("/api/v1/patients", query_string={"q": "pagetest", "per_page": 10}).json
    assert first["total"] == 25 and first["pages"] == 3 and len(first["items"]) == 10
    third = client.get("/api/v1/patients", query_string={"q": "pagetest", "per_page": 10, "page": 3}).json
    assert [p["family_name"] for p in third["items"]] == [f"Pagetest{i}" for i in range(20, 25)]
    by_mrn = client.get("/api/v1/patients", query_string={"q": first["items"][0]["mrn"]}).json
    assert by_mrn["total"] == 1
    html = client.get("/patients?q=pagetest")
    assert b"Page 1 of 2" in html.data


def test_doctor_sees_no_patients_until_assigned(make_client, login, factories):
    nurse, doctor = factories.nurse(), factories.doctor()
    patient = factories.patient()
    doc = make_client()
    login(doc, doctor)
    assert b"No patients are in your care yet" in doc.get("/patients").data
    staff = make_client()
    login(staff, nurse)
    assert staff.post(f"/api/v1/patients/{patient.id}/care-team", json={"doctor_id": doctor.id}).status_code == 201
    assert staff.post(f"/api/v1/patients/{patient.id}/care-team", json={"doctor_id": doctor.id}).status_code == 409
    assert doc.get(f"/patients/{patient.id}").status_code == 200


def test_patient_sees_who_viewed_their_record(make_client, login, world):
    doctor = make_client()
    login(doctor, world["doctor"])
    doctor.get(f"/patients/{world['patient'].id}")
    me = make_client()
    login(me, world["self"])
    log = me.get("/api/v1/me/access-log").json
    assert any(e["actor_name"] == world["doctor"].full_name and e["action"] == "patient.read" for e in log)
    assert all(e["actor_name"] != world["self"].full_name for e in log)
    page = me.get("/me/access-log")
    assert world["doctor"].full_name.encode() in page.data


def test_role_pages_turn_away_other_roles(make_client, login, world):
    for who, path in (("doctor", "/patients/new"), ("self", "/patients"), ("nurse", "/admin/users"),
                      ("doctor", "/admin/audit"), ("admin", "/me")):
        browser = make_client()
        login(browser, world[who])
        assert browser.get(path).status_code == 403, (who, path)


def test_clinic_staff_create_a_portal_account_that_opens_my_health(make_client, login, factories):
    nurse = factories.nurse()
    patient = factories.patient(given_name="Portal")
    staff = make_client()
    login(staff, nurse)
    resp = staff.post(f"/patients/{patient.id}/portal-account",
                      data={"portal-email": "portal.user@test.example", "portal-password": "first-time-pass"})
    assert resp.status_code == 302
    again = staff.post(f"/patients/{patient.id}/portal-account",
                       data={"portal-email": "other@test.example", "portal-password": "first-time-pass"},
                       follow_redirects=True)
    assert b"already has a portal account" in again.data
    browser = make_client()
    browser.post("/sign-in", data={"email": "portal.user@test.example", "password": "first-time-pass"})
    browser.post("/account/password", data={"current_password": "first-time-pass",
                                            "new_password": "my own passphrase"})
    assert browser.get("/api/v1/me/record").json["given_name"] == "Portal"
