"""Relay mode in Chromium (fake cameras, the real media process): a three-party consult in a tile grid,
removal of a participant, the automatic fallback when peer to peer cannot connect, and a recording start."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.consults import service
from app.consults.models import ConsultSession
from tests.consults.helpers import current_slot, page_until

pytestmark = pytest.mark.browser

#: Test-only: peer-to-peer connections (the relay's use max-bundle) never learn the other side's candidates,
#: so they cannot connect, as behind a network that blocks them. Relay answers carry their candidates in the SDP.
BLOCK_P2P = """
(() => {
  const p2p = (pc) => pc.getConfiguration().bundlePolicy !== "max-bundle";
  const add = RTCPeerConnection.prototype.addIceCandidate;
  RTCPeerConnection.prototype.addIceCandidate = function (...args) {
    return p2p(this) ? Promise.resolve() : add.apply(this, args);
  };
  const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (desc) {
    if (p2p(this) && desc && desc.sdp) {
      const lines = desc.sdp.split("\\r\\n").filter((l) => !l.startsWith("a=candidate"));
      desc = { type: desc.type, sdp: lines.join("\\r\\n") };
    }
    return setRemote.call(this, desc);
  };
})();
"""


def _until(page: Any, predicate: Any, timeout: float = 30.0) -> Any:
    return page_until(page, predicate, timeout)


def _tile_frames(page: Any) -> dict[str, int]:
    """framesDecoded of every remote tile, by its label."""
    tiles = page.locator("#tiles .tile.remote")
    return {tiles.nth(i).locator("figcaption").inner_text():
            int(tiles.nth(i).locator("video").get_attribute("data-frames-decoded") or 0)
            for i in range(tiles.count())}


def _decoding(page: Any, labels: set[str], timeout: float = 40.0) -> dict[str, int]:
    """Every remote tile named in ``labels`` is shown and decodes video, and keeps decoding."""
    first = _until(page, lambda: (f := _tile_frames(page)) and set(f) == labels
                   and all(n > 5 for n in f.values()) and f, timeout)
    return _until(page, lambda: (f := _tile_frames(page)) and set(f) == labels
                  and all(f[k] > first[k] + 10 for k in labels) and f, 20)


def _mode(page: Any) -> str:
    return page.inner_text("#media-mode")


def _consult(live_factories: Any, app: Any, tag: str) -> tuple[Any, Any, int]:
    doctor = live_factories.doctor(name=f"Dr Relay {tag}")
    patient = live_factories.patient(with_account=True, doctor=doctor, given_name=f"Rita{tag}")
    appt = current_slot(doctor, patient, by=patient.user)
    service.check_in(appt, by=patient.user)
    service.admit(appt, by=doctor)
    db.session.commit()
    return doctor, patient, appt.id


def _enter(page: Any, live_server: str, user: Any, appt_id: int, browser_login: Any, where: str = "room") -> None:
    page.on("dialog", lambda d: d.accept())
    browser_login(page, live_server, user)
    page.goto(f"{live_server}/consults/{appt_id}/{where}")


def test_three_party_relayed_consult_and_removal(live_server, live_factories, new_browser, browser_login,
                                                artifacts_dir, media_config, app):
    doctor, patient, appt_id = _consult(live_factories, app, "Grid")
    doctor_name, patient_name = doctor.full_name, patient.user.full_name
    pat, doc, guest = new_browser().new_page(), new_browser().new_page(), new_browser().new_page()
    _enter(pat, live_server, patient.user, appt_id, browser_login, "waiting")  # the consult shown in place
    _enter(doc, live_server, doctor, appt_id, browser_login)
    assert _until(doc, lambda: int(doc.get_attribute("#quality", "data-frames-decoded") or 0) > 5)
    assert _mode(doc) == "Direct (peer to peer)"  # two people: peer to peer

    doc.fill("#invite-name", "Ines")
    doc.click("#invite-form button[type=submit]")
    doc.wait_for_selector("#invite-link:has-text('works once')")
    link = re.search(r"https?://\S+", doc.inner_text("#invite-link")).group(0)
    guest.on("dialog", lambda d: d.accept())
    guest.goto(link)
    guest.click("#invite-join")
    guest.wait_for_url(f"**/consults/{appt_id}/room")

    # a third person: every page moves to the relay and shows a tile per participant
    frames = {page: _decoding(page, labels) for page, labels in (
        (doc, {patient_name, "Ines (interpreter)"}),
        (pat, {doctor_name, "Ines (interpreter)"}),
        (guest, {doctor_name, "Patient"}))}  # a guest's page carries no patient identity
    for page in (doc, pat, guest):
        assert page.locator("#tiles .tile").count() == 3  # two others + the small local preview
        assert "Relayed through the hospital media server" in _mode(page)
        assert "more than two people" in _mode(page)
        assert int(page.get_attribute("#quality", "data-frames-decoded") or 0) >= sum(frames[page].values())
    assert "Rita" not in guest.inner_text("body")
    for page in (doc, pat, guest):  # every remote tile is playing (a picture, not just decoded frames)
        _until(page, lambda p=page: all(v.get_attribute("data-first-frame-at")
                                        for v in p.locator("#tiles .tile.remote video").all()))
    doc.locator(".consult-main").screenshot(path=str(artifacts_dir / "consult-relay-grid.png"))

    # the doctor removes the interpreter: their page says so, the others' grids drop the tile
    item = doc.locator("#participant-list li", has_text="Ines (interpreter)")
    item.locator("button.remove-participant").click()
    guest.wait_for_selector("#remote-status:has-text('You were removed from the consult by the doctor.')",
                            timeout=15_000)
    for page in (doc, pat):
        _until(page, lambda p=page: p.locator("#tiles .tile.remote").count() == 1, 15)
        assert "Ines (interpreter)" not in page.inner_text("#tiles")
    before = _tile_frames(pat)[doctor_name]
    _until(pat, lambda: _tile_frames(pat).get(doctor_name, 0) > before + 10, 15)  # the rest carry on

    # a reloaded page comes back into the relayed consult with a new connection
    pat.reload()
    _decoding(pat, {doctor_name})
    _decoding(doc, {patient_name})


def test_blocked_peer_to_peer_falls_back_to_the_relay_on_both_pages(live_server, live_factories, new_browser,
                                                                   browser_login, media_config, app):
    doctor, patient, appt_id = _consult(live_factories, app, "Fallback")
    doctor_name, patient_name = doctor.full_name, patient.user.full_name
    pages = []
    for _ in range(2):
        context = new_browser()
        context.add_init_script(script=BLOCK_P2P)
        pages.append(context.new_page())
    pat, doc = pages
    _enter(pat, live_server, patient.user, appt_id, browser_login)
    _enter(doc, live_server, doctor, appt_id, browser_login)
    assert _mode(doc) == "Direct (peer to peer)"

    # nobody clicks anything: after the timeout both pages are relayed and see each other
    _decoding(doc, {patient_name})
    _decoding(pat, {doctor_name})
    for page in (doc, pat):
        assert _mode(page) == "Relayed through the hospital media server (a direct connection could not be made)"
        assert page.locator("#tiles .tile").count() == 2
        assert not page.is_visible("#remote-video")
    db.session.remove()
    switches = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "consult.relay_switch",
                                                              AuditEvent.outcome == "success")).all()
    assert any(e.detail["switched"] and e.actor_id in (doctor.id, patient.user_id) for e in switches)


def test_starting_a_recording_moves_both_pages_to_the_relay(live_server, live_factories, new_browser,
                                                             browser_login, media_config, app):
    doctor, patient, appt_id = _consult(live_factories, app, "Record")
    doctor_name, patient_name = doctor.full_name, patient.user.full_name
    pat, doc = new_browser().new_page(), new_browser().new_page()
    _enter(pat, live_server, patient.user, appt_id, browser_login)
    pat.click("#rec-give")
    pat.wait_for_selector("#rec-consent:has-text('You agreed to this consult being recorded')")
    _enter(doc, live_server, doctor, appt_id, browser_login)
    assert _until(doc, lambda: int(doc.get_attribute("#quality", "data-frames-decoded") or 0) > 5)
    assert _mode(doc) == _mode(pat) == "Direct (peer to peer)"

    doc.click("#rec-start")
    _decoding(doc, {patient_name})
    _decoding(pat, {doctor_name})
    for page in (doc, pat):
        assert _mode(page) == "Relayed through the hospital media server (the consult is being recorded)"
        page.wait_for_selector("#rec-indicator", state="visible", timeout=30_000)
    doc.click("#rec-stop")
    doc.wait_for_selector("#rec-message:has-text('Recording saved.')", timeout=30_000)
    for page in (doc, pat):  # the consult stays relayed; the label no longer speaks of a recording
        _until(page, lambda p=page: _mode(p) == "Relayed through the hospital media server", 15)


def test_a_patient_who_leaves_does_not_push_the_consult_to_the_relay(live_server, live_factories, new_browser,
                                                                     browser_login, media_config, app, monkeypatch):
    monkeypatch.setitem(app.config, "CONSULT_P2P_TIMEOUT_SECONDS", 2)
    doctor, patient, appt_id = _consult(live_factories, app, "Leaver")
    pat, doc = new_browser().new_page(), new_browser().new_page()
    _enter(pat, live_server, patient.user, appt_id, browser_login)
    _enter(doc, live_server, doctor, appt_id, browser_login)
    assert _until(doc, lambda: int(doc.get_attribute("#quality", "data-frames-decoded") or 0) > 5)
    pat.click("#leave")
    doc.wait_for_selector("#remote-status:has-text('The other person left')")
    # the doctor's page notices the dead connection and keeps offering to nobody: no answer, no fallback
    doc.wait_for_selector("#remote-status:has-text('reconnecting')", timeout=40_000)
    doc.wait_for_timeout(8_000)
    assert _mode(doc) == "Direct (peer to peer)"
    db.session.remove()
    mode = db.session.scalar(sa.select(ConsultSession.media_mode).where(ConsultSession.appointment_id == appt_id))
    assert mode == "p2p"
