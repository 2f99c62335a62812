"""The consult pages as people use them (forms, links, honest status), also on SQLite (smoke)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.consults.helpers import admitted_consult, open_all_week

pytestmark = pytest.mark.smoke


def test_doctor_publishes_availability_and_patient_books_through_the_pages(make_client, factories, login):
    doctor = factories.doctor(name="Dr Page")
    patient = factories.patient(with_account=True)
    patient_user, doctor_id = patient.user, doctor.id
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    resp = doc.post("/consults/availability", data={"weekday": tomorrow.weekday(), "start_time": "10:00",
                                                     "end_time": "11:00", "slot_minutes": "30"})
    assert resp.status_code == 302
    page = doc.get("/consults/availability").get_data(as_text=True)
    assert "10:00" in page and "30 min" in page
    bad = doc.post("/consults/availability", data={"weekday": tomorrow.weekday(), "start_time": "10:30",
                                                    "end_time": "12:00"}, follow_redirects=True)
    assert "overlaps" in bad.get_data(as_text=True)

    login(pat, patient_user)
    slots = pat.get(f"/consults/book?doctor_id={doctor_id}").get_data(as_text=True)
    start = f"{tomorrow.isoformat()}T10:30:00+00:00"
    assert start in slots and "Afternoon" not in slots and "Morning" in slots  # one day, split at noon
    confirm = pat.get(f"/consults/book?doctor_id={doctor_id}&start={start.replace('+', '%2B')}")
    text = confirm.get_data(as_text=True)
    assert "Check and confirm" in text and "Dr Page" in text and tomorrow.isoformat() in text
    assert "10:30\u202fAM–11:00\u202fAM" in text and '<dd id="confirm-zone">UTC</dd>' in text
    assert 'id="confirm-booking"' in text
    gone = pat.get(f"/consults/book?doctor_id={doctor_id}&start={tomorrow.isoformat()}T03:00:00%2B00:00")
    assert "That time is no longer free" in gone.get_data(as_text=True)
    booked = pat.post("/consults/book", data={"doctor_id": doctor_id, "start": start, "reason": "rash"},
                      follow_redirects=True)
    text = booked.get_data(as_text=True)
    assert "Booked: video consult" in text and "Dr Page" in text and "Booked" in text
    waiting = pat.get("/consults").get_data(as_text=True)
    assert "Waiting room" in waiting and "Change time" in waiting
    appt_id = int(waiting.split('data-appointment="')[1].split('"')[0])
    # Rescheduling is the same picker and confirmation.
    later = f"{tomorrow.isoformat()}T10:00:00+00:00"
    picker_page = pat.get(f"/consults/{appt_id}/reschedule").get_data(as_text=True)
    assert 'id="slot-picker"' in picker_page and later in picker_page and start not in picker_page
    check = pat.get(f"/consults/{appt_id}/reschedule?start={later.replace('+', '%2B')}").get_data(as_text=True)
    assert "Check and confirm" in check and "10:00\u202fAM–10:30\u202fAM" in check and "Move to this time" in check
    moved = pat.post(f"/consults/{appt_id}/reschedule", data={"start": later}, follow_redirects=True)
    assert "Moved: video consult now on" in moved.get_data(as_text=True) and "10:00" in moved.get_data(as_text=True)
    assert "Video consult booked" in pat.get("/notifications").get_data(as_text=True)


def test_waiting_room_day_view_and_room_pages(app, make_client, factories, login):
    doctor, patient, appt = admitted_consult(factories, app, admit=False)
    a, patient_user = appt.id, patient.user
    doc, pat = make_client(), make_client()
    login(doc, doctor)
    login(pat, patient_user)
    room = pat.get(f"/consults/{a}/room")
    assert room.status_code == 302 and room.headers["Location"].endswith(f"/consults/{a}/waiting")
    waiting = pat.get(f"/consults/{a}/waiting").get_data(as_text=True)
    assert "The doctor will admit you" in waiting and "Test your camera" in waiting
    day = doc.get("/consults/today").get_data(as_text=True)
    assert "since" in day and "Admit" in day
    admitted = doc.post(f"/consults/{a}/admit")
    assert admitted.headers["Location"].endswith(f"/consults/{a}/room")
    page = doc.get(f"/consults/{a}/room").get_data(as_text=True)
    assert "Consult note" in page and patient.mrn in page
    assert "Consult note" not in pat.get(f"/consults/{a}/room").get_data(as_text=True)
    intruder = make_client()
    login(intruder, factories.doctor())
    assert intruder.get(f"/consults/{a}/room").status_code == 404
    ended = doc.post(f"/consults/{a}/end", data={"notes": "ok", "diagnosis": "well"}, follow_redirects=True)
    assert "Consult ended" in ended.get_data(as_text=True)
    assert pat.get(f"/consults/{a}/room").status_code == 302


def test_clinic_staff_books_from_the_chart(make_client, factories, login):
    nurse = factories.nurse()
    doctor = factories.doctor()
    open_all_week(doctor)
    patient = factories.patient()
    browser = make_client()
    login(browser, nurse)
    chart = browser.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "Book video consult" in chart
    assert "Free times" in browser.get(f"/consults/book?patient_id={patient.id}&doctor_id={doctor.id}"
                                       ).get_data(as_text=True)


def test_the_recording_panel_words_come_in_the_readers_language(make_client, factories, login, app):
    _doctor, patient, appt = admitted_consult(factories, app, admit=False)
    pat = make_client()
    login(pat, patient.user)
    page = pat.get(f"/consults/{appt.id}/waiting", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    block = re.search(r'<script type="application/json" id="recording-text">(.*?)</script>', page, re.S)
    assert block is not None  # recording.js writes consent and progress lines with these, not English ones
    words = json.loads(block[1])
    assert words["selfNone"] == "本次问诊未被录制。只有在您同意后才会录制。"
    assert words["selfAgreedBy"] == "您已同意录制本次问诊（由 {name} 记录了您的同意）。您可以随时撤回。"
