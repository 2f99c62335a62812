"""Bad input gets a clear 4xx naming the field, nothing half-saved, never a 500."""

from __future__ import annotations

import re

import sqlalchemy as sa

from app import db
from app.patients.models import Patient

GOOD = {"given_name": "Grace", "family_name": "Hopper", "birth_date": "1950-12-09", "sex": "female"}


def _count() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Patient))


def test_malformed_fields_are_named(client, login, factories):
    login(client, factories.nurse())
    before = _count()
    resp = client.post("/api/v1/patients", json={**GOOD, "birth_date": "31/02/1990", "sex": "robot",
                                                 "given_name": "x" * 101})
    assert resp.status_code == 422
    assert resp.mimetype == "application/problem+json"
    assert set(resp.json["errors"]) == {"birth_date", "sex", "given_name"}
    assert _count() == before


def test_future_birth_date_and_bad_phone_are_rejected_by_the_rules(client, login, factories):
    login(client, factories.nurse())
    resp = client.post("/api/v1/patients", json={**GOOD, "birth_date": "2999-01-01", "phone": "call me maybe"})
    assert resp.status_code == 422
    assert resp.json["errors"]["birth_date"] == ["Birth date cannot be in the future."]
    assert "phone" in resp.json["errors"]


def test_a_bad_allergy_rolls_back_the_whole_registration(client, login, factories):
    login(client, factories.nurse())
    before = _count()
    resp = client.post("/api/v1/patients", json={**GOOD, "family_name": "Halfsaved",
                                                 "allergies": [{"substance": "Penicillin", "severity": "severe"},
                                                               {"substance": "", "severity": "mild"}]})
    assert resp.status_code == 422
    assert _count() == before


def test_duplicate_mrn_is_a_conflict(client, login, factories):
    login(client, factories.nurse())
    existing = factories.patient()
    resp = client.post("/api/v1/patients", json={**GOOD, "mrn": existing.mrn})
    assert resp.status_code == 409 and resp.json["errors"] == {"mrn": ["Already in use."]}
    bad_check_digit = existing.mrn[:7] + str((int(existing.mrn[7]) + 1) % 10)
    assert client.post("/api/v1/patients", json={**GOOD, "mrn": bad_check_digit}).status_code == 422


def test_possible_duplicate_person_needs_confirmation(client, login, factories):
    nurse = factories.nurse()
    login(client, nurse)
    assert client.post("/api/v1/patients", json=GOOD).status_code == 201
    twin = client.post("/api/v1/patients", json=GOOD)
    assert twin.status_code == 409 and "possible_duplicate_id" in twin.json
    html = client.post("/patients/new", data=GOOD)
    assert html.status_code == 409 and b"existing record" in html.data
    assert client.post("/api/v1/patients", json={**GOOD, "allow_possible_duplicate": True}).status_code == 201


def test_wrong_content_type_and_oversize_bodies(client, login, factories):
    login(client, factories.nurse())
    form = client.post("/api/v1/patients", data=GOOD)
    assert form.status_code == 415 and form.json["title"] == "Unsupported content type"
    huge = client.post("/api/v1/patients", json={**GOOD, "address": "x" * 300_000})
    assert huge.status_code == 413


def test_unknown_ids_and_methods(client, login, factories):
    login(client, factories.nurse())
    assert client.get("/api/v1/patients/0").status_code == 404
    assert client.get("/api/v1/patients/abc").status_code == 404
    resp = client.delete("/api/v1/patients/1")
    assert resp.status_code == 405 and resp.mimetype == "application/problem+json"


def test_injection_attempts_are_stored_as_text_and_escaped(client, login, factories):
    login(client, factories.nurse())
    evil = "<script>alert(1)</script>'); DROP TABLE patient;--"
    resp = client.post("/api/v1/patients", json={**GOOD, "family_name": evil[:100]})
    assert resp.status_code == 201
    page = client.get(f"/patients/{resp.json['id']}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page.lower() and "&lt;script&gt;" in page.lower()
    search = client.get("/api/v1/patients", query_string={"q": "' OR 1=1 --"}).json
    assert search["total"] == 0
    assert _count() >= 1  # the table is still there


def test_html_form_errors_are_shown_next_to_fields(client, login, factories):
    login(client, factories.nurse())
    missing = client.post("/patients/new", data={**GOOD, "given_name": ""})
    assert missing.status_code == 422 and 'data-field="given_name"' in missing.get_data(as_text=True)
    future = client.post("/patients/new", data={**GOOD, "birth_date": "2999-01-01"})
    assert future.status_code == 422
    assert 'data-field="birth_date">Birth date cannot be in the future.' in future.get_data(as_text=True)


def test_control_characters_rejected(client, login, factories):
    login(client, factories.nurse())
    resp = client.post("/api/v1/patients", json={**GOOD, "given_name": "Gr\x00ace"})
    assert resp.status_code == 422 and "given_name" in resp.json["errors"]


def test_every_typed_date_is_a_native_date_input_with_the_format_shown(make_client, login, factories):
    """A wrong birth date starts with a guessed format: every date field is <input type="date"> (sent as
    YYYY-MM-DD, as pages show dates) and says how the date is read back."""


    nurse, admin = make_client(), make_client()
    clinic = factories.clinic
    login(nurse, factories.nurse(facility=clinic))
    login(admin, factories.admin())
    pharmacist = make_client()
    login(pharmacist, factories.pharmacist(facility=clinic))
    pages = {"/patients/new": (nurse, "birth_date"), "/patients": (nurse, "birth_date"),
             "/pharmacy/stock": (pharmacist, "expires_on"), "/admin/audit": (admin, "until")}
    for url, (who, name) in pages.items():
        html = who.get(url).get_data(as_text=True)
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
        assert tag and 'type="date"' in tag.group(0), url
        assert "type it in your device&#39;s date order; it is read back below" in html, url
