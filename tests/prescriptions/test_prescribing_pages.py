"""Prescribing without dead ends: a blocked Sign says why, drafts can be edited, the quantity is worked out."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.prescriptions.models import Prescription
from tests.consults.helpers import admitted_consult
from tests.prescriptions.conftest import drug

FORM = {"dose_units": "1", "frequency_per_day": "3", "duration_days": "7", "quantity": "21", "refills": "0"}


def _new(client: Any, patient_id: int, code: str, **fields: str) -> Prescription:
    resp = client.post(f"/patients/{patient_id}/prescriptions/new",
                       data={**FORM, "drug_id": str(drug(code).id), **fields})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    return db.session.scalar(sa.select(Prescription).where(Prescription.patient_id == patient_id)
                             .order_by(Prescription.id.desc()))


def test_blocked_sign_says_why_and_offers_the_way_out(client: Any, factories: Any, login: Any) -> None:
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor, allergies=[{"substance": "Penicillins", "severity": "severe"}])
    login(client, doctor)
    rx = _new(client, patient.id, "AMOX500")
    page = client.get(f"/prescriptions/{rx.id}").get_data(as_text=True)
    blocked = page.split('id="sign-blocked"')[1].split("</div>")[0]
    assert "cannot be signed" in blocked and "severe allergy to Penicillins" in blocked and "Edit draft" in blocked
    assert 'disabled aria-describedby="sign-blocked"' in page


def test_a_draft_is_edited_not_only_discarded(client: Any, factories: Any, login: Any) -> None:
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    login(client, doctor)
    rx = _new(client, patient.id, "IBUP400", dose_units="2", frequency_per_day="4", quantity="56")
    form = client.get(f"/prescriptions/{rx.id}/edit").get_data(as_text=True)
    assert 'id="dose_units" name="dose_units" inputmode="decimal" value="2"' in form
    resp = client.post(f"/prescriptions/{rx.id}/edit", data={**FORM, "drug_id": str(drug("IBUP400").id)},
                       follow_redirects=True)
    assert "1 tablet 3 times a day for 7 days" in resp.get_data(as_text=True)
    client.post(f"/prescriptions/{rx.id}/sign", data={})
    signed = client.post(f"/prescriptions/{rx.id}/edit", data={**FORM, "drug_id": str(drug("IBUP400").id)})
    assert signed.status_code == 409 and "stop it and write a new one" in signed.get_data(as_text=True)


def test_quantity_left_blank_is_the_whole_course(client: Any, factories: Any, login: Any) -> None:
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    login(client, doctor)
    rx = _new(client, patient.id, "AMOX500", dose_units="1.5", frequency_per_day="3", duration_days="5",
              quantity="")
    assert rx.quantity == 23  # 1.5 x 3 x 5 = 22.5, rounded up


def test_consult_room_has_a_prescribe_action(app: Any, make_client: Any, factories: Any, login: Any) -> None:
    doctor, patient, appt = admitted_consult(factories, app)
    doc = make_client()
    login(doc, doctor)
    room = doc.get(f"/consults/{appt.id}/room").get_data(as_text=True)
    assert f'id="prescribe" href="/patients/{patient.id}/prescriptions/new" target="_blank"' in room


@pytest.mark.browser
def test_quantity_follows_the_dose_until_the_doctor_types_one(live_server: str, live_factories: Any,
                                                              new_browser: Any, browser_login: Any) -> None:
    doctor = live_factories.doctor()
    patient = live_factories.patient(doctor=doctor)
    page = new_browser().new_page()
    browser_login(page, live_server, doctor)
    page.goto(f"{live_server}/patients/{patient.id}/prescriptions/new")
    page.fill("#dose_units", "2")
    page.fill("#frequency_per_day", "3")
    page.fill("#duration_days", "5")
    assert page.input_value("#quantity") == "30"
    page.fill("#quantity", "20")
    page.fill("#duration_days", "10")
    assert page.input_value("#quantity") == "20"
