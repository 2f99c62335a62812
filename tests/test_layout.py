"""Every role's navigation pages on a 390x844 phone and a 1024x768 counter tablet, in Chromium: the header stays
compact (the navigation folds behind a Menu button on the phone), nothing scrolls sideways, every action on the
page is within the screen's width, and the navigation's touch targets are at least 44 px tall."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.auth.models import User
from app.consults import service as consults
from app.consults.models import Appointment, AppointmentStatus
from app.prescriptions import service as rx_service
from tests.consults.helpers import current_slot, next_slot_start, open_all_week
from tests.prescriptions.conftest import add_stock, rx_input

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
TABLET = {"width": 1024, "height": 768}

# What lies beyond the screen's right edge: overflowing elements and actions (links, buttons, fields) cut off.
OFFSCREEN = """() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  if (document.documentElement.scrollWidth > width) out.push(`page is ${document.documentElement.scrollWidth} px wide`);
  for (const el of document.querySelectorAll("main a, main button, main input, main select, main textarea")) {
    const r = el.getBoundingClientRect();
    if (r.width && r.height && getComputedStyle(el).visibility !== "hidden" && r.right > width + 1) {
      const label = (el.textContent || el.name || "").trim().slice(0, 40);
      out.push(`${el.tagName.toLowerCase()} "${label}" ends at ${Math.round(r.right)} px`);
    }
  }
  return out;
}"""


@pytest.fixture
def people(live_server: str, live_factories: Any) -> dict[str, Any]:
    """One person of each role, with enough data that every list has rows (a prescription waits at the pharmacy)."""
    tag = uuid.uuid4().hex[:6]
    f = live_factories
    clinic = f.facility(name=f"Layout clinic {tag}")
    doctor = f.doctor(email=f"layout-doc-{tag}@test.example", name="Dr Adaeze Okafor-Whitfield")
    patient = f.patient(facility=clinic, with_account=True, doctor=doctor,
                        given_name="Maria Fernanda", family_name=f"Gonzalez-Hernandez {tag}")
    rx = rx_service.create_draft(patient, rx_input("AMOX500"), by=doctor)
    rx_service.sign(rx, by=doctor)
    db.session.commit()
    add_stock(clinic.id, "AMOX500", 100)
    # a scan waiting on the doctor's reading worklist (named, so no other test's pool changes)
    import io

    from app.imaging.ingest import ingest_files
    from app.reading import service as reading
    from tests.imaging.dicomgen import ct_slice

    nurse = f.nurse(facility=clinic, email=f"layout-nurse-{tag}@test.example")
    [scan] = ingest_files([("ct.dcm", io.BytesIO(ct_slice(patient_id=patient.mrn, description="CT CHEST WITH "
                                                          "CONTRAST, PULMONARY ANGIOGRAM PROTOCOL")))],
                          by=nurse, facility_id=clinic.id, source="upload")
    from app.imaging.models import Study

    reading.request_reading(db.session.get(Study, scan.study_id), by=nurse, priority="urgent",
                            question="Sudden breathlessness after a long journey: pulmonary embolism?",
                            assigned_to_id=doctor.id)
    db.session.commit()
    from app.auth.oauth_service import ClientInput, register_client

    admin = f.admin(email=f"layout-admin-{tag}@test.example")
    long_uri = f"https://apps.example/{'very-long-path-segment/' * 8}callback?tag={tag}"  # must wrap, not widen
    register_client(ClientInput(name=f"Layout app {tag}", is_public=True, redirect_uris=[long_uri],
                                scope="openid", grants=["authorization_code"]), by=admin)
    db.session.commit()

    open_all_week(doctor)
    appt = current_slot(doctor, patient, by=patient.user)
    return {
        "patient": db.session.get(User, patient.user_id),
        "clinic staff": nurse,
        "doctor": doctor,
        "pharmacist": f.pharmacist(facility=clinic, email=f"layout-pharm-{tag}@test.example"),
        "admin": admin,
        "record": patient, "appointment": appt,
    }


def nav_links(page: Any) -> list[str]:
    return page.eval_on_selector_all("#site-menu a[href]", "els => els.map(a => a.href)")


@pytest.mark.parametrize("role", ["patient", "clinic staff", "doctor", "pharmacist", "admin"])
def test_every_navigation_page_fits_a_phone_and_a_tablet(role: str, people: dict[str, Any], live_server: str,
                                                        new_browser: Any, browser_login: Any) -> None:
    page = new_browser().new_page()
    browser_login(page, live_server, people[role])
    links = nav_links(page)
    assert links, "the navigation has no links"
    problems: list[str] = []
    for size in (PHONE, TABLET):
        page.set_viewport_size(size)
        for url in links:
            page.goto(url)
            page.wait_for_load_state("load")
            header = page.locator("header.topbar").bounding_box()
            if header["height"] > 0.25 * size["height"]:
                problems.append(f"{size['width']}px {url}: header is {header['height']:.0f} px tall")
            problems += [f"{size['width']}px {url}: {p}" for p in page.evaluate(OFFSCREEN)]
    assert not problems, "\n".join(problems)


def test_the_phone_menu_opens_with_touch_sized_links(people: dict[str, Any], live_server: str, new_browser: Any,
                                                     browser_login: Any) -> None:
    page = new_browser().new_page()
    browser_login(page, live_server, people["clinic staff"])
    page.set_viewport_size(PHONE)
    page.reload()
    toggle = page.locator(".menu-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert not page.locator(".mainnav").is_visible()
    assert page.locator("header.topbar").bounding_box()["height"] <= 70
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    links = page.locator("#site-menu a:visible, #site-menu button:visible")
    assert links.count() >= 4
    for i in range(links.count()):
        box = links.nth(i).bounding_box()
        assert box["height"] >= 44, f"{links.nth(i).inner_text()!r} is {box['height']} px tall"
    page.locator(".mainnav a", has_text="Patients").click()
    page.wait_for_url("**/patients**")
    assert not page.locator(".mainnav").is_visible()  # folded again on the next page


def test_pharmacy_queue_on_a_phone_keeps_prepare_on_screen(people: dict[str, Any], live_server: str,
                                                           new_browser: Any, browser_login: Any) -> None:
    page = new_browser().new_page()
    page.set_viewport_size(PHONE)
    browser_login(page, live_server, people["pharmacist"])
    page.goto(f"{live_server}/pharmacy")
    prepare = page.get_by_role("button", name="Prepare").first
    prepare.scroll_into_view_if_needed()
    box = prepare.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] and box["height"] >= 44
    cell = page.locator("table.table td[data-label]").first
    assert cell.get_attribute("data-label")  # a card row says which column it shows


def test_cancel_stands_apart_and_asks_first(live_server: str, live_factories: Any, new_browser: Any,
                                            browser_login: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    doctor = live_factories.doctor(email=f"cancel-doc-{tag}@test.example")
    patient = live_factories.patient(with_account=True, doctor=doctor)
    start = next_slot_start(skip=8)
    appt = Appointment(doctor_id=doctor.id, patient_id=patient.id, booked_by_id=patient.user_id, start_at=start,
                       end_at=start + timedelta(minutes=15), slot_key=consults.slot_key(doctor.id, start))
    db.session.add(appt)
    db.session.commit()
    page = new_browser().new_page()
    page.set_viewport_size(PHONE)
    browser_login(page, live_server, db.session.get(User, patient.user_id))
    page.goto(f"{live_server}/consults")
    row = page.locator(f"tr[data-appointment='{appt.id}']")
    cancel = row.get_by_role("button", name="Cancel")
    c = cancel.bounding_box()
    for other in ("Waiting room", "Change time"):
        w = row.get_by_role("link", name=other).bounding_box()
        gap = max(c["x"] - (w["x"] + w["width"]), w["x"] - (c["x"] + c["width"]),
                  c["y"] - (w["y"] + w["height"]), w["y"] - (c["y"] + c["height"]))
        assert gap >= 24, f"Cancel is only {gap:.0f} px from {other}"
    assert c["height"] >= 44
    assert cancel.evaluate("b => getComputedStyle(b).color") == "rgb(179, 38, 30)"  # the danger colour

    asked: list[str] = []

    def answer(accept: bool) -> Any:
        def handle(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))
    cancel.click()
    assert asked and doctor.full_name in asked[0]
    page.reload()
    db.session.expire_all()
    assert db.session.get(Appointment, appt.id).status is AppointmentStatus.BOOKED  # "no" keeps the booking
    page.once("dialog", answer(True))
    with page.expect_navigation():
        row.get_by_role("button", name="Cancel").click()
    db.session.expire_all()
    assert db.session.get(Appointment, appt.id).status is AppointmentStatus.CANCELLED


def test_phone_views_show_their_main_action_on_the_first_screen(people: dict[str, Any], live_server: str,
                                                                new_browser: Any, browser_login: Any,
                                                                artifacts_dir: Any) -> None:
    """The README's phone screenshots (docs/img/phone-*.png) come from here: each page's main action is on the
    first screen of a 390x844 phone, without scrolling."""
    record, appt = people["record"], people["appointment"]
    views = [
        ("patient", "/me", "phone-my-health", "#allergy"),
        ("patient", f"/consults/book?doctor_id={people['doctor'].id}", "phone-booking", "#slots .slot"),
        ("patient", f"/consults/{appt.id}/waiting", "phone-waiting-room", "#check-in"),
        ("pharmacist", "/pharmacy", "phone-pharmacy-queue", "button:has-text('Prepare')"),
        ("clinic staff", f"/patients/{record.id}", "phone-chart", ".patient-banner"),
    ]
    pages: dict[str, Any] = {}
    problems: list[str] = []
    for role, url, name, action in views:
        if role not in pages:
            pages[role] = new_browser(viewport=PHONE, has_touch=True, is_mobile=True).new_page()
            browser_login(pages[role], live_server, people[role])
        page = pages[role]
        page.goto(f"{live_server}{url}")
        box = page.locator(action).first.bounding_box()
        if not box or box["y"] + min(box["height"], 44) > PHONE["height"] or box["x"] + box["width"] > PHONE["width"]:
            problems.append(f"{name}: {action} is not on the first screen ({box})")
        page.screenshot(path=str(artifacts_dir / f"{name}.png"))
    assert not problems, "\n".join(problems)


def test_booking_on_a_phone_is_a_day_then_a_time_then_a_confirmation(people: dict[str, Any], live_server: str,
                                                                      new_browser: Any, browser_login: Any,
                                                                      artifacts_dir: Any) -> None:
    doctor = people["doctor"]
    page = new_browser(viewport=PHONE, has_touch=True, is_mobile=True).new_page()
    browser_login(page, live_server, people["patient"])
    page.goto(f"{live_server}/consults/book?doctor_id={doctor.id}")
    day_start = next_slot_start().replace(hour=0, minute=0) + timedelta(days=2)
    day = day_start.date()
    page.fill("#day", day.isoformat())
    page.press("#day", "Enter")  # Enter shows the day; it books nothing
    page.wait_for_url(f"**day={day.isoformat()}**")
    assert page.locator("#slot-picker h3", has_text="Morning").count() == 1
    assert page.locator("#slot-picker h3", has_text="Afternoon").count() == 1
    page.locator("label.slot").get_by_text("2:30\u202fPM", exact=True).tap()
    page.click("#choose-time")
    page.wait_for_selector("#slot-confirm")
    summary = page.inner_text(".confirm-list")
    for expected in (doctor.full_name, day.isoformat(), "2:30\u202fPM–2:45\u202fPM", "UTC"):
        assert expected in summary
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Appointment).where(
        Appointment.doctor_id == doctor.id, Appointment.start_at >= day_start)) == 0  # nothing booked before confirming
    page.screenshot(path=str(artifacts_dir / "phone-booking-confirm.png"))
    page.click("#confirm-booking")
    page.wait_for_selector("text=Booked: video consult")
    db.session.expire_all()
    booked = db.session.scalars(sa.select(Appointment).where(Appointment.doctor_id == doctor.id,
                                                             Appointment.start_at >= day_start)).all()
    assert [(a.start_at.date(), a.start_at.strftime("%H:%M")) for a in booked] == [(day, "14:30")]
