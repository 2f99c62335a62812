"""Known DICOM peers: managed by admins in the browser, used by a running listener without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from app.imaging.dimse import peers
from app.imaging.models import DicomPeer
from app.imaging.scp import Listener
from tests.imaging.dicomgen import ct_slice
from tests.imaging.dimse import c_store, free_port, run

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is installed by .ci/run")


def _echo(port: int, calling: str, called: str = "TOWNHEALTH") -> bool:
    return run("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)).returncode == 0


def _peer_form(clinic_id: int, **fields: Any) -> dict[str, Any]:
    return {"ae_title": "NEWSCANNER", "facility_id": str(clinic_id), "host": "", "port": "", "description": "",
            "can_store": "y", "active": "y"} | fields


def _save(admin: Any, peer: DicomPeer | None, clinic_id: int, **fields: Any) -> DicomPeer:
    """What the admin page does on submit (the page itself is tested below), committed for the listener."""
    values = {"ae_title": "NEWSCANNER", "host": "", "port": None, "facility_id": clinic_id, "description": "",
              "permissions": {"store"}, "active": True} | fields
    saved = peers.save_peer(peer, by=admin, **values)
    db.session.commit()
    return saved


def test_peer_changes_reach_the_running_listener(listener: Any, app: Any, live_factories: Any,
                                                 tmp_path: Path) -> None:
    port, clinic = listener
    admin = live_factories.admin(email=f"peer-admin-{port}@test.example")
    assert not _echo(port, "NEWSCANNER")
    peer = _save(admin, None, clinic.id, description="CT room 2")
    try:
        assert _echo(port, "NEWSCANNER")  # no restart
        scan = tmp_path / "ct.dcm"
        scan.write_bytes(ct_slice())
        stored = run("storescu", "-aet", "NEWSCANNER", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), str(scan))
        assert stored.returncode == 0 and "E:" not in stored.stderr, stored.stderr
        # store taken away: the next C-STORE is refused with a reason
        _save(admin, peer, clinic.id, permissions={"query"})
        status = c_store(port, ct_slice(), calling="NEWSCANNER")
        assert status.Status == 0x0124 and status.ErrorComment == "AE title NEWSCANNER may not send scans here"
        # disabled: the association itself is refused
        _save(admin, peer, clinic.id, active=False)
        assert not _echo(port, "NEWSCANNER")
        # the called AE title is checked too
        assert not _echo(port, "CLINICCT", called="SOMEONEELSE")
        db.session.remove()
        events = list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "dicom.association",
                                                                     AuditEvent.resource_id == "NEWSCANNER")
                                         .order_by(AuditEvent.id)))
        assert [e.outcome.value for e in events] == ["denied", "success", "success", "success", "denied"]
        assert all(e.actor_name == "DICOM AE NEWSCANNER" and e.detail["address"] == "127.0.0.1" for e in events)
        wrong_called = db.session.scalars(sa.select(AuditEvent).where(
            AuditEvent.action == "dicom.association", AuditEvent.resource_id == "CLINICCT")
            .order_by(AuditEvent.id.desc())).first()
        assert wrong_called.outcome.value == "denied" and wrong_called.detail["called_ae"] == "SOMEONEELSE"
        assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "dicom.peer.update",
                                                             AuditEvent.actor_id == admin.id)) is not None
    finally:
        db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title == "NEWSCANNER"))
        db.session.commit()


def test_peer_form_explains_bad_input_and_only_admins_see_it(client: Any, factories: Any, login: Any) -> None:
    clinic = factories.clinic
    login(client, factories.nurse())
    assert client.get("/admin/dicom-peers").status_code == 403
    client.post("/sign-out")
    login(client, factories.admin())
    resp = client.post("/admin/dicom-peers", data=_peer_form(clinic.id, ae_title="A\\B", host="scanner.local"))
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "no backslash" in html and "Give both host and port" in html
    ok = client.post("/admin/dicom-peers", data=_peer_form(clinic.id, ae_title="DUP", host="10.0.0.5", port="104"))
    assert ok.status_code == 302
    again = client.post("/admin/dicom-peers", data=_peer_form(clinic.id, ae_title="DUP"))
    assert again.status_code == 422 and "Another peer already uses this AE title" in again.get_data(as_text=True)
    listed = client.get("/admin/dicom-peers").get_data(as_text=True)
    assert "10.0.0.5:104" in listed and "store" in listed


def test_allowed_aets_setting_still_lets_a_scanner_in(app: Any, live_factories: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """DICOM_ALLOWED_AETS adds missing peers at start (with every permission) and leaves existing ones alone."""
    clinic = live_factories.facility(name="Legacy clinic")
    db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title.in_(["LEGACYCT", "KEPTOFF"])))
    db.session.add(DicomPeer(ae_title="KEPTOFF", facility_id=clinic.id, active=False))
    db.session.commit()
    monkeypatch.setitem(app.config, "DICOM_ALLOWED_AETS", f"LEGACYCT={clinic.code}@127.0.0.1:11199,"
                                                          f"KEPTOFF={clinic.code}")
    port = free_port()
    server = Listener(app, peer_cache_seconds=0).serve("127.0.0.1", port, block=False)
    try:
        assert _echo(port, "LEGACYCT") and not _echo(port, "KEPTOFF")
        legacy = db.session.scalar(sa.select(DicomPeer).where(DicomPeer.ae_title == "LEGACYCT"))
        assert (legacy.facility_id, legacy.host, legacy.port) == (clinic.id, "127.0.0.1", 11199)
        assert legacy.can_store and legacy.can_query and legacy.can_retrieve and legacy.can_worklist
    finally:
        server.shutdown()


@pytest.mark.browser
def test_admin_adds_a_peer_in_the_browser_and_the_scanner_gets_in(listener: Any, live_server: str,
                                                                   live_factories: Any, new_browser: Any,
                                                                   browser_login: Any, artifacts_dir: Any) -> None:
    port, clinic = listener
    admin = live_factories.admin(email=f"peer-browser-{port}@test.example")
    db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title == "ROOM3CT"))
    db.session.commit()
    page = new_browser().new_page()
    browser_login(page, live_server, admin)
    page.click("nav >> text=DICOM peers")
    page.fill("#ae_title", "ROOM3CT")
    page.select_option("#facility_id", str(clinic.id))
    page.fill("#description", "CT room 3")
    page.check("#can_query")
    page.click("#peer-form button[type=submit]")
    row = page.locator("#dicom-peers tr[data-peer='ROOM3CT']")
    assert "store, query" in row.inner_text() and clinic.name in row.inner_text()
    page.screenshot(path=str(artifacts_dir / "imaging-dicom-peers.png"))
    try:
        assert _echo(port, "ROOM3CT")
        row.locator("a:has-text('Edit')").click()
        page.uncheck("#active")
        page.click("#peer-form button[type=submit]")
        assert "Disabled" in page.locator("#dicom-peers tr[data-peer='ROOM3CT']").inner_text()
        assert not _echo(port, "ROOM3CT")
    finally:
        db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title == "ROOM3CT"))
        db.session.commit()
