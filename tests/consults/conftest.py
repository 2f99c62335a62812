"""The media service as a real subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from app import db
from app.consults import service
from app.consults.models import Appointment
from tests.consults.helpers import GOOD, RECORD_ANNOUNCEMENTS, current_slot, emulate, playing

MEDIA_SECRET = "media-test-secret"  # noqa: S105


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _stop_wake_listener(test_config: Any) -> Iterator[None]:
    """Event streams start a PostgreSQL LISTEN thread; end it before the test database is dropped."""
    yield
    from app.consults import wake

    wake.stop()


@pytest.fixture(scope="session")
def media_service(test_config: Any) -> Iterator[str]:
    """Shares the test app's object store and secret key, so recordings it stores are the app's to play."""
    port = _free_port()
    env = dict(os.environ, HOSPITAL_MEDIA_SECRET=MEDIA_SECRET, PYTHONUNBUFFERED="1",
               SECRET_KEY=test_config.SECRET_KEY, HOSPITAL_OBJECT_STORE="fs",
               HOSPITAL_INSTANCE_PATH=str(test_config.INSTANCE_PATH),
               HOSPITAL_STORAGE_PATH=str(test_config.STORAGE_PATH))
    env.pop("HOSPITAL_RECORDING_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "media", "--port", str(port), "--allow-loopback",
                             "--echo-seconds", "60"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("media service did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def media_config(app: Any, media_service: str) -> Iterator[str]:
    """Point the app at the test media service for one test."""
    old = app.config["MEDIA_URL"], app.config["MEDIA_SECRET"]
    app.config["MEDIA_URL"], app.config["MEDIA_SECRET"] = media_service, MEDIA_SECRET
    yield media_service
    app.config["MEDIA_URL"], app.config["MEDIA_SECRET"] = old


@pytest.fixture
def consult_pages(live_server: str, live_factories: Any, new_browser: Any, browser_login: Any, app: Any) -> Any:
    """Open an admitted consult in two browsers, video flowing both ways: ``open(patient={...})`` passes Playwright
    options for the patient's browser (e.g. a phone). Returns (doctor page, patient page, the patient's DevTools
    session). Chromium emulates the network for WebRTC only on connections made while an emulation rule exists,
    so the patient's browser gets a neutral rule before joining; changing it later acts on the running call."""
    def open_consult(patient: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
        doctor = live_factories.doctor(name="Dr Thin Line")
        record = live_factories.patient(with_account=True, doctor=doctor, given_name="Liang")
        with app.app_context():
            appt = current_slot(doctor, record, by=record.user)
            service.check_in(appt, by=record.user)
            service.admit(db.session.get(Appointment, appt.id), by=doctor)
            db.session.commit()
            appt_id = appt.id
        doc = new_browser().new_page()
        pat = new_browser(**(patient or {})).new_page()
        network = pat.context.new_cdp_session(pat)
        network.send("Network.enable")
        emulate(network, GOOD)
        for page, user in ((doc, doctor), (pat, record.user)):
            page.on("dialog", lambda d: d.accept())
            browser_login(page, live_server, user)
            page.goto(f"{live_server}/consults/{appt_id}/room")
            page.evaluate(RECORD_ANNOUNCEMENTS)
        assert playing(doc) and playing(pat)
        return doc, pat, network

    return open_consult
