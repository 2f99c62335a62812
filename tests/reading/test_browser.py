"""The whole findings loop in Chromium with real pages: the nurse uploads a CT and sends it to be read (urgent);
the doctor finds it on the worklist, opens the viewer, writes and signs the report with a critical flag; the nurse
acknowledges the critical result; the patient reads the summary; dicomweb-client retrieves the report object."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pydicom
import pytest
import requests
from flask import Flask
from pydicom.uid import generate_uid

from app import db
from app.auth.models import User
from tests.conftest import PASSWORD
from tests.imaging.dicomgen import ct_slice
from tests.reading.conftest import enrol, next_code

pytestmark = pytest.mark.browser
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _session(base: str, user: Any) -> requests.Session:
    s = requests.Session()
    token = s.get(f"{base}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    resp = s.post(f"{base}/sign-in", data={"email": user.email, "password": PASSWORD, "csrf_token": token},
                  allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    return s


def test_findings_loop_end_to_end(live_server: str, live_factories: Any, app: Flask, new_browser: Any,
                                  browser_login: Any, tmp_path: Any, artifacts_dir: Any) -> None:
    from dicomweb_client.api import DICOMwebClient

    tag = uuid.uuid4().hex[:6]
    nurse = live_factories.nurse(email=f"loop-nurse-{tag}@test.example", name="Nurse Nia Patel")
    doctor = live_factories.doctor(email=f"loop-doc-{tag}@test.example", name=f"Dr Okafor {tag}")
    patient = live_factories.patient(facility=nurse.facility, with_account=True, given_name="Maria",
                                     family_name=f"Gonzalez{tag}")
    patient_user = db.session.get(User, patient.user_id)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for n in range(1, 4):
        path = tmp_path / f"ct{n}.dcm"
        path.write_bytes(ct_slice(patient_id=patient.mrn, study_uid=study_uid, series_uid=series_uid, number=n,
                                  size=96))
        files.append(str(path))

    # The nurse uploads the CT and sends it to be read, urgent, from the upload summary.
    nurse_page = new_browser().new_page()
    browser_login(nurse_page, live_server, nurse)
    nurse_page.goto(f"{live_server}/scans/upload")
    nurse_page.set_input_files("#files", files)
    nurse_page.click("#scan-upload button[type=submit]")
    nurse_page.wait_for_selector("#upload-summary:not([hidden])")
    assert "3 stored" in nurse_page.inner_text("#upload-counts")
    nurse_page.click("#upload-results a:has-text('Send to be read') >> nth=0")
    nurse_page.fill("#question", "Fall from ladder, chest pain. Pneumothorax?")
    nurse_page.select_option("#priority", "urgent")
    nurse_page.click("#reading-request-form button[type=submit]")
    nurse_page.wait_for_selector("#request-head")
    assert "Urgent" in nurse_page.inner_text("#request-head")
    request_id = int(nurse_page.url.rstrip("/").rsplit("/", 1)[1])

    # The doctor finds it on the worklist, claims it and reads it in the viewer beside the editor.
    doctor_page = new_browser().new_page()
    browser_login(doctor_page, live_server, doctor)
    with app.app_context():
        totp = enrol(db.session.get(User, doctor.id))
        db.session.remove()
    doctor_page.click("nav.mainnav a:has-text('Reading worklist')")
    row = doctor_page.locator(f"#worklist tr[data-request='{request_id}']")
    assert "Urgent" in row.inner_text() and "min" in row.inner_text()
    row.locator("button:has-text('Claim and open')").click()
    doctor_page.wait_for_selector("#report-editor")
    doctor_page.wait_for_function("() => document.getElementById('slice').naturalWidth === 96")
    doctor_page.focus("#canvas")
    doctor_page.keyboard.press("ArrowDown")
    doctor_page.wait_for_function("() => document.getElementById('slice-label').textContent === '2/3'")
    doctor_page.click("#mark-key-image")
    assert "Image 1" in doctor_page.inner_text("#key-image-list")
    assert "Lungs and airways" in doctor_page.input_value("#findings")  # the CT template
    doctor_page.fill("#findings", "Large right pneumothorax with mediastinal shift.")
    doctor_page.fill("#impression", "1. Tension pneumothorax, right.")
    doctor_page.fill("#patient_summary", "Air has collected around your right lung. It needs treatment today.")
    doctor_page.check("#critical")
    doctor_page.fill("#code", next_code(totp))
    doctor_page.screenshot(path=str(artifacts_dir / "reading-editor.png"), full_page=True)
    doctor_page.click("#sign-report")
    doctor_page.wait_for_selector("#signed-report")
    assert "Report signed." in doctor_page.inner_text("main")
    assert "Critical result" in doctor_page.inner_text("#critical-state")
    doctor_page.screenshot(path=str(artifacts_dir / "reading-signed.png"))

    # The nurse acknowledges the critical result.
    nurse_page.goto(f"{live_server}/reading/requests")
    nurse_row = nurse_page.locator(f"#clinic-requests tr[data-request='{request_id}']")
    assert "Critical: acknowledge" in nurse_row.inner_text()
    nurse_row.locator("a:has-text('Open')").click()
    nurse_page.click("button:has-text('Acknowledge critical result')")
    nurse_page.wait_for_selector("#critical-state:has-text('acknowledged by Nurse Nia Patel')")

    # The patient reads the plain-language summary in My health.
    patient_page = new_browser().new_page()
    browser_login(patient_page, live_server, patient_user)
    patient_page.goto(f"{live_server}/me")
    results = patient_page.inner_text("#my-results")
    assert "Air has collected around your right lung" in results
    patient_page.screenshot(path=str(artifacts_dir / "reading-my-health.png"))
    patient_page.goto(f"{live_server}/me/access-log")
    assert doctor.full_name in patient_page.inner_text("main")

    # Any DICOMweb client finds the report object in the study and retrieves it.
    client = DICOMwebClient(url=f"{live_server}/dicomweb", session=_session(live_server, nurse))
    found = client.search_for_instances(study_instance_uid=study_uid)
    reports = [i for i in found if i["00080016"]["Value"][0] == ENCAPSULATED_PDF]
    assert len(reports) == 1
    sop_uid = reports[0]["00080018"]["Value"][0]
    series = reports[0]["0020000E"]["Value"][0]
    ds = client.retrieve_instance(study_instance_uid=study_uid, series_instance_uid=series, sop_instance_uid=sop_uid)
    assert isinstance(ds, pydicom.Dataset) and bytes(ds.EncapsulatedDocument).startswith(b"%PDF")
    assert pydicom.dcmread(io.BytesIO(_dcm(ds))).PatientID == patient.mrn


def _dcm(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
