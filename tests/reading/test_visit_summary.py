"""The visit summary after a video consult: written by the doctor in the room, shown to the patient once the
consult ended (not before), with the prescriptions made, printable, audited."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.consults import service as consults
from app.notify.models import Notification
from app.prescriptions import service as rx_service
from tests.consults.helpers import admitted_consult, next_slot_start, open_all_week
from tests.prescriptions.conftest import rx_input


def test_doctor_writes_summary_patient_reads_it_after_the_consult(make_client: Any, factories: Any, login: Any,
                                                                   app: Any) -> None:
    doctor, patient, appt = admitted_consult(factories, app)
    patient_user_id = patient.user_id
    with app.test_request_context("/"):  # prescribed during the consult
        rx = rx_service.create_draft(patient, rx_input("PARA500"), by=doctor)
        rx_service.sign(rx, by=doctor)
        db.session.commit()
    doctor_browser, patient_browser = make_client(), make_client()
    login(doctor_browser, doctor)
    room = doctor_browser.get(f"/consults/{appt.id}/room").get_data(as_text=True)
    assert 'id="visit-summary-form"' in room
    saved = doctor_browser.post(f"/consults/{appt.id}/summary", data={
        "reason": "Cough", "findings": "Chest clear.", "diagnosis": "Viral bronchitis",
        "plan": "Rest, fluids.", "follow_up": "Call if fever over 3 days", "back": "room"})
    assert saved.status_code == 302 and saved.headers["Location"].endswith(f"/consults/{appt.id}/room")
    login(patient_browser, patient.user)
    assert "Viral bronchitis" not in patient_browser.get(f"/consults/{appt.id}/summary").get_data(as_text=True)
    assert doctor_browser.post(f"/consults/{appt.id}/end", data={}).status_code == 302
    with app.test_request_context("/"):  # the follow-up, booked in a later free slot
        open_all_week(doctor)
        follow_up = consults.book(patient=patient, doctor_id=doctor.id, start=next_slot_start(skip=4),
                                  by=patient.user)
        db.session.commit()
        assert follow_up.id
    assert db.session.scalar(sa.select(Notification).where(Notification.recipient_id == patient_user_id,
                                                           Notification.subject == "Your visit summary"))
    health = patient_browser.get("/me").get_data(as_text=True)
    assert "Visit summaries" in health and "Viral bronchitis" in health
    page = patient_browser.get(f"/consults/{appt.id}/summary").get_data(as_text=True)
    assert "Rest, fluids." in page and "Call if fever over 3 days" in page
    assert "1 tablet 3 times a day for 7 days" in page  # the prescription made in the consult
    assert "Booked: video consult on " in page and " UTC with " in page  # the follow-up booked
    assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "visit_summary.read",
                                                         AuditEvent.actor_id == patient_user_id))
    stranger = make_client()
    login(stranger, factories.doctor())
    assert stranger.get(f"/consults/{appt.id}/summary").status_code == 404
    assert stranger.post(f"/consults/{appt.id}/summary", data={"plan": "x"}).status_code == 404
