"""Objects without pixels (dose reports, key images, presentation states, RT, ECG, PDF) on every ingest path,
in QIDO and WADO-RS, and in the built-in viewer."""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.imaging.dicomgen import bundled_copy, ct_slice, document, stow_body

KINDS = ("dose-sr", "kos", "gsps", "pdf")
BUNDLED = ("test-SR.dcm", "waveform_ecg.dcm", "rtplan.dcm", "rtstruct.dcm")


def _objects(patient_id: str, study_uid: str) -> list[bytes]:
    return ([document(k, patient_id=patient_id, study_uid=study_uid) for k in KINDS]
            + [bundled_copy(n, patient_id=patient_id, study_uid=study_uid) for n in BUNDLED])


def _sop(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def stored(client: Any, factories: Any, login: Any) -> dict[str, Any]:
    """A CT slice and the eight non-image objects of one study, sent by STOW-RS."""
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    study = generate_uid()
    files = [ct_slice(patient_id=patient.mrn, study_uid=study), *_objects(patient.mrn, study)]
    body, ctype = stow_body(files)
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert len(resp.get_json()["00081199"]["Value"]) == len(files)
    return {"study": study, "files": files, "patient": patient, "nurse": nurse}


def test_stow_stores_non_image_objects_and_qido_wado_serve_them(client: Any, stored: dict[str, Any]) -> None:
    study = stored["study"]
    resp = client.get(f"/dicomweb/studies/{study}/instances")
    assert resp.status_code == 200
    listed = {i["00080018"]["Value"][0]: i["00080016"]["Value"][0] for i in json.loads(resp.data)}
    assert set(listed) == {_sop(f) for f in stored["files"]}
    assert "1.2.840.10008.5.1.4.1.1.88.67" in listed.values()  # X-Ray Radiation Dose SR
    assert "1.2.840.10008.5.1.4.1.1.104.1" in listed.values()  # Encapsulated PDF
    series = json.loads(client.get(f"/dicomweb/studies/{study}/series").data)
    assert {s["00080060"]["Value"][0] for s in series} >= {"CT", "SR", "KO", "PR", "DOC", "ECG", "RTPLAN"}
    for data in stored["files"][1:]:
        resp = client.get(f"/dicomweb/studies/{study}/instances/{_sop(data)}",
                          headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert resp.status_code == 200
        assert data in resp.data  # the object byte for byte


def test_upload_stores_non_image_objects(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    login(client, nurse)
    study = generate_uid()
    files = _objects("DOCS-UPLOAD", study)
    resp = client.post("/scans/upload", data={"files": [(io.BytesIO(f), f"{n}.dcm") for n, f in enumerate(files)]},
                       content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert [r["status"] for r in resp.get_json()["results"]] == ["stored"] * len(files), resp.get_json()


def test_image_class_without_pixel_data_is_rejected(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.nurse())
    ds = pydicom.dcmread(io.BytesIO(ct_slice()))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    resp = client.post("/scans/upload", data={"files": [(io.BytesIO(buf.getvalue()), "ct.dcm")]},
                       content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert resp.get_json()["results"][0]["status"] == "rejected"
    assert resp.get_json()["results"][0]["reason"] == "an image object without pixel data"


def test_viewer_lists_documents_and_shows_pdf_and_sr(client: Any, login: Any, stored: dict[str, Any]) -> None:
    login(client, stored["nurse"])
    study = stored["study"]
    page = client.get(f"/scans/studies/{study}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Dose Report" in html and "Referral letter" in html
    by_kind = dict(zip(KINDS, stored["files"][1:5], strict=True))
    pdf = client.get(f"/scans/studies/{study}/instances/{_sop(by_kind['pdf'])}/document")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.headers["Content-Disposition"].startswith("inline")
    assert pdf.data.startswith(b"%PDF-1.4")
    sr = client.get(f"/scans/studies/{study}/instances/{_sop(by_kind['dose-sr'])}/document")
    assert sr.status_code == 200 and sr.mimetype == "text/html"
    text = sr.get_data(as_text=True)
    assert "X-Ray Radiation Dose Report" in text and "Mean CTDIvol" in text and "12.5 mGy" in text
    assert "CTDIvol 12.5 mGy" in text
    gsps = client.get(f"/scans/studies/{study}/instances/{_sop(by_kind['gsps'])}/document")
    assert gsps.status_code == 200 and "cannot be shown here" in gsps.get_data(as_text=True)
    # a rendered image of an object without pixels is a clear 404, not a server error
    series = json.loads(client.get(f"/dicomweb/studies/{study}/instances").data)
    pdf_series = next(i["0020000E"]["Value"][0] for i in series if i["00080018"]["Value"][0] == _sop(by_kind["pdf"]))
    rendered = client.get(f"/dicomweb/studies/{study}/series/{pdf_series}/instances/{_sop(by_kind['pdf'])}/rendered")
    assert rendered.status_code == 404


def test_document_of_a_study_not_visible_is_not_found(client: Any, factories: Any, login: Any,
                                                      stored: dict[str, Any]) -> None:
    client.post("/sign-out")
    login(client, factories.nurse(facility=factories.facility()))
    sop = _sop(stored["files"][1])
    assert client.get(f"/scans/studies/{stored['study']}/instances/{sop}/document").status_code == 404
