"""The waiting room and the day view as people see them: nothing to reload, nothing booked by accident."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.consults import service
from app.consults.models import Appointment
from tests.consults.helpers import admitted_consult, current_slot, open_all_week, page_until


def test_state_and_status_follow_the_consult(app: Any, factories: Any) -> None:
    doctor, patient, appt = admitted_consult(factories, app)
    with app.app_context():
        appt = db.session.get(Appointment, appt.id)
        state = service.state(appt)
        assert state["can_check_in"] is False  # checked in already
        assert state["message"] == "You are in the consult with the doctor."
        assert "will admit you" not in state["message"]


def test_todays_consults_never_reloads_the_page(make_client: Any, factories: Any, login: Any, app: Any) -> None:
    doctor, _patient, appt = admitted_consult(factories, app, admit=False)
    doc = make_client()
    login(doc, doctor)
    page = doc.get("/consults/today").get_data(as_text=True)
    assert 'http-equiv="refresh"' not in page and 'id="day-view"' in page
    part = doc.get("/consults/today?part=table").get_data(as_text=True)
    assert f'data-appointment="{appt.id}"' in part and "<html" not in part


@pytest.mark.browser
def test_check_in_appears_when_it_opens_without_a_reload(live_server: str, live_factories: Any, new_browser: Any,
                                                         browser_login: Any, app: Any) -> None:
    doctor = live_factories.doctor()
    patient = live_factories.patient(with_account=True, doctor=doctor)
    start = datetime.now(UTC) + timedelta(minutes=app.config["CONSULT_CHECKIN_MINUTES"], seconds=8)
    appt = Appointment(doctor_id=doctor.id, patient_id=patient.id, booked_by_id=patient.user_id, start_at=start,
                       end_at=start + timedelta(minutes=15), slot_key=service.slot_key(doctor.id, start))
    db.session.add(appt)
    db.session.commit()
    page = new_browser().new_page()
    browser_login(page, live_server, patient.user)
    page.goto(f"{live_server}/consults/{appt.id}/waiting")
    assert page.is_hidden("#check-in")
    loads: list[str] = []
    page.on("framenavigated", lambda f: loads.append(f.url) if f == page.main_frame else None)
    page.wait_for_selector("#check-in:visible", timeout=20_000)
    assert loads == []
    assert "You can check in now" in page.inner_text("#status-text")


@pytest.mark.browser
def test_enter_in_the_reason_books_nothing(live_server: str, live_factories: Any, new_browser: Any,
                                           browser_login: Any) -> None:
    doctor = live_factories.doctor(name="Dr Enter Key")
    open_all_week(doctor)
    patient = live_factories.patient(with_account=True)
    page = new_browser().new_page()
    browser_login(page, live_server, patient.user)
    page.goto(f"{live_server}/consults/book?doctor_id={doctor.id}")
    page.locator("input[name=start]").nth(1).check()
    page.click("#choose-time")
    page.fill("#reason", "Sore throat")
    page.press("#reason", "Enter")
    page.wait_for_timeout(300)  # give an (unwanted) submission the time to leave the page
    assert "/consults/book" in page.url
    db.session.remove()
    booked = sa.select(sa.func.count()).select_from(Appointment).where(Appointment.patient_id == patient.id)
    assert db.session.scalar(booked) == 0
    page.click("#confirm-booking")
    page.wait_for_selector(".flash-success:has-text('Booked')")
    db.session.remove()
    assert db.session.scalar(booked) == 1


@pytest.mark.browser
def test_todays_consults_shows_a_check_in_in_place(live_server: str, live_factories: Any, new_browser: Any,
                                                   browser_login: Any, app: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(app.config, "CONSULT_DAY_REFRESH_SECONDS", 1)
    doctor = live_factories.doctor()
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name="Inplace")
    patient_user = patient.user
    with app.app_context():
        appt_id = current_slot(doctor, patient, by=patient_user).id
    page = new_browser().new_page()
    browser_login(page, live_server, doctor)
    page.goto(f"{live_server}/consults/today")
    row = page.locator(f"tr[data-appointment='{appt_id}']")
    assert "since" not in row.inner_text()
    loads: list[str] = []
    page.on("framenavigated", lambda f: loads.append(f.url) if f == page.main_frame else None)
    with app.app_context():
        service.check_in(db.session.get(Appointment, appt_id), by=patient_user)
        db.session.commit()
    page_until(page, lambda: "since" in row.inner_text(), timeout=10)
    assert loads == [] and row.locator("button.admit").count() == 1
