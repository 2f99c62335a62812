"""A grandson switches "Acting for" to his grandmother in a real browser and books her a video consult."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.auth.models import Role
from app.consults.models import Appointment
from app.notify.models import Notification
from app.patients import caregivers
from tests.a11y import axe_violations
from tests.consults.helpers import open_all_week

pytestmark = pytest.mark.browser


def test_caregiver_switches_to_grandma_and_books_her_a_consult(live_server, live_factories, new_browser,
                                                                browser_login, artifacts_dir):
    tag = uuid.uuid4().hex[:6]
    doctor = live_factories.doctor(name=f"Dr Proxy {tag}")
    open_all_week(doctor)
    grandma = live_factories.patient(given_name="Li", family_name=f"Grandma{tag}")
    grandson = live_factories.user(Role.PATIENT, name=f"Wei {tag}")
    nurse = live_factories.nurse(facility=grandma.facility)
    caregivers.link(grandma, caregivers.LinkInput(caregiver_email=grandson.email, relationship="grandchild",
                                                  rights=["book", "join"], consent_method="spoken"), by=nurse)
    db.session.commit()

    page = new_browser().new_page()
    browser_login(page, live_server, grandson)
    page.select_option("#acting-for-choice", str(grandma.id))
    page.click("#acting-for button[type=submit]")
    page.wait_for_selector("#acting-badge")
    assert f"Grandma{tag}" in page.inner_text("#acting-badge")
    assert axe_violations(page) == []  # the switch and its badge in the header keep WCAG 2.1 AA

    page.click("nav >> text=Consults")
    page.click("text=Book a video consult")
    assert grandma.mrn in page.inner_text("main")  # booking for her, not for himself
    page.select_option("#doctor_id", str(doctor.id))
    page.click("button:has-text('Show free times')")
    page.check("#slot-picker input[name=start] >> nth=0")
    page.click("#choose-time")
    page.fill("#reason", "Knee pain")
    page.click("#confirm-booking")
    page.wait_for_selector(".flash-success:has-text('Booked')")
    page.screenshot(path=str(artifacts_dir / "caregiver-booked.png"))
    page.click("text=Caregivers")  # his own page lists the people he cares for, and how to step down
    assert f"Grandma{tag}" in page.inner_text("#cared-for")
    assert axe_violations(page) == []

    db.session.remove()
    appt = db.session.scalar(sa.select(Appointment).where(Appointment.patient_id == grandma.id))
    assert appt is not None and appt.booked_by_id == grandson.id and appt.reason == "Knee pain"
    booked = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "appointment.create",
                                                           AuditEvent.resource_id == str(appt.id)))
    assert (booked.actor_id, booked.patient_id, booked.on_behalf_of) == (grandson.id, grandma.id, grandma.id)
    told = db.session.scalars(sa.select(Notification.body).where(Notification.recipient_id == grandson.id)).all()
    assert any(f"Grandma{tag}" in body and "Dr Proxy" in body for body in told)  # the confirmation he was promised
