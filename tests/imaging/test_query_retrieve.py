"""C-FIND, C-MOVE and C-GET, driven by dcmtk's findscu, movescu (to a storescp the test starts) and getscu."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.audit.models import AuditEvent
from app.imaging.dimse import query
from app.imaging.models import DicomPeer
from tests.imaging.dicomgen import bundled_copy, ct_slice
from tests.imaging.dimse import free_port, run

pytestmark = pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk is installed by .ci/run")


def _peer(ae: str, facility_id: int, **kw: Any) -> None:
    db.session.execute(sa.delete(DicomPeer).where(DicomPeer.ae_title == ae))
    db.session.add(DicomPeer(ae_title=ae, facility_id=facility_id, **{"can_store": True, "active": True} | kw))
    db.session.commit()


@pytest.fixture
def archive(listener: Any, live_factories: Any, tmp_path: Path) -> dict[str, Any]:
    """Three CT slices of one study sent by the clinic's scanner; one study of another clinic beside it."""
    port, clinic = listener
    other = live_factories.facility(name="Other clinic")
    _peer("OTHERCT", other.id)
    tag = generate_uid()[-8:]
    study, series = generate_uid(), generate_uid()
    files = []
    for n in (1, 2, 3):
        path = tmp_path / f"a{n}.dcm"
        path.write_bytes(ct_slice(patient_id=f"QR-{tag}", patient_name="Doe^Jane", study_uid=study,
                                  series_uid=series, number=n, study_date="20240110", accession=f"A{tag}"))
        files.append(str(path))
    assert run("storescu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), *files).returncode == 0
    foreign = tmp_path / "other.dcm"
    foreign.write_bytes(ct_slice(patient_id=f"QR-{tag}", study_date="20240110"))
    assert run("storescu", "-aet", "OTHERCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port),
               str(foreign)).returncode == 0
    sops = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    return {"port": port, "clinic": clinic, "pid": f"QR-{tag}", "study": study, "series": series, "sops": sops,
            "accession": f"A{tag}"}


def _find(port: int, tmp_path: Path, *keys: str, root: str = "-S", calling: str = "CLINICCT") -> tuple[
        list[pydicom.Dataset], str]:
    out_dir = tmp_path / f"find{time.monotonic_ns()}"
    out_dir.mkdir()
    argv = ["findscu", "-d", root, "-X", "-od", str(out_dir), "-aet", calling, "-aec", "TOWNHEALTH", "127.0.0.1",
            str(port)]
    for key in keys:
        argv += ["-k", key]
    out = run(*argv)
    return [pydicom.dcmread(p) for p in sorted(out_dir.glob("rsp*.dcm"))], out.stdout + out.stderr


def test_findscu_matches_at_every_level_within_the_clinic(archive: dict[str, Any], tmp_path: Path) -> None:
    port, pid = archive["port"], archive["pid"]
    found, _ = _find(port, tmp_path, "QueryRetrieveLevel=STUDY", f"PatientID={pid}", "StudyInstanceUID",
                     "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "PatientName", "StudyDate")
    assert [str(d.StudyInstanceUID) for d in found] == [archive["study"]]  # not the other clinic's study
    assert found[0].ModalitiesInStudy == "CT" and found[0].NumberOfStudyRelatedInstances == 3
    assert str(found[0].PatientName) == "Doe^Jane" and found[0].StudyDate == "20240110"
    for keys in (["PatientName=doe*", f"AccessionNumber={archive['accession']}"],
                 [f"PatientID={pid[:-2]}*", "StudyDate=20240101-20240131", "ModalitiesInStudy=CT\\MR"],
                 [f"StudyInstanceUID={generate_uid()}\\{archive['study']}"]):
        hits, _ = _find(port, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", *keys)
        assert [str(d.StudyInstanceUID) for d in hits] == [archive["study"]], keys
    none, _ = _find(port, tmp_path, "QueryRetrieveLevel=STUDY", f"PatientID={pid}", "StudyDate=-20231231")
    assert none == []
    series, _ = _find(port, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={archive['study']}",
                      "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert [(str(s.SeriesInstanceUID), s.Modality, s.NumberOfSeriesRelatedInstances) for s in series] == [
        (archive["series"], "CT", 3)]
    images, _ = _find(port, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={archive['study']}",
                      f"SeriesInstanceUID={archive['series']}", f"SOPInstanceUID={archive['sops'][1]}",
                      "InstanceNumber")
    assert [(str(i.SOPInstanceUID), i.InstanceNumber) for i in images] == [(archive["sops"][1], 2)]
    patients, _ = _find(port, tmp_path, "QueryRetrieveLevel=PATIENT", f"PatientID={pid}", "PatientName",
                        "NumberOfPatientRelatedStudies", root="-P")
    assert [(p.PatientID, p.NumberOfPatientRelatedStudies) for p in patients] == [(pid, 1)]
    db.session.remove()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "imaging.dicom.find", AuditEvent.actor_name == "DICOM AE CLINICCT")) >= 6


def test_bad_queries_get_a_status_with_a_reason_and_the_listener_goes_on(archive: dict[str, Any], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    port = archive["port"]
    _, out = _find(port, tmp_path, "PatientID=X")  # no QueryRetrieveLevel
    assert "0xa900" in out.lower() and "QueryRetrieveLevel is missing" in out, out
    _, out = _find(port, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=2024-01-10")
    assert "StudyDate must be YYYYMMDD or a range" in out, out
    _, out = _find(port, tmp_path, "QueryRetrieveLevel=WARD")
    assert "QueryRetrieveLevel WARD is not supported here" in out, out
    monkeypatch.setattr(query, "MAX_MATCHES", 2)
    _, out = _find(port, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={archive['study']}")
    assert "0xa700" in out.lower() and "more than 2 matches; narrow the query" in out, out
    _peer("QUERYLESS", archive["clinic"].id)  # may store, not query
    _, out = _find(port, tmp_path, "QueryRetrieveLevel=STUDY", calling="QUERYLESS")
    assert "0x0124" in out.lower() and "may not search here" in out, out
    assert run("echoscu", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port)).returncode == 0


@pytest.fixture
def storescp(tmp_path: Path) -> Any:
    """A storage SCP (dcmtk) as the C-MOVE destination, ready when its port accepts connections."""
    port, out_dir = free_port(), tmp_path / "received"
    out_dir.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "RECEIVER", "-od", str(out_dir), str(port)],  # noqa: S607
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    yield port, out_dir
    proc.terminate()
    proc.wait(10)


def test_movescu_sends_a_study_to_a_known_destination_only(archive: dict[str, Any], storescp: Any,
                                                           tmp_path: Path, live_factories: Any) -> None:
    port, (dest_port, received) = archive["port"], storescp
    _peer("RECEIVER", archive["clinic"].id, host="127.0.0.1", port=dest_port)
    move = ["movescu", "-v", "-S", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive['study']}"]
    out = run(*move[:2], *move[2:], "-aem", "RECEIVER")
    assert out.returncode == 0, out.stderr
    got = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in received.iterdir())
    assert got == sorted(archive["sops"])
    unknown = run(*move, "-aem", "NOWHERE")
    assert "Refused: MoveDestinationUnknown" in unknown.stdout + unknown.stderr, unknown.stderr
    _peer("STOREONLY", archive["clinic"].id)  # may send scans, not retrieve: told so, nothing sent
    not_allowed = run("movescu", "-d", *move[2:4], "STOREONLY", *move[5:], "-aem", "RECEIVER")
    assert "AE title STOREONLY may not retrieve here" in not_allowed.stdout + not_allowed.stderr
    other = live_factories.facility(name="Elsewhere")
    _peer("RECEIVER", other.id, host="127.0.0.1", port=dest_port)  # another clinic's machine: not a destination
    refused = run(*move, "-aem", "RECEIVER")
    assert "Refused: MoveDestinationUnknown" in refused.stdout + refused.stderr
    assert len(list(received.iterdir())) == 3


def test_getscu_retrieves_a_series_over_its_own_association(archive: dict[str, Any], tmp_path: Path) -> None:
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    out = run("getscu", "-S", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(archive["port"]),
              "-od", str(out_dir), "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={archive['study']}",
              "-k", f"SeriesInstanceUID={archive['series']}")
    assert out.returncode == 0, out.stderr
    assert sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in out_dir.iterdir()) == sorted(archive["sops"])
    bad = run("getscu", "-d", "-S", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(archive["port"]),
              "-od", str(out_dir), "-k", "QueryRetrieveLevel=SERIES", "-k", "SeriesInstanceUID=1.2.x")
    out = bad.stdout + bad.stderr
    assert "0xa900" in out and "ErrorComment" in out and "SeriesInstanceUID" in out, out[-2000:]


def test_getscu_gets_a_compressed_instance_decoded_when_it_accepts_only_uncompressed(listener: Any,
                                                                                   tmp_path: Path) -> None:
    port, _ = listener
    sent = tmp_path / "jls.dcm"
    sent.write_bytes(bundled_copy("MR_small_jpeg_ls_lossless.dcm", patient_id="QR-JLS"))
    assert run("storescu", "-xt", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port),
               str(sent)).returncode == 0  # sent and stored as JPEG-LS
    original = pydicom.dcmread(sent)
    out_dir = tmp_path / "got"
    out_dir.mkdir()
    out = run("getscu", "-S", "-aet", "CLINICCT", "-aec", "TOWNHEALTH", "127.0.0.1", str(port), "-od", str(out_dir),
              "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
              "-k", f"SeriesInstanceUID={original.SeriesInstanceUID}",
              "-k", f"SOPInstanceUID={original.SOPInstanceUID}")
    assert out.returncode == 0, out.stderr
    (got,) = [pydicom.dcmread(p) for p in out_dir.iterdir()]
    assert got.file_meta.TransferSyntaxUID.is_compressed is False
    assert (got.pixel_array == original.pixel_array).all()  # lossless: the same pixels
