"""Against the live server: the dicomweb-client library (STOW, QIDO, WADO) and the viewer in Chromium."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.http import signed_in
from tests.imaging.dicomgen import ct_slice, document

pytestmark = pytest.mark.browser



@pytest.fixture
def study(live_server: str, care_team: dict[str, Any]) -> dict[str, Any]:
    nurse, doctor, patient = care_team["nurse"], care_team["doctor"], care_team["patient"]
    study_uid, series_uid = generate_uid(), generate_uid()
    datasets = [pydicom.dcmread(io.BytesIO(ct_slice(patient_id=patient.mrn, study_uid=study_uid,
                                                    series_uid=series_uid, number=n, size=128)))
                for n in range(1, 6)]
    return {"nurse": nurse, "doctor": doctor, "patient": patient, "study": study_uid, "series": series_uid,
            "datasets": datasets}


def test_dicomweb_client_round_trip(live_server: str, study: dict[str, Any]) -> None:
    from dicomweb_client.api import DICOMwebClient

    nurse = DICOMwebClient(url=f"{live_server}/dicomweb", session=signed_in(live_server, study["nurse"]))
    response = nurse.store_instances(datasets=study["datasets"])
    assert len(response.ReferencedSOPSequence) == 5
    doctor = DICOMwebClient(url=f"{live_server}/dicomweb", session=signed_in(live_server, study["doctor"]))
    found = doctor.search_for_studies(search_filters={"PatientID": study["patient"].mrn})
    assert [f["0020000D"]["Value"][0] for f in found] == [study["study"]]
    series = doctor.search_for_series(study["study"])
    assert series[0]["0020000E"]["Value"][0] == study["series"]
    instances = doctor.search_for_instances(study["study"], study["series"])
    sop = instances[0]["00080018"]["Value"][0]
    ds = doctor.retrieve_instance(study["study"], study["series"], sop)
    assert ds.SOPInstanceUID == sop and ds.pixel_array.shape == (128, 128)
    frames = doctor.retrieve_instance_frames(study["study"], study["series"], sop, frame_numbers=[1],
                                             media_types=(("application/octet-stream", "*"),))
    assert len(frames[0]) == 128 * 128 * 2
    meta = doctor.retrieve_series_metadata(study["study"], study["series"])
    assert len(meta) == 5
    whole = doctor.retrieve_study(study["study"])
    assert len(whole) == 5
    rendered = doctor.retrieve_instance_rendered(study["study"], study["series"], sop, media_types=("image/jpeg",))
    assert rendered[:2] == b"\xff\xd8"


def test_doctor_views_the_study_from_the_chart(live_server: str, study: dict[str, Any], new_browser: Any,
                                               browser_login: Any, artifacts_dir: Any) -> None:
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=f"{live_server}/dicomweb",
                   session=signed_in(live_server, study["nurse"])).store_instances(datasets=study["datasets"])
    page = new_browser().new_page()
    browser_login(page, live_server, study["doctor"])
    page.goto(f"{live_server}/patients/{study['patient'].id}")
    page.click("#imaging-studies a:has-text('View')")
    page.wait_for_selector("#slice[src*='/rendered']")
    assert "CT CHEST" in page.inner_text("#study-tags")
    page.wait_for_function("() => document.getElementById('slice').naturalWidth === 128")
    assert page.inner_text("#slice-label") == "1/5"
    page.focus("#canvas")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.getElementById('slice-label').textContent === '3/5'")
    page.mouse.move(640, 450)
    page.mouse.wheel(0, 200)
    page.wait_for_function("() => document.getElementById('slice-label').textContent === '4/5'")
    page.click("button.wl-preset:has-text('Lung')")
    page.wait_for_function("() => document.getElementById('slice').src.includes('window=-600,1500')")
    assert "C -600 W 1500" in page.inner_text("#wl-label")
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 150, box["y"] + 130)
    page.mouse.up()
    assert "C -600 W 1500" not in page.inner_text("#wl-label")
    page.keyboard.press("+")
    assert "scale(1.2)" in page.get_attribute("#slice", "style")
    page.wait_for_function("() => document.getElementById('slice').naturalWidth > 0")
    page.screenshot(path=str(artifacts_dir / "imaging-viewer.png"))


def _touch(cdp: Any, kind: str, *points: tuple[float, float]) -> None:
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
        {"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]})


@pytest.mark.parametrize("size", [{"width": 390, "height": 844}, {"width": 1024, "height": 768}],
                         ids=["phone", "tablet"])
def test_viewer_on_a_touch_screen(size: dict[str, int], live_server: str, study: dict[str, Any],
                                  new_browser: Any, browser_login: Any, artifacts_dir: Any) -> None:
    """The image fills the width; the slider pages slices; one finger sets window/level; two fingers zoom."""
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=f"{live_server}/dicomweb",
                   session=signed_in(live_server, study["nurse"])).store_instances(datasets=study["datasets"])
    page = new_browser(viewport=size, has_touch=True, is_mobile=size["width"] < 760).new_page()
    browser_login(page, live_server, study["doctor"])
    page.goto(f"{live_server}/patients/{study['patient'].id}")
    page.click("#imaging-studies a:has-text('View')")
    page.wait_for_function("() => document.getElementById('slice').naturalWidth === 128")
    width = page.evaluate("() => document.documentElement.clientWidth")
    canvas = page.locator("#canvas").bounding_box()
    assert canvas["width"] >= 0.85 * width, f"the image area is {canvas['width']} of {width} px"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= width
    toolbar = page.locator(".toolbar").bounding_box()
    assert toolbar["height"] <= 60, "the presets take more than one compact row"
    assert page.locator(".touch-help").is_visible() and not page.locator(".viewer-help").is_visible()

    page.locator("#slice-slider").fill("3")
    page.wait_for_function("() => document.getElementById('slice-label').textContent === '3/5'")

    cdp = page.context.new_cdp_session(page)
    page.locator("#canvas").scroll_into_view_if_needed()
    canvas = page.locator("#canvas").bounding_box()
    cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
    _touch(cdp, "touchStart", (cx, cy))
    _touch(cdp, "touchMove", (cx + 40, cy + 30))
    _touch(cdp, "touchEnd")
    page.wait_for_function("() => document.getElementById('wl-label').textContent.startsWith('C ')")
    assert "scale(1)" in page.get_attribute("#slice", "style")  # one finger does not zoom

    _touch(cdp, "touchStart", (cx - 30, cy), (cx + 30, cy))
    _touch(cdp, "touchMove", (cx - 60, cy), (cx + 60, cy))
    _touch(cdp, "touchEnd")
    page.wait_for_function("() => document.getElementById('slice').style.transform.includes('scale(2)')")
    page.screenshot(path=str(artifacts_dir / f"imaging-viewer-touch-{size['width']}.png"))


def test_clinic_staff_upload_page_shows_progress_and_summary(live_server: str, study: dict[str, Any],
                                                             new_browser: Any, browser_login: Any,
                                                             tmp_path: Any) -> None:
    good = tmp_path / "slice.dcm"
    good.write_bytes(ct_slice(patient_id=study["patient"].mrn))
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8 not dicom")
    page = new_browser().new_page()
    browser_login(page, live_server, study["nurse"])
    page.goto(f"{live_server}/scans/upload")
    page.set_input_files("#files", [str(good), str(junk)])
    page.click("#scan-upload button[type=submit]")
    page.wait_for_selector("#upload-summary:not([hidden])")
    assert page.get_attribute("#upload-progress", "value") == "100"
    assert "1 stored" in page.inner_text("#upload-counts") and "1 rejected" in page.inner_text("#upload-counts")
    rows = page.inner_text("#upload-results tbody")
    assert "photo.jpg" in rows and "not a DICOM file" in rows and "matched" in rows


def test_viewer_shows_a_dose_report_as_text_and_a_pdf_beside_the_images(live_server: str, study: dict[str, Any],
                                                                        new_browser: Any, browser_login: Any,
                                                                        artifacts_dir: Any) -> None:
    from dicomweb_client.api import DICOMwebClient

    mrn, uid = study["patient"].mrn, study["study"]
    extra = [pydicom.dcmread(io.BytesIO(document(k, patient_id=mrn, study_uid=uid))) for k in ("dose-sr", "pdf")]
    DICOMwebClient(url=f"{live_server}/dicomweb", session=signed_in(live_server, study["nurse"])).store_instances(
        datasets=[*study["datasets"], *extra])
    page = new_browser().new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    browser_login(page, live_server, study["doctor"])
    page.goto(f"{live_server}/scans/studies/{uid}")
    page.wait_for_function("() => document.getElementById('slice').naturalWidth === 128")  # images still first
    page.click(".series-thumb:has-text('Dose Report')")
    frame = page.frame_locator("#document")
    assert "Mean CTDIvol: 12.5 mGy" in frame.locator("#sr-report").inner_text()
    assert page.is_hidden("#slice")
    page.screenshot(path=str(artifacts_dir / "imaging-viewer-dose-report.png"))
    page.click(".series-thumb:has-text('Referral letter')")
    page.wait_for_function("() => document.getElementById('document').src.endsWith('/document')"
                           " && document.getElementById('document').src.includes('"
                           f"{extra[1].SOPInstanceUID}')")
    page.click(".series-thumb:has-text('Axial')")
    page.wait_for_function("() => !document.getElementById('slice').hidden")
    assert page.is_hidden("#document") and errors == []
