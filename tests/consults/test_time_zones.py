"""Doctors publish availability in their own time; patients see and book it in theirs; daylight-saving changes
neither shift, double nor drop a slot. A doctor in Europe/Berlin, a patient in Asia/Shanghai (no DST)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from app import db, i18n
from app.audit.models import AuditEvent
from app.auth.models import User
from app.consults import picker, service
from app.consults.models import Availability, AvailabilityException
from app.notify.models import Notification

BERLIN, SHANGHAI = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Shanghai")
SPRING = date(2027, 3, 28)  # last Sunday of March 2027: Berlin 02:00 CET -> 03:00 CEST
AUTUMN = date(2027, 10, 31)  # last Sunday of October 2027: Berlin 03:00 CEST -> 02:00 CET


def _zoned_facility(factories, zone: str, **kw):
    facility = factories.facility(**kw)
    facility.timezone = zone
    db.session.commit()
    return facility


@pytest.fixture
def berlin_doctor(factories):
    hospital = _zoned_facility(factories, "Europe/Berlin", name="Charité remote clinic")
    return factories.doctor(facility=hospital, name="Dr Berlin")


@pytest.fixture
def shanghai_patient(factories):
    clinic = _zoned_facility(factories, "Asia/Shanghai", name="Town clinic")
    return factories.patient(facility=clinic, with_account=True, phone="+8613800000000")


def _every_day(doctor, start: time, end: time, slot_minutes: int = 30) -> None:
    for weekday in range(7):
        service.publish_availability(by=doctor, weekday=weekday, start_time=start, end_time=end,
                                     slot_minutes=slot_minutes)
    db.session.commit()


def _frozen(monkeypatch, moment: datetime) -> None:
    monkeypatch.setattr(db, "utcnow", lambda: moment)


def test_windows_are_kept_in_the_doctors_zone(app_ctx, berlin_doctor):
    window = service.publish_availability(by=berlin_doctor, weekday=0, start_time=time(9), end_time=time(10))
    assert window.timezone == "Europe/Berlin"  # the doctor's facility's zone, the doctor chose none
    berlin_doctor.timezone = "Asia/Tokyo"
    own = service.publish_availability(by=berlin_doctor, weekday=1, start_time=time(9), end_time=time(10))
    assert own.timezone == "Asia/Tokyo"  # a zone of their own wins


@pytest.mark.parametrize("change", [SPRING, AUTUMN])
def test_morning_slots_stay_at_nine_in_berlin_across_the_change(app_ctx, berlin_doctor, shanghai_patient,
                                                                 monkeypatch, change):
    _every_day(berlin_doctor, time(9), time(10))
    _frozen(monkeypatch, datetime.combine(change - timedelta(days=6), time(0), tzinfo=UTC))
    slots = service.open_slots(berlin_doctor, days=13)
    by_day = Counter(s.start.astimezone(BERLIN).date() for s in slots)
    assert sorted(by_day.values()) == [2] * 13  # every day two slots: none doubled, none lost
    assert {s.start.astimezone(BERLIN).time() for s in slots} == {time(9), time(9, 30)}  # none shifted
    assert len({s.start for s in slots}) == len(slots)
    # UTC moves instead, and so does the patient's clock in Shanghai (which has no daylight saving)
    before = [s for s in slots if s.start.astimezone(BERLIN).date() < change]
    after = [s for s in slots if s.start.astimezone(BERLIN).date() >= change]
    winter_first, summer_first = (before, after) if change == SPRING else (after, before)
    assert {s.start.astimezone(SHANGHAI).time() for s in winter_first} == {time(16), time(16, 30)}
    assert {s.start.astimezone(SHANGHAI).time() for s in summer_first} == {time(15), time(15, 30)}
    # the patient's picker shows each of those days with both times, in the morning/afternoon of Shanghai
    choice = picker.choose_day(slots, change, SHANGHAI)
    assert [s.start.astimezone(SHANGHAI).strftime("%H:%M") for s in choice.afternoon] == (
        ["15:00", "15:30"] if change == SPRING else ["16:00", "16:30"])
    assert choice.morning == [] and len(choice.days) == 13


def test_a_night_window_over_the_spring_change_is_two_real_hours_back_to_back(app_ctx, berlin_doctor):
    window = service.publish_availability(by=berlin_doctor, weekday=6, start_time=time(1), end_time=time(4),
                                            slot_minutes=30)
    day = datetime.combine(SPRING, time(0), tzinfo=BERLIN)
    slots = service.window_slots(window, day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC))
    local = [s.start.astimezone(BERLIN).strftime("%H:%M %Z") for s in slots]
    assert local == ["01:00 CET", "01:30 CET", "03:00 CEST", "03:30 CEST"]  # 02:xx does not exist that night
    assert all(a.end == b.start for a, b in zip(slots, slots[1:], strict=False))
    assert all(s.end - s.start == timedelta(minutes=30) for s in slots)


def test_a_night_window_over_the_autumn_change_offers_the_repeated_hour_once_each(app_ctx, berlin_doctor):
    window = service.publish_availability(by=berlin_doctor, weekday=6, start_time=time(1), end_time=time(4),
                                            slot_minutes=30)
    day = datetime.combine(AUTUMN, time(0), tzinfo=BERLIN)
    slots = service.window_slots(window, day.astimezone(UTC), (day + timedelta(days=1)).astimezone(UTC))
    local = [s.start.astimezone(BERLIN).strftime("%H:%M %Z") for s in slots]
    assert local == ["01:00 CEST", "01:30 CEST", "02:00 CEST", "02:30 CEST",
                     "02:00 CET", "02:30 CET", "03:00 CET", "03:30 CET"]  # four real hours that night
    assert len({s.start for s in slots}) == 8
    assert all(a.end == b.start for a, b in zip(slots, slots[1:], strict=False))


def test_slots_of_the_doctors_day_are_found_from_any_zone(app_ctx, berlin_doctor, monkeypatch):
    """A Berlin evening slot is the next morning in Shanghai; booking it by its Shanghai time finds it."""
    _every_day(berlin_doctor, time(20), time(21))
    _frozen(monkeypatch, datetime(2027, 3, 25, 12, tzinfo=UTC))
    slots = service.open_slots(berlin_doctor, days=5)
    evening = next(s for s in slots if s.start.astimezone(BERLIN).date() == SPRING)
    assert evening.start == datetime(2027, 3, 28, 18, tzinfo=UTC)  # 20:00 CEST
    choice = picker.choose_day(slots, date(2027, 3, 29), SHANGHAI)
    assert evening in choice.morning  # 02:00 on Monday in Shanghai


def test_shanghai_patient_books_a_berlin_slot_and_each_is_told_in_their_own_time(
        app_ctx, berlin_doctor, shanghai_patient, monkeypatch):
    _every_day(berlin_doctor, time(9), time(10))
    _frozen(monkeypatch, datetime(2027, 3, 26, 12, tzinfo=UTC))
    patient_user = shanghai_patient.user
    shanghai_start = datetime(2027, 3, 29, 15, 0, tzinfo=SHANGHAI)  # Monday 09:00 CEST in Berlin
    appt = service.book(patient=shanghai_patient, doctor_id=berlin_doctor.id, start=shanghai_start,
                        by=patient_user)
    db.session.commit()
    assert appt.start_at == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)  # stored in UTC
    bodies = dict(db.session.execute(sa.select(Notification.recipient_id, Notification.body).where(
        Notification.recipient_id.in_([patient_user.id, berlin_doctor.id]))).all())
    assert "Mon, Mar 29, 2027, 3:00\u202fPM China Standard Time" in bodies[patient_user.id]
    assert "Mon, Mar 29, 2027, 9:00\u202fAM Central European Summer Time" in bodies[berlin_doctor.id]


def test_time_away_typed_by_the_doctor_is_their_own_time(client, login, berlin_doctor, factories, monkeypatch):
    login(client, berlin_doctor)
    resp = client.post("/consults/availability", data={"form": "exception", "starts_at": "2027-04-01T09:00",
                                                        "ends_at": "2027-04-01T12:00", "reason": "ward round"})
    assert resp.status_code == 302
    page = client.get("/consults/availability").get_data(as_text=True)
    assert "(Europe/Berlin)" in page  # the page says which zone its times are in
    assert "Apr 1, 2027, 12:00\u202fPM Central European Summer Time" in page
    exc = db.session.scalar(sa.select(AvailabilityException).where(
        AvailabilityException.doctor_id == berlin_doctor.id))
    assert exc is not None and exc.starts_at == datetime(2027, 4, 1, 7, tzinfo=UTC)


def test_patient_books_on_the_page_in_shanghai_time(make_client, login, berlin_doctor, shanghai_patient,
                                                    monkeypatch):
    patient_user = shanghai_patient.user
    _frozen(monkeypatch, datetime(2027, 3, 26, 12, tzinfo=UTC))  # a few days before the spring change
    doc, pat = make_client(), make_client()
    login(doc, berlin_doctor)
    monday = date(2027, 3, 29)
    assert doc.post("/consults/availability", data={"weekday": monday.weekday(), "start_time": "09:00",
                                                     "end_time": "10:00", "slot_minutes": "30"}).status_code == 302
    window = db.session.scalar(sa.select(Availability).where(Availability.doctor_id == berlin_doctor.id))
    assert window is not None and window.timezone == "Europe/Berlin"
    login(pat, patient_user)
    page = pat.get(f"/consults/book?doctor_id={berlin_doctor.id}&day={monday.isoformat()}").get_data(as_text=True)
    assert "China Standard Time (Asia/Shanghai)" in page
    assert "3:00\u202fPM" in page and "3:30\u202fPM" in page and "9:00\u202fAM" not in page
    assert "Times are UTC" not in page
    start = "2027-03-29T07:00:00+00:00"
    confirm = pat.get(f"/consults/book?doctor_id={berlin_doctor.id}&start={start.replace('+', '%2B')}")
    text = confirm.get_data(as_text=True)
    assert "3:00\u202fPM–3:30\u202fPM" in text and "2027-03-29" in text
    assert '<dd id="confirm-zone">China Standard Time (Asia/Shanghai)</dd>' in text
    done = pat.post("/consults/book", data={"doctor_id": berlin_doctor.id, "start": start}, follow_redirects=True)
    assert "Booked: video consult on Mon, Mar 29, 2027, 3:00\u202fPM China Standard Time" in done.get_data(
        as_text=True)
    listing = pat.get("/consults").get_data(as_text=True)
    assert "Mon, Mar 29, 2027, 3:00\u202fPM China Standard Time" in listing
    # the doctor sees the same consult at 09:00 in Berlin on their day view
    _frozen(monkeypatch, datetime(2027, 3, 29, 6, tzinfo=UTC))
    login(doc := make_client(), berlin_doctor)
    today = doc.get("/consults/today").get_data(as_text=True)
    assert "9:00\u202fAM–9:30\u202fAM" in today and "Central European Summer Time (Europe/Berlin)" in today


def test_everyone_picks_their_zone_and_admins_set_a_facilitys(make_client, login, shanghai_patient, factories):
    pat, admin_browser = make_client(), make_client()
    user_id, clinic_id = shanghai_patient.user_id, shanghai_patient.facility_id
    login(pat, shanghai_patient.user)
    page = pat.get("/account/time-zone").get_data(as_text=True)
    assert "China Standard Time (Asia/Shanghai)" in page  # a patient follows the clinic that registered them
    assert '<option value="Europe/Berlin" label="Europe">' in page
    bad = pat.post("/account/time-zone", data={"timezone": "Mars/Olympus"})
    assert bad.status_code == 422 and "Choose a time zone from the list" in bad.get_data(as_text=True)
    ok = pat.post("/account/time-zone", data={"timezone": "Europe/Berlin"}, follow_redirects=True)
    assert "Times are now shown in Europe/Berlin." in ok.get_data(as_text=True)
    assert i18n.zone_of(db.session.get(User, user_id)) == "Europe/Berlin"
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "account.timezone",
                                                          AuditEvent.actor_id == user_id))
    assert event is not None
    pat.post("/account/time-zone", data={"timezone": ""})  # back to the clinic's
    assert i18n.zone_of(db.session.get(User, user_id)) == "Asia/Shanghai"

    refused = pat.post("/admin/facilities", data={"facility_id": clinic_id, "timezone": "UTC"})
    assert refused.status_code in (403, 404)
    login(admin_browser, factories.admin())
    assert admin_browser.post("/admin/facilities", data={"facility_id": clinic_id, "timezone": "Nowhere/City"}
                              ).status_code == 422
    done = admin_browser.post("/admin/facilities", data={"facility_id": clinic_id, "timezone": "Asia/Urumqi"},
                              follow_redirects=True)
    assert "now shows times in Asia/Urumqi" in done.get_data(as_text=True)
    assert i18n.zone_of(db.session.get(User, user_id)) == "Asia/Urumqi"


def test_times_are_formatted_in_the_readers_language_and_zone():
    moment = datetime(2027, 3, 29, 7, 0, tzinfo=UTC)
    assert i18n.format_when(moment, tz="Asia/Shanghai", locale="zh_Hans") == "2027年3月29日 15:00 中国标准时间"
    assert i18n.format_when(moment, "time", tz="Europe/Berlin", locale="en") == \
        "9:00\u202fAM Central European Summer Time"
    assert i18n.format_when(moment, tz="UTC", locale="en") == "Mar 29, 2027, 7:00\u202fAM UTC"
