"""Forms that say which field is wrong, guess nothing clinical, and record "no known allergies" on purpose."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.patients.models import Allergy, Patient

FORM = {"given_name": "Ada", "family_name": "Quill", "birth_date": "1961-05-04", "sex": "female"}


def _field_errors(html: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, text in re.findall(r'<div class="error"[^>]*data-field="([^"]+)"[^>]*>([^<]*)</div>', html):
        found.setdefault(name, []).append(text)
    return found


def _preselected(html: str, select_id: str) -> str:
    """The value a browser shows in a select before anyone touches it (the first option unless one is selected)."""
    options = re.findall(r"<option([^>]*)>", html.split(f'id="{select_id}"')[1].split("</select>")[0])
    chosen = [o for o in options if re.search(r"\bselected\b", o)] or options
    return re.search(r'value="([^"]*)"', chosen[0]).group(1)


def _registered(family: str) -> Patient | None:
    return db.session.scalar(sa.select(Patient).where(Patient.family_name == family))


@pytest.mark.parametrize("line,message", [
    ("Penicillin; extreme; hives",
     "Line 1 (Penicillin): the severity must be mild, moderate, severe, not &#34;extreme&#34;."),
    ("Penicillin", "Line 1 (Penicillin): add the severity (mild, moderate, severe)."),
    ("Latex; mild\n; severe", "Line 2: start with the substance."),
])
def test_allergy_lines_name_the_line_and_never_guess_severity(client: Any, factories: Any, login: Any,
                                                             line: str, message: str) -> None:
    login(client, factories.nurse())
    family = f"Quill{abs(hash(line)) % 10_000}"
    resp = client.post("/patients/new", data={**FORM, "family_name": family, "allergies": line})
    assert resp.status_code == 422
    assert _field_errors(resp.get_data(as_text=True))["allergies"] == [message]
    assert _registered(family) is None


def test_sex_is_not_preselected_and_is_required(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.nurse())
    assert _preselected(client.get("/patients/new").get_data(as_text=True), "sex") == ""
    resp = client.post("/patients/new", data={**FORM, "sex": "", "family_name": "Nosex"})
    assert resp.status_code == 422
    assert _field_errors(resp.get_data(as_text=True))["sex"] == ["Choose the patient&#39;s sex."]
    assert _registered("Nosex") is None


def test_chart_allergy_without_severity_is_refused_on_the_field(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    assert _preselected(client.get(f"/patients/{patient.id}").get_data(as_text=True), "allergy-severity") == ""
    resp = client.post(f"/patients/{patient.id}/allergies", data={"allergy-substance": "Latex"})
    assert resp.status_code == 422
    assert _field_errors(resp.get_data(as_text=True))["allergy-severity"] == ["Choose how severe the reaction is."]
    assert db.session.scalar(sa.select(Allergy).where(Allergy.patient_id == patient.id)) is None


def test_portal_account_errors_are_marked_on_their_fields(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    resp = client.post(f"/patients/{patient.id}/portal-account",
                       data={"portal-email": "not an email", "portal-password": ""})
    assert resp.status_code == 422
    assert _field_errors(resp.get_data(as_text=True))["portal-password"] == ["This field is required."]
    resp = client.post(f"/patients/{patient.id}/portal-account",
                       data={"portal-email": "not an email", "portal-password": "first-time-pass"})
    assert resp.status_code == 422 and "portal-email" in _field_errors(resp.get_data(as_text=True))


def test_no_known_allergies_is_a_recorded_statement(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    chart = client.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "Allergies not recorded" in chart and "No known allergies recorded" not in chart

    resp = client.post(f"/patients/{patient.id}/no-known-allergies", follow_redirects=True)
    strip = resp.get_data(as_text=True).split('class="allergy-strip allergy-none"')[1].split("</div>")[0]
    assert "No known allergies" in strip and "UTC" in strip and nurse.full_name in strip
    assert db.session.scalar(sa.select(AuditEvent.actor_id).where(
        AuditEvent.action == "allergy.none_known", AuditEvent.patient_id == patient.id)) == nurse.id

    client.post(f"/patients/{patient.id}/allergies",
                data={"allergy-substance": "Latex", "allergy-severity": "mild"})
    chart = client.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "allergy-none" not in chart and "Latex" in chart.split('class="allergy-strip"')[1]


def test_registration_records_no_known_allergies_only_when_ticked(client: Any, factories: Any,
                                                                  login: Any) -> None:
    login(client, factories.nurse())
    both = client.post("/patients/new", data={**FORM, "family_name": "Both", "allergies": "Latex; mild",
                                              "no_known_allergies": "y"})
    assert both.status_code == 422
    assert _field_errors(both.get_data(as_text=True))["no_known_allergies"] == [
        "Untick this, or remove the allergies listed above."]
    resp = client.post("/patients/new", data={**FORM, "family_name": "Nka", "no_known_allergies": "y"})
    assert resp.status_code == 302
    assert _registered("Nka").no_known_allergies_at is not None


@pytest.mark.browser
def test_register_form_marks_the_wrong_field(live_server: str, live_factories: Any, new_browser: Any,
                                             browser_login: Any) -> None:
    page = new_browser().new_page()
    browser_login(page, live_server, live_factories.nurse())
    page.goto(f"{live_server}/patients/new")
    assert page.input_value("#sex") == ""
    page.fill("#given_name", "Ada")
    page.fill("#family_name", "Formcheck")
    page.fill("#birth_date", "1961-05-04")
    page.fill("#allergies", "Penicillin")
    page.click("button:has-text('Register')")
    allergies = page.locator(".field.has-error", has=page.locator("#allergies"))
    assert "add the severity" in allergies.inner_text()
    assert page.locator("#allergies").get_attribute("aria-invalid") == "true"
    sex = page.locator(".field.has-error", has=page.locator("#sex"))
    assert "Choose the patient's sex." in sex.inner_text()
