"""In Chromium: the patient consents in the recording panel, the doctor makes an interpreter link in the
participants panel, the interpreter redeems it and lands in the consult room, the doctor removes them."""

from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from app import db
from app.auth.models import Role, User
from app.consults import service
from app.consults.models import ConsultParticipant, RecordingConsent
from tests.consults.helpers import current_slot

pytestmark = pytest.mark.browser


def _until(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.remove()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_consent_panel_invite_link_and_removal(live_server, live_factories, new_browser, browser_login,
                                               artifacts_dir, media_config, app):
    doctor = live_factories.doctor(name="Dr Broker Panels")
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name="Lena")
    patient_user = patient.user
    appt = current_slot(doctor, patient, by=patient_user)
    service.check_in(appt, by=patient_user)
    service.admit(appt, by=doctor)
    db.session.commit()
    appt_id = appt.id

    pat, doc, guest = new_browser().new_page(), new_browser().new_page(), new_browser().new_page()
    for page in (pat, doc, guest):
        page.on("dialog", lambda d: d.accept())
    browser_login(pat, live_server, patient_user)
    pat.goto(f"{live_server}/consults/{appt_id}/room")
    pat.click("#rec-give")
    pat.wait_for_selector("#rec-consent:has-text('You agreed to this consult being recorded')")
    assert pat.is_visible("#rec-revoke") and not pat.is_visible("#rec-start")
    assert _until(lambda: db.session.scalar(sa.select(RecordingConsent.given_by_id).where(
        RecordingConsent.appointment_id == appt_id))) == patient_user.id

    browser_login(doc, live_server, doctor)
    doc.goto(f"{live_server}/consults/{appt_id}/room")
    doc.wait_for_selector("#rec-start", state="visible")  # consent given: the doctor may record
    doc.fill("#invite-name", "Ana")
    doc.click("#invite-form button[type=submit]")
    doc.wait_for_selector("#invite-link:has-text('works once')")
    link = re.search(r"https?://\S+", doc.inner_text("#invite-link")).group(0)

    guest.goto(link)
    assert "You were invited as Ana" in guest.inner_text("#invite")
    guest.click("#invite-join")
    guest.wait_for_url(f"**/consults/{appt_id}/room")
    guest_id = _until(lambda: db.session.scalar(sa.select(User.id).where(User.role == Role.GUEST,
                                                                         User.full_name == "Ana (interpreter)")))
    _until(lambda: db.session.scalar(sa.select(ConsultParticipant.joined_at).where(
        ConsultParticipant.user_id == guest_id)))  # the room page joined the consult
    assert guest.locator(".consult-side").count() == 0 and "Lena" not in guest.inner_text("body")

    item = doc.locator(f"#participant-list li[data-user-id='{guest_id}']")
    item.wait_for()
    assert "Ana (interpreter)" in item.inner_text()
    doc.screenshot(path=str(artifacts_dir / "consult-participants.png"))
    item.locator("button.remove-participant").click()
    assert _until(lambda: db.session.scalar(sa.select(ConsultParticipant.removed_at).where(
        ConsultParticipant.user_id == guest_id)))
    doc.wait_for_selector(f"#participant-list li[data-user-id='{guest_id}']:has-text('removed')", timeout=10_000)

    guest.goto(link)  # a used link stays used
    assert "already been used" in guest.inner_text("#invite")
