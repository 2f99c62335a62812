"""The demo SMART app a new user sees: the seed registers it, and in Chromium a patient connects it and it reads
their record through FHIR with the token it was given."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.auth import oauth_service
from app.auth.oauth_models import OAuthClient
from app.fhir import demo_app
from app.patients import service as patients
from app.prescriptions import service as rx_service
from app.seed import seed_smart_app
from tests.conftest import PASSWORD
from tests.prescriptions.conftest import rx_input


def test_the_demo_seed_registers_the_smart_app(app_ctx, factories):
    seed_smart_app(factories.admin())
    client = db.session.scalar(sa.select(OAuthClient).where(OAuthClient.name == demo_app.APP_NAME))
    assert client.is_public and "http://127.0.0.1:5000/smart-demo/" in client.redirect_uris
    assert "patient/MedicationRequest.rs" in client.allowed_scope.split()


def _register_demo_app(live_server: str, live_factories: Any) -> None:
    oauth_service.register_client(oauth_service.ClientInput(
        name=demo_app.APP_NAME, is_public=True, redirect_uris=[f"{live_server}/smart-demo/"], scope=demo_app.SCOPE,
        grants=["authorization_code"]), by=live_factories.admin())
    db.session.commit()


def _connect_and_sign_in(page: Any, live_server: str, user_id: int) -> None:
    """Open the demo app, press Connect, and sign in as the account ``user_id`` (up to the consent screen)."""
    email = db.session.scalar(sa.text("SELECT email FROM user_account WHERE id = :id"), {"id": user_id})
    page.goto(f"{live_server}/smart-demo/")
    page.click("#demo-connect")
    page.wait_for_url("**/sign-in**")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")


@pytest.mark.browser
def test_a_patient_connects_the_demo_app_and_it_reads_their_record(live_server: str, live_factories: Any,
                                                                   new_browser: Any) -> None:
    family = f"Demo{uuid.uuid4().hex[:6]}"
    clinic = live_factories.facility(name="Demo app clinic")
    nurse = live_factories.nurse(facility=clinic)
    patient = live_factories.patient(facility=clinic, with_account=True, given_name="Maria", family_name=family)
    patients.add_allergy(patient, by=nurse, substance="Penicillin", severity="severe", reaction="Hives")
    _register_demo_app(live_server, live_factories)

    page = new_browser().new_page()
    _connect_and_sign_in(page, live_server, patient.user_id)
    page.click("button[value=allow]")
    page.wait_for_selector("#demo-record:not([hidden])")
    assert page.text_content("#demo-patient") == f"Maria {family}"
    assert page.text_content("#demo-allergies") == "Penicillin (high risk)"
    assert "read Patient/" in page.text_content("#demo-steps")
    assert "Revoke" in page.text_content("#demo-status")


@pytest.mark.browser
def test_in_a_chinese_browser_the_demo_app_reports_its_steps_and_the_record_in_chinese(
        live_server: str, live_factories: Any, new_browser: Any) -> None:
    family = f"Demo{uuid.uuid4().hex[:6]}"
    clinic = live_factories.facility(name="Demo app clinic zh")
    nurse, doctor = live_factories.nurse(facility=clinic), live_factories.doctor(facility=clinic)
    patient = live_factories.patient(facility=clinic, with_account=True, given_name="Mei", family_name=family,
                                     doctor=doctor)
    patients.add_allergy(patient, by=nurse, substance="Penicillin", severity="severe", reaction="Hives")
    rx_service.sign(rx_service.create_draft(patient, rx_input("PARA500"), by=doctor), by=doctor)
    _register_demo_app(live_server, live_factories)

    page = new_browser(locale="zh-CN").new_page()
    _connect_and_sign_in(page, live_server, patient.user_id)
    consent = page.inner_text("main")  # what the app asks for, in the patient's language
    assert "读取和检索过敏记录（仅限您本人的病历）" in consent and "确认您的身份" in consent
    assert "in your own record only" not in consent
    page.click("button[value=allow]")
    page.wait_for_selector("#demo-record:not([hidden])")
    assert page.text_content("#demo-allergies") == "Penicillin（高风险）"
    assert page.text_content("#demo-prescriptions").endswith("：有效")
    steps = page.text_content("#demo-steps")
    assert "应用用该令牌读取了 Patient/" in steps and "read Patient/" not in steps
    assert page.text_content("#demo-status").startswith("完成。")
