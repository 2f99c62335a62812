"""Shared set-up for consult tests: a doctor with slots around now, a booked and checked-in appointment."""

from __future__ import annotations

import time as clock
from datetime import UTC, datetime, time, timedelta
from typing import Any

from app import db
from app.consults import service
from app.consults.models import Appointment, Availability


def open_all_week(doctor: Any, slot_minutes: int = 15) -> None:
    """Availability every day, all day (UTC), so tests do not depend on the clock."""
    for weekday in range(7):
        db.session.add(Availability(doctor_id=doctor.id, weekday=weekday, start_time=time(0, 0),
                                    end_time=time(23, 59), slot_minutes=slot_minutes))
    db.session.commit()


def next_slot_start(minutes: int = 15, *, skip: int = 0) -> datetime:
    """The start of a future slot, ``skip`` slots after the next one. Late in the (UTC) day the count starts
    at tomorrow's midnight, so a test's later slots never run past the day's last one."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = now - timedelta(minutes=now.minute % minutes) + timedelta(minutes=minutes)
    if first.date() != now.date() or first.time() > time(20, 0):
        first = datetime.combine(now.date() + timedelta(days=1), time(0, 0), tzinfo=UTC)
    return first + timedelta(minutes=minutes * skip)


def current_slot(doctor: Any, patient: Any, *, by: Any) -> Appointment:
    """Book the slot that started up to 15 minutes ago (check-in open) directly, as if booked earlier."""
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 15)
    appt = Appointment(doctor_id=doctor.id, patient_id=patient.id, booked_by_id=by.id, start_at=start,
                       end_at=start + timedelta(minutes=15 if (start + timedelta(minutes=15) - now)
                                                > timedelta(minutes=3) else 30),
                       slot_key=service.slot_key(doctor.id, start))
    db.session.add(appt)
    db.session.commit()
    return appt


def admitted_consult(factories: Any, app: Any, *, admit: bool = True) -> tuple[Any, Any, Appointment]:
    """A doctor and a patient (with a login) in a checked-in (and by default admitted) consult."""
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    appt = current_slot(doctor, patient, by=patient.user)
    with app.app_context():
        service.check_in(appt, by=patient.user)
        if admit:
            service.admit(appt, by=doctor)
        db.session.commit()
    return doctor, patient, appt


def page_until(page: Any, predicate: Any, timeout: float = 20.0) -> Any:
    """Poll from Python until ``predicate()`` is truthy (the consult page's CSP, rightly, forbids the eval
    that Playwright's wait_for_function needs)."""
    deadline = clock.monotonic() + timeout
    while clock.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(200)
    raise AssertionError("condition not met in time")


# ---- a consult in two browsers: network emulation, what is decoded, what the live region says

GOOD = {"urlPattern": "", "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1, "packetLoss": 0}
POOR = {**GOOD, "latency": 100, "downloadThroughput": 30_000, "uploadThroughput": 30_000, "packetLoss": 25}
OFFLINE = {**GOOD, "offline": True, "packetLoss": 100}

# Every text the call's live region says, in order (installed through DevTools: the page's CSP forbids eval).
RECORD_ANNOUNCEMENTS = """() => {
  window.announced = [];
  const region = document.getElementById("call-announcer");
  new MutationObserver(() => window.announced.push(region.textContent))
    .observe(region, { childList: true, characterData: true, subtree: true });
}"""


def emulate(network: Any, conditions: dict[str, Any]) -> None:
    """Chromium's DevTools network emulation (WebRTC too: packet loss, latency, bandwidth, offline)."""
    network.send("Network.emulateNetworkConditionsByRule", {"matchedNetworkConditions": [conditions]})


def frames(page: Any) -> int:
    """Video frames decoded from the other side so far."""
    return int(page.get_attribute("#quality", "data-frames-decoded") or 0)


def audio_packets(page: Any) -> int:
    return int(page.get_attribute("#consult", "data-audio-packets") or 0)


def playing(page: Any) -> int:
    """The remote video is decoding frames, and the count keeps growing (generous: CI machines are shared)."""
    first = page_until(page, lambda: frames(page) > 5 and frames(page), timeout=40)
    return page_until(page, lambda: frames(page) > first + 10 and frames(page), timeout=20)


def announced(page: Any) -> list[str]:
    """What the call's live region has said since the page joined."""
    return page.evaluate("() => window.announced")
