"""The DICOM listener, driven by dcmtk's echoscu and storescu over real TCP."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom import dcmread
from pydicom.uid import generate_uid

from app import db
from app.audit.models import AuditEvent
from app.imaging.models import Instance, Series, Study
from app.imaging.service import object_store
from tests.imaging.dicomgen import bundled_copy, ct_slice, document
from tests.imaging.dimse import c_store, run

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is installed by .ci/run")


def test_echo_from_allowed_ae_and_refusal_of_others(listener: Any) -> None:
    port, _ = listener
    assert run("echoscu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port)).returncode == 0
    refused = run("echoscu", "-aet", "INTRUDER", "-aec", "TOWNHEALTH", "127.0.0.1", str(port))
    assert refused.returncode != 0


def test_storescu_pushes_a_series(listener: Any, app: Any, tmp_path: Path) -> None:
    port, clinic = listener
    study = generate_uid()
    files = []
    for n in range(1, 4):
        path = tmp_path / f"im{n}.dcm"
        path.write_bytes(ct_slice(study_uid=study, number=n, patient_id="SCANNER-1"))
        files.append(str(path))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    out = run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), *files)
    assert out.returncode == 0, out.stderr
    with app.app_context():
        row = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study))
        assert row is not None and row.facility_id == clinic.id and row.patient_id is None
        count = db.session.scalar(sa.select(sa.func.count(Instance.id)).join(Instance.series)
                                  .where(Instance.series.has(study_id=row.id)))
        assert count == 3
        assert {i.source for i in db.session.scalars(sa.select(Instance).join(Instance.series)
                                                     .where(Instance.series.has(study_id=row.id)))} == {"c-store"}
        # each instance is committed, and audited, before its success is answered
        ids = [str(i) for i in db.session.scalars(sa.select(Instance.id).join(Instance.series)
                                                  .where(Instance.series.has(study_id=row.id)))]
        audits = list(db.session.scalars(sa.select(AuditEvent).where(
            AuditEvent.action == "imaging.instance.store", AuditEvent.resource_type == "ImagingInstance",
            AuditEvent.resource_id.in_(ids))))
        assert len(audits) == 3 and {a.actor_name for a in audits} == {"DICOM AE CLINICCT"}
    # pushing again is harmless: already stored
    again = run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), files[0])
    assert again.returncode == 0


def test_failed_batch_write_leaves_no_orphan_object_and_no_row(listener: Any, app: Any, engine: Any,
                                                               tmp_path: Path) -> None:
    """The database refuses the batch (a trigger stands in for a full disk): the objects go too."""
    port, _ = listener
    study = generate_uid()
    files = []
    for n in range(1, 4):
        path = tmp_path / f"im{n}.dcm"
        path.write_bytes(ct_slice(study_uid=study, number=n, patient_id="SCANNER-2"))
        files.append(str(path))
    with app.app_context():
        before = set(object_store().list("dicom/"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE FUNCTION test_refuse_instance() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'no space left on device'; END $$"))
        conn.execute(sa.text("CREATE TRIGGER test_refuse_instance BEFORE INSERT ON imaging_instance "
                             "FOR EACH ROW EXECUTE FUNCTION test_refuse_instance()"))
    try:
        refused = run("storescu", "-d", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), *files)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER test_refuse_instance ON imaging_instance"))
            conn.execute(sa.text("DROP FUNCTION test_refuse_instance()"))
    with app.app_context():
        assert set(object_store().list("dicom/")) == before
        assert db.session.scalar(sa.select(Instance).join(Instance.series).join(Series.study)
                                 .where(Study.study_instance_uid == study)) is None
    # the scanner is told the instance failed, and why, so it sends it again (storescu stops at a refusal)
    assert "DIMSE Status                  : 0xa700: Refused: Out of resources" in refused.stderr, refused.stderr
    assert "[could not be stored; try again]" in refused.stderr and "ErrorComment" in refused.stderr
    assert "0x0000: Success" not in refused.stderr
    # once the database is back, the scanner's retry is stored
    again = run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), *files)
    assert again.returncode == 0
    with app.app_context():
        assert len(set(object_store().list("dicom/")) - before) == 3


@pytest.mark.smoke
def test_the_embedded_demo_listener_accepts_the_demo_scanner(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` on SQLite: storescu calling as DEMOSCANNER gets in without configuration; others do not."""
    import os
    import time

    from app.cli import DEMO_SCANNER_AET, SERVICES, migrate, seed
    from app.config import Config

    for name in ("DICOM_ALLOWED_AETS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOSPITAL_INSTANCE_PATH", str(tmp_path))
    cfg = Config.from_env()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        cfg.DICOM_PORT = sock.getsockname()[1]
    migrate(cfg.DATABASE_URL)
    seed(cfg)  # as `hospital run` does before it starts the services
    argv = SERVICES["dicom"](cfg)
    assert argv is not None
    proc = subprocess.Popen(argv, env=dict(os.environ), stdout=subprocess.DEVNULL,  # noqa: S603
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", cfg.DICOM_PORT), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        echo = run("echoscu", "-aet", DEMO_SCANNER_AET, "-aec", cfg.DICOM_AE_TITLE, "127.0.0.1", str(cfg.DICOM_PORT))
        assert echo.returncode == 0, echo.stderr
        scan = tmp_path / "scan.dcm"
        scan.write_bytes(ct_slice(patient_id="DEMO-1"))
        stored = run("storescu", "-aet", DEMO_SCANNER_AET, "-aec", cfg.DICOM_AE_TITLE, "127.0.0.1",
                     str(cfg.DICOM_PORT), str(scan))
        assert stored.returncode == 0 and "E:" not in stored.stderr, stored.stderr
        found = run("findscu", "-v", "-S", "-aet", DEMO_SCANNER_AET, "-aec", cfg.DICOM_AE_TITLE, "127.0.0.1",
                    str(cfg.DICOM_PORT), "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=DEMO-1")
        assert "Received Final Find Response (Success)" in found.stderr and "DEMO-1" in found.stderr, found.stderr
        got = tmp_path / "got"
        got.mkdir()
        fetched = run("getscu", "-S", "-aet", DEMO_SCANNER_AET, "-aec", cfg.DICOM_AE_TITLE, "127.0.0.1",
                      str(cfg.DICOM_PORT), "-od", str(got), "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=DEMO-1")
        assert fetched.returncode == 0 and len(list(got.iterdir())) == 1, fetched.stderr
        refused = run("echoscu", "-aet", "INTRUDER", "-aec", cfg.DICOM_AE_TITLE, "127.0.0.1", str(cfg.DICOM_PORT))
        assert refused.returncode != 0
    finally:
        proc.terminate()
        proc.wait(10)


# storescu's proposal option, and a bundled file already in that transfer syntax (storescu does not compress).
COMPRESSED = [
    ("-xs", "SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG lossless, first-order prediction (SV1)
    ("-xy", "SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50"),  # JPEG baseline
    ("-xx", "JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),  # JPEG extended
    ("-xt", "MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),  # JPEG-LS lossless
    ("-xu", "JPEGLSNearLossless_08.dcm", "1.2.840.10008.1.2.4.81"),  # JPEG-LS near-lossless
    ("-xv", "MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),  # JPEG 2000 lossless
    ("-xw", "JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),  # JPEG 2000
    ("-xr", "MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),  # RLE lossless
    ("-xd", "image_dfl.dcm", "1.2.840.10008.1.2.1.99"),  # deflated explicit VR little endian
]


@pytest.mark.parametrize(("option", "name", "syntax"), COMPRESSED, ids=[c[0] for c in COMPRESSED])
def test_storescu_sends_compressed_transfer_syntaxes_stored_as_received(listener: Any, app: Any, tmp_path: Path,
                                                                        option: str, name: str, syntax: str) -> None:
    port, _ = listener
    data = bundled_copy(name, patient_id="COMPRESSED-1")
    path = tmp_path / "in.dcm"
    path.write_bytes(data)
    sent = dcmread(path)
    out = run("storescu", option, "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), str(path))
    assert out.returncode == 0 and "E:" not in out.stderr, out.stderr
    with app.app_context():
        row = db.session.scalar(sa.select(Instance).where(Instance.sop_instance_uid == sent.SOPInstanceUID))
        assert row is not None, out.stderr
        assert row.transfer_syntax_uid == syntax
        stored = dcmread(io.BytesIO(object_store().read(row.object_key)))
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.PixelData == sent.PixelData  # the compressed bytes as sent, not decoded and re-encoded


def test_storescu_sends_reports_pdf_and_waveforms(listener: Any, app: Any, tmp_path: Path) -> None:
    """What a CT scanner and a PACS send besides images: the dose report, a PDF, an ECG, an RT plan."""
    port, _ = listener
    study = generate_uid()
    files = {"dose.dcm": document("dose-sr", study_uid=study), "letter.dcm": document("pdf", study_uid=study),
             "ecg.dcm": bundled_copy("waveform_ecg.dcm", study_uid=study),
             "plan.dcm": bundled_copy("rtplan.dcm", study_uid=study)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port),
               *(str(tmp_path / n) for n in files))
    assert out.returncode == 0 and "E:" not in out.stderr, out.stderr
    with app.app_context():
        stored = set(db.session.scalars(sa.select(Instance.sop_class_uid).join(Instance.series).join(Series.study)
                                        .where(Study.study_instance_uid == study)))
    assert stored == {"1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.104.1",
                      "1.2.840.10008.5.1.4.1.1.9.1.1", "1.2.840.10008.5.1.4.1.1.481.5"}


def _stored_object(app: Any, sop_uid: str) -> tuple[str, bytes, int]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(Instance).where(Instance.sop_instance_uid == sop_uid)))
        assert len(rows) == 1
        return rows[0].transfer_syntax_uid, object_store().read(rows[0].object_key), len(rows)


def test_the_same_instance_in_another_transfer_syntax_or_file_meta_is_already_stored(listener: Any, app: Any,
                                                                                    tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    port, _ = listener
    original = bundled_copy("MR_small.dcm", patient_id="RESEND-1")
    first = tmp_path / "first.dcm"
    first.write_bytes(original)
    assert run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port),
                str(first)).returncode == 0
    ds = dcmread(io.BytesIO(original))
    # what a PACS forwarding with compression sends: other bytes, the same instance
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.file_meta.ImplementationClassUID = "1.2.3.4.5"
    ds.file_meta.SourceApplicationEntityTitle = "OTHERPACS"
    again = tmp_path / "again-rle.dcm"
    ds.save_as(again)
    out = run("storescu", "-xr", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), str(again))
    assert out.returncode == 0 and "E:" not in out.stderr, out.stderr
    syntax, stored, _ = _stored_object(app, ds.SOPInstanceUID)
    assert syntax == "1.2.840.10008.1.2.1"  # one instance, the first copy kept
    assert dcmread(io.BytesIO(stored)).PixelData == dcmread(io.BytesIO(original)).PixelData


def test_other_content_under_a_stored_uid_is_refused_with_a_reason(listener: Any, app: Any) -> None:
    port, _ = listener
    original = bundled_copy("MR_small.dcm", patient_id="RESEND-2")
    assert c_store(port, original).Status == 0x0000
    renamed = dcmread(io.BytesIO(original))
    renamed.PatientName = "Someone^Else"
    edited_pixels = dcmread(io.BytesIO(original))
    arr = edited_pixels.pixel_array.copy()
    arr[0, 0] += 1
    edited_pixels.PixelData = arr.tobytes()
    for changed in (renamed, edited_pixels):
        buf = io.BytesIO()
        changed.save_as(buf)
        status = c_store(port, buf.getvalue())
        assert status.Status == 0xC001
        assert status.ErrorComment == "another object has this SOP Instance UID; kept the original"
    kept = dcmread(io.BytesIO(_stored_object(app, renamed.SOPInstanceUID)[1]))
    sent = dcmread(io.BytesIO(original))
    assert kept.PatientName == sent.PatientName and kept.PixelData == sent.PixelData


def test_every_c_store_failure_carries_an_error_comment(listener: Any) -> None:
    port, _ = listener
    ds = dcmread(io.BytesIO(ct_slice()))
    del ds.Rows
    buf = io.BytesIO()
    ds.save_as(buf)
    status = c_store(port, buf.getvalue())
    assert status.Status == 0xC000
    assert status.ErrorComment == "image size (Rows/Columns) is missing or out of range"
