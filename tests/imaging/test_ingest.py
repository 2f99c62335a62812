"""Ingest through the upload page and STOW-RS: stored, duplicates, conflicts, bad input, patient matching."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.audit.models import AuditEvent
from app.imaging.models import Instance, Study
from app.imaging.service import object_store
from tests.imaging.dicomgen import ct_slice, stow_body


def _upload(client: Any, files: list[tuple[bytes, str]]) -> dict[str, Any]:
    data = {"files": [(io.BytesIO(b), name) for b, name in files]}
    resp = client.post("/scans/upload", data=data, content_type="multipart/form-data",
                       headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:400]
    return resp.get_json()


def _stored_keys(app: Any) -> set[str]:
    with app.app_context():
        return set(object_store().list("dicom/"))


@pytest.mark.smoke
def test_upload_links_by_mrn_and_reports_each_file(client: Any, factories: Any, login: Any, app: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    study = generate_uid()
    good = [ct_slice(patient_id=patient.mrn, study_uid=study, number=n) for n in (1, 2)]
    body = _upload(client, [(good[0], "a.dcm"), (good[1], "b.dcm"), (b"hello, not dicom", "notes.txt"),
                            (good[0], "a-again.dcm")])
    statuses = [(r["file"], r["status"], r["reason"]) for r in body["results"]]
    assert statuses == [("a.dcm", "stored", ""), ("b.dcm", "stored", ""),
                        ("notes.txt", "rejected", "not a DICOM file"), ("a-again.dcm", "duplicate", "already stored")]
    assert body["results"][0]["matched"] is True
    row = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study))
    assert row.patient_id == patient.id and row.modalities == "CT"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Instance).join(Instance.series)
                             .where(Instance.series.has(study_id=row.id))) == 2
    assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "imaging.instance.store",
                                                         AuditEvent.patient_id == patient.id)) is not None
    chart = client.get(f"/patients/{patient.id}").get_data(as_text=True)
    assert "CT CHEST" in chart and f"/scans/studies/{study}" in chart


def test_conflicting_bytes_keep_the_original(client: Any, factories: Any, login: Any, app: Any) -> None:
    login(client, factories.nurse())
    sop = generate_uid()
    first = ct_slice(sop_uid=sop, seed=1)
    second = ct_slice(sop_uid=sop, seed=2)
    assert _upload(client, [(first, "one.dcm")])["results"][0]["status"] == "stored"
    result = _upload(client, [(second, "two.dcm")])["results"][0]
    assert result["status"] == "conflict" and "kept the original" in result["reason"]
    inst = db.session.scalar(sa.select(Instance).where(Instance.sop_instance_uid == sop))
    with app.app_context():
        assert object_store().read(inst.object_key) == first
    # the same again by STOW-RS, once in a request and twice in one request: no object left behind
    before = _stored_keys(app)
    body, ctype = stow_body([second])
    assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 409
    body, ctype = stow_body([first, first])
    out = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert out.status_code == 200 and len(out.get_json()["00081199"]["Value"]) == 2
    assert _stored_keys(app) == before


def test_bad_input_rejected_with_reasons_rest_goes_through(client: Any, factories: Any, login: Any,
                                                           app: Any) -> None:
    login(client, factories.nurse())
    good = ct_slice()
    truncated = good[: len(good) - 1000]
    no_pixels = pydicom.dcmread(io.BytesIO(good))
    del no_pixels.PixelData  # a CT image without its pixels (reports, RT and PDF objects are fine without)
    buf = io.BytesIO()
    no_pixels.save_as(buf)
    unknown_ts = good.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.3.4.5.6.7.8.9\x00\x00", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missing_uid = ct_slice(study_uid="1.2..3")
    before = _stored_keys(app)
    body = _upload(client, [(truncated, "cut.dcm"), (buf.getvalue(), "sr.dcm"), (unknown_ts, "ts.dcm"),
                            (missing_uid, "uid.dcm"), (good, "ok.dcm")])
    reasons = {r["file"]: (r["status"], r["reason"]) for r in body["results"]}
    assert reasons["cut.dcm"] == ("rejected", "truncated pixel data")
    assert reasons["sr.dcm"] == ("rejected", "an image object without pixel data")
    assert reasons["ts.dcm"][1] in ("unsupported transfer syntax", "truncated or corrupt DICOM file")
    assert reasons["uid.dcm"] == ("rejected", "StudyInstanceUID is not a valid UID")
    assert reasons["ok.dcm"] == ("stored", "")
    assert len(_stored_keys(app) - before) == 1  # nothing half-stored


def _zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_with_dicomdir_traversal_and_bomb(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.nurse())
    study = generate_uid()
    archive = _zip({
        "STUDY/DICOMDIR": b"index",
        "STUDY/IM1": ct_slice(study_uid=study, number=1),
        "STUDY/IM2": ct_slice(study_uid=study, number=2),
        "../../etc/evil.dcm": ct_slice(),
        "bomb.bin": b"\0" * 50_000_000,
    })
    assert len(archive) < 200_000
    body = _upload(client, [(archive, "study.zip")])
    got = {r["file"]: (r["status"], r["reason"]) for r in body["results"]}
    assert got["study.zip/STUDY/IM1"] == ("stored", "")
    assert got["study.zip/STUDY/IM2"] == ("stored", "")
    assert got["study.zip/../../etc/evil.dcm"] == ("rejected", "unsafe path in zip entry")
    assert got["study.zip/bomb.bin"][0] == "rejected" and "zip bomb" in got["study.zip/bomb.bin"][1]
    assert not any("DICOMDIR" in f for f in got)


def test_upload_over_the_limit_is_refused(client: Any, factories: Any, login: Any, app: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    login(client, factories.nurse())
    monkeypatch.setitem(app.config, "IMAGING_MAX_UPLOAD_BYTES", 1000)
    resp = client.post("/scans/upload", data={"files": [(io.BytesIO(ct_slice()), "a.dcm")]},
                       content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert resp.status_code == 413
    assert resp.mimetype == "application/problem+json"


def test_doctor_cannot_upload(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.doctor())
    resp = client.post("/scans/upload", data={"files": [(io.BytesIO(ct_slice()), "a.dcm")]},
                       content_type="multipart/form-data")
    assert resp.status_code == 403


def test_stow_response_lists_stored_and_failed(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.nurse())
    good = ct_slice()
    body, ctype = stow_body([good, b"garbage" * 100])
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert resp.status_code == 202
    assert resp.mimetype == "application/dicom+json"
    out = json.loads(resp.data)
    ref = out["00081199"]["Value"]
    assert len(ref) == 1 and ref[0]["00081190"]["Value"][0].startswith("http")
    failed = out["00081198"]["Value"]
    assert failed[0]["00081197"]["Value"] == [0xC000]
    body, ctype = stow_body([good])
    again = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert again.status_code == 200


def test_stow_refuses_other_content_types(client: Any, factories: Any, login: Any) -> None:
    login(client, factories.nurse())
    resp = client.post("/dicomweb/studies", data=b"{}", content_type="application/json")
    assert resp.status_code == 415 and resp.mimetype == "application/problem+json"


def test_unmatched_study_is_reconciled_by_clinic_staff(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    study = generate_uid()
    _upload(client, [(ct_slice(patient_id="OUTSIDE-77", study_uid=study), "x.dcm")])
    page = client.get("/scans/unmatched").get_data(as_text=True)
    assert "OUTSIDE-77" in page
    row = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study))
    resp = client.post(f"/scans/studies/{row.id}/link",
                       data={"mrn": patient.mrn, "confirmed": "yes", "accept_mismatches": "yes"})
    assert resp.status_code == 302
    assert db.session.scalar(sa.select(Study.patient_id).where(Study.id == row.id)) == patient.id
    assert "OUTSIDE-77" not in client.get("/scans/unmatched").get_data(as_text=True)


def test_malformed_stow_body_keeps_nothing(client: Any, factories: Any, login: Any, app: Any) -> None:
    login(client, factories.nurse())
    before = _stored_keys(app)
    body, ctype = stow_body([ct_slice(), ct_slice()])
    resp = client.post("/dicomweb/studies", data=body[:-40], content_type=ctype)  # closing boundary cut off
    assert resp.status_code == 422 and resp.mimetype == "application/problem+json"
    assert _stored_keys(app) == before


def test_dicom_person_names_are_shown_like_chart_names():
    from app.imaging.models import Study

    assert Study(patient_name="Doe^Jane^Ann").patient_name_display == "DOE, Jane Ann"
    assert Study(patient_name="Anonymous").patient_name_display == "ANONYMOUS"
    assert Study(patient_name=None).patient_name_display is None


def test_stow_without_content_length_is_cut_off_at_the_upload_limit(client: Any, factories: Any, login: Any,
                                                                     app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    login(client, factories.nurse())
    monkeypatch.setitem(app.config, "IMAGING_MAX_UPLOAD_BYTES", 50_000)
    before = _stored_keys(app)
    study = generate_uid()
    body, ctype = stow_body([ct_slice(study_uid=study, size=64, number=n) for n in range(1, 8)])  # ~60 KB
    assert len(body) > 50_000
    # A chunked request: the body arrives as a stream with no Content-Length header.
    resp = client.post("/dicomweb/studies", input_stream=io.BytesIO(body), content_type=ctype,
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 413 and resp.mimetype == "application/problem+json"
    assert "limit" in resp.get_json()["detail"]
    assert _stored_keys(app) == before
    assert db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study)) is None
    # Within the limit the same kind of request goes through.
    small, ctype = stow_body([ct_slice(study_uid=study)])
    ok = client.post("/dicomweb/studies", input_stream=io.BytesIO(small), content_type=ctype,
                     environ_overrides={"wsgi.input_terminated": True})
    assert ok.status_code == 200


def test_a_resend_in_other_bytes_is_already_stored_on_upload_and_stow(client: Any, factories: Any, login: Any,
                                                                       app: Any) -> None:
    """Judged on the dataset: another transfer syntax or file meta is the same instance; other pixels are not."""
    from pydicom.uid import RLELossless

    login(client, factories.nurse())
    original = ct_slice(seed=3)
    assert _upload(client, [(original, "ct.dcm")])["results"][0]["status"] == "stored"
    ds = pydicom.dcmread(io.BytesIO(original))
    ds.file_meta.ImplementationClassUID = "1.2.3.4.5.6"
    buf = io.BytesIO()
    ds.save_as(buf)
    other_meta = buf.getvalue()
    ds.compress(RLELossless, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf)
    rle = buf.getvalue()
    assert original not in (other_meta, rle)
    before = _stored_keys(app)
    body = _upload(client, [(other_meta, "meta.dcm"), (rle, "rle.dcm")])
    assert [(r["status"], r["reason"]) for r in body["results"]] == [("duplicate", "already stored")] * 2
    stow, ctype = stow_body([rle])
    resp = client.post("/dicomweb/studies", data=stow, content_type=ctype)
    assert resp.status_code == 200 and "00081198" not in resp.get_json()
    assert _stored_keys(app) == before  # nothing new kept
    inst = db.session.scalar(sa.select(Instance).where(Instance.sop_instance_uid == ds.SOPInstanceUID))
    with app.app_context():
        assert object_store().read(inst.object_key) == original


def test_a_series_uid_of_another_study_is_refused_not_misfiled(client: Any, factories: Any, login: Any) -> None:
    """Filing it under the other study would answer "stored" for an instance nobody finds under its own study."""
    login(client, factories.nurse())
    series = generate_uid()
    first, stray = generate_uid(), generate_uid()
    body, ctype = stow_body([ct_slice(study_uid=first, series_uid=series, number=1)])
    assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
    body, ctype = stow_body([ct_slice(study_uid=stray, series_uid=series, number=2)])
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert resp.status_code == 409
    failed = resp.get_json()["00081198"]["Value"]
    assert failed[0]["00000902"]["Value"] == ["its Series Instance UID belongs to another study"]
    assert len(client.get(f"/dicomweb/studies/{first}/instances").get_json()) == 1
