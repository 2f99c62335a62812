"""A patient and a doctor in two Chromium profiles with fake cameras hold a video consult end to end."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db
from app.consults import service
from app.consults.models import Appointment, Encounter
from tests.consults.helpers import current_slot, page_until

pytestmark = pytest.mark.browser


def _frames(page) -> int:
    return int(page.get_attribute("#quality", "data-frames-decoded") or 0)


_until = page_until


def _wait_playing(page) -> int:
    """The remote video is decoding frames, and the count keeps growing (ICE and the decoder start slowly on a
    busy machine, hence the first wait's length)."""
    first = _until(page, lambda: _frames(page) > 5 and _frames(page), timeout=40)
    return _until(page, lambda: _frames(page) > first + 10 and _frames(page), timeout=10)


def _checked_in(live_server, live_factories, new_browser, browser_login, app, *, doctor_name: str,
                given_name: str) -> tuple[object, object, object, int]:
    """A doctor and a patient in two browsers; the patient has checked in. Returns (doctor, doc, pat, appt id)."""
    doctor = live_factories.doctor(name=doctor_name)
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name=given_name)
    with app.app_context():
        appt_id = current_slot(doctor, patient, by=patient.user).id
    pat = new_browser().new_page()
    doc = new_browser().new_page()
    doc.on("dialog", lambda d: d.accept())  # the patient's page answers its own questions in each test
    browser_login(pat, live_server, patient.user)
    pat.click("nav >> text=Consults")
    pat.click(f"tr[data-appointment='{appt_id}'] >> text=Waiting room")
    pat.click("#check-in")
    pat.wait_for_selector("#status-text:has-text('The doctor will admit you')")
    pat.wait_for_selector("#camera-ready:visible")  # the camera is on before the doctor admits
    return doctor, doc, pat, appt_id


def _end_and_check(doc, pat, appt_id: int, chat: list[str], diagnosis: str) -> None:
    doc.fill("#diagnosis", diagnosis)
    doc.fill("#notes", "Antihistamine, review in two weeks.")
    doc.click("#end-consult")
    doc.wait_for_url("**/consults/today")
    pat.wait_for_selector("#remote-status:has-text('The consult has ended')", timeout=10_000)
    assert pat.is_hidden(".controls") and pat.is_hidden("#chat-form")  # no live controls after the end
    assert pat.is_visible("#consult-over a")

    db.session.remove()
    status = db.session.scalar(sa.select(Appointment.status).where(Appointment.id == appt_id))
    encounter = db.session.scalar(sa.select(Encounter).where(Encounter.appointment_id == appt_id))
    assert status.value == "fulfilled"
    assert encounter.status.value == "finished" and encounter.diagnosis == diagnosis
    assert [m.body for m in encounter.messages] == chat


def test_prepared_room_admit_turns_the_waiting_room_into_the_consult(live_server, live_factories, new_browser,
                                                                     browser_login, artifacts_dir, media_config,
                                                                     app):
    doctor, doc, pat, appt_id = _checked_in(live_server, live_factories, new_browser, browser_login, app,
                                            doctor_name="Dr Prepared Room", given_name="Vera")

    # pre-call device test on the camera that stays on for the consult
    pat.wait_for_selector("#rec-consent:has-text('It is recorded only if you agree')")  # spoken to as "you"
    pat.click("#echo-start")
    pat.wait_for_selector("#echo-result:has-text('Everything works: the doctor will see and hear you clearly.')",
                          timeout=20_000)
    assert "fps" not in pat.inner_text("#echo-result") and "loss" not in pat.inner_text("#echo-result")
    rtt = _until(pat, lambda: pat.get_attribute("#echo-result", "data-rtt"))
    assert 0 <= float(rtt) < 1000
    pat.click("#echo-stop")
    assert pat.is_hidden("#consult")

    # the doctor opens the room before admitting: camera on, joined, the call ready
    browser_login(doc, live_server, doctor)
    doc.goto(f"{live_server}/consults/today")
    row = doc.locator(f"tr[data-appointment='{appt_id}']")
    assert "since" in row.inner_text()
    row.locator("a.prepare").click()
    doc.wait_for_url(f"**/consults/{appt_id}/room")
    assert "Vera" in doc.inner_text("#admit-bar")
    waiting_url = pat.url
    loads: list[str] = []
    pat.on("load", lambda p: loads.append(p.url))
    pat.on("framenavigated", lambda f: loads.append(f.url) if f == pat.main_frame else None)
    assert "will admit you" in pat.inner_text("#status-text")  # not let in before Admit

    doc.click("#admit-now")
    doc.wait_for_selector("#admit-bar", state="detached")
    pat.wait_for_selector("#consult:visible", timeout=10_000)
    assert pat.is_hidden("#device-test")
    assert _wait_playing(doc) > 15 and _wait_playing(pat) > 15
    assert pat.url == waiting_url and loads == []  # the same page turned into the consult
    assert pat.inner_text("#status-text") == "You are in the consult with the doctor."
    assert "RTT" in pat.inner_text("#quality")

    pat.fill("#chat-input", "I can see you clearly")
    pat.click("#chat-form button")
    doc.wait_for_selector("#chat-log li:has-text('I can see you clearly')")
    doc.fill("#chat-input", "Good, let us start")
    doc.press("#chat-input", "Enter")
    pat.wait_for_selector("#chat-log li:has-text('Good, let us start')")
    dialogs: list[str] = []
    pat.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pat.click("#leave")  # asks first; "Cancel" keeps the call going
    assert dialogs and "Leave the consult?" in dialogs[0]
    assert pat.is_visible("#leave") and pat.url == waiting_url
    doc.screenshot(path=str(artifacts_dir / "consult-doctor.png"))
    pat.screenshot(path=str(artifacts_dir / "consult-patient.png"))
    _end_and_check(doc, pat, appt_id, ["I can see you clearly", "Good, let us start"], "Seasonal allergy")


def test_admit_from_the_day_view_and_rejoin_after_a_reload(live_server, live_factories, new_browser, browser_login,
                                                           media_config, app):
    doctor, doc, pat, appt_id = _checked_in(live_server, live_factories, new_browser, browser_login, app,
                                            doctor_name="Dr Day View", given_name="Otto")
    browser_login(doc, live_server, doctor)
    doc.goto(f"{live_server}/consults/today")
    doc.locator(f"tr[data-appointment='{appt_id}'] button.admit").click()
    doc.wait_for_url(f"**/consults/{appt_id}/room")
    assert doc.locator("#admit-bar").count() == 0  # admitted already
    pat.wait_for_selector("#consult:visible", timeout=10_000)
    assert _wait_playing(doc) > 15 and _wait_playing(pat) > 15
    assert "Otto" in doc.inner_text(".consult-side")  # the chart beside the video

    doc.fill("#chat-input", "Hello Otto")
    doc.press("#chat-input", "Enter")
    pat.wait_for_selector("#chat-log li:has-text('Hello Otto')")
    # a dropped patient (here: a reload) rejoins with a fresh token; the doctor sends a new offer
    pat.reload()
    assert pat.is_visible("#consult") and pat.is_hidden("#device-test")
    assert _wait_playing(pat) > 15
    before = _frames(doc)
    _until(doc, lambda: _frames(doc) > before + 10, timeout=10)
    assert pat.locator("#chat-log li:has-text('Hello Otto')").count() == 1  # history, not replayed twice
    # the standalone room address works too
    pat.goto(f"{live_server}/consults/{appt_id}/room")
    assert _wait_playing(pat) > 15
    _end_and_check(doc, pat, appt_id, ["Hello Otto"], "Tension headache")


def test_a_waiting_room_opened_before_check_in_elsewhere_still_turns_into_the_consult(live_server, live_factories,
                                                                                       new_browser, browser_login,
                                                                                       app):
    doctor = live_factories.doctor(name="Dr Elsewhere")
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name="Ines")
    patient_user = patient.user
    with app.app_context():
        appt = current_slot(doctor, patient, by=patient_user)
    appt_id = appt.id
    pat = new_browser().new_page()
    browser_login(pat, live_server, patient_user)
    pat.goto(f"{live_server}/consults/{appt_id}/waiting")
    assert pat.is_visible("#check-in") and pat.locator("#consult").count() == 0

    with app.app_context():  # checked in from another device (or by the clinic)
        service.check_in(db.session.get(Appointment, appt_id), by=patient_user)
        db.session.commit()
    pat.wait_for_selector("#camera-ready:visible", timeout=10_000)  # the page reloaded once, camera on
    loads: list[str] = []
    pat.on("load", lambda p: loads.append(p.url))
    with app.app_context():
        service.admit(db.session.get(Appointment, appt_id), by=doctor)
        db.session.commit()
    pat.wait_for_selector("#consult:visible", timeout=10_000)
    pat.wait_for_selector("#remote-status:has-text('Waiting for the doctor')")
    assert loads == [] and pat.url.endswith(f"/consults/{appt_id}/waiting")
