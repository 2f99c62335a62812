"""A patient and a doctor in two Chromium profiles with fake cameras hold a video consult end to end."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db
from app.consults.models import Appointment, Encounter
from tests.consults.helpers import current_slot, page_until

pytestmark = pytest.mark.browser


def _frames(page) -> int:
    return int(page.get_attribute("#quality", "data-frames-decoded") or 0)


_until = page_until


def _wait_playing(page) -> int:
    """The remote video is decoding frames, and the count keeps growing."""
    first = _until(page, lambda: _frames(page) > 5 and _frames(page))
    return _until(page, lambda: _frames(page) > first + 10 and _frames(page), timeout=10)


def test_patient_checks_in_doctor_admits_and_they_talk(live_server, live_factories, new_browser, browser_login,
                                                       artifacts_dir, media_config, app):
    doctor = live_factories.doctor(name="Dr Browser Consult")
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name="Vera")
    patient_user = patient.user
    with app.app_context():
        appt = current_slot(doctor, patient, by=patient_user)
    appt_id = appt.id

    pat = new_browser().new_page()
    doc = new_browser().new_page()
    for page in (pat, doc):
        page.on("dialog", lambda d: d.accept())
    browser_login(pat, live_server, patient_user)
    pat.click("nav >> text=Consults")
    pat.click(f"tr[data-appointment='{appt_id}'] >> text=Waiting room")
    pat.click("#check-in")
    pat.wait_for_selector("#status-text:has-text('The doctor will admit you')")

    # pre-call device test: camera and microphone go to the echo service and come back
    pat.click("#echo-start")
    pat.wait_for_selector("#echo-result:has-text('Your video came back')", timeout=20_000)
    rtt = _until(pat, lambda: pat.get_attribute("#echo-result", "data-rtt"))
    assert 0 <= float(rtt) < 1000
    pat.click("#echo-stop")

    browser_login(doc, live_server, doctor)
    doc.goto(f"{live_server}/consults/today")
    row = doc.locator(f"tr[data-appointment='{appt_id}']")
    assert "since" in row.inner_text()
    row.locator("button.admit").click()
    doc.wait_for_url(f"**/consults/{appt_id}/room")
    pat.wait_for_url(f"**/consults/{appt_id}/room", timeout=10_000)

    assert _wait_playing(doc) > 15 and _wait_playing(pat) > 15
    assert "Vera" in doc.inner_text(".consult-side")  # the chart beside the video
    assert "RTT" in pat.inner_text("#quality")

    pat.fill("#chat-input", "I can see you clearly")
    pat.click("#chat-form button")
    doc.wait_for_selector("#chat-log li:has-text('I can see you clearly')")
    doc.fill("#chat-input", "Good, let us start")
    doc.press("#chat-input", "Enter")
    pat.wait_for_selector("#chat-log li:has-text('Good, let us start')")
    # a dropped patient (here: a reload) rejoins with a fresh token; the doctor sends a new offer
    pat.reload()
    assert _wait_playing(pat) > 15
    before = _frames(doc)
    _until(doc, lambda: _frames(doc) > before + 10, timeout=10)
    doc.screenshot(path=str(artifacts_dir / "consult-doctor.png"))
    pat.screenshot(path=str(artifacts_dir / "consult-patient.png"))

    doc.fill("#diagnosis", "Seasonal allergy")
    doc.fill("#notes", "Antihistamine, review in two weeks.")
    doc.click("#end-consult")
    doc.wait_for_url("**/consults/today")
    pat.wait_for_selector("#remote-status:has-text('The consult has ended')", timeout=10_000)

    db.session.remove()
    status = db.session.scalar(sa.select(Appointment.status).where(Appointment.id == appt_id))
    encounter = db.session.scalar(sa.select(Encounter).where(Encounter.appointment_id == appt_id))
    assert status.value == "fulfilled"
    assert encounter.status.value == "finished" and encounter.diagnosis == "Seasonal allergy"
    assert [m.body for m in encounter.messages] == ["I can see you clearly", "Good, let us start"]
