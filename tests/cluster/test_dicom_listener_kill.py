"""The DICOM listener is killed (SIGKILL) while a scanner sends a series over one association: the scanner sees
the failure, every instance it was told was stored is in the database and the object store byte for byte, and
sending the series again (systemd restarts the listener) completes it."""

from __future__ import annotations

import io
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread

from app import db
from app.imaging.models import DicomPeer, Instance, Series, Study
from tests.cluster.conftest import VENV_BIN, Cluster, free_port, unit_command, wait_until
from tests.imaging.dicomgen import ct_slice

pytestmark = [pytest.mark.cluster, pytest.mark.fault,
              pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is installed by .ci/run")]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _start_listener(cluster: Cluster) -> int:
    port = cluster.ports["dicom"] = free_port()
    argv = unit_command("townhealth-dicom.service", 0)
    argv[argv.index("--host") + 1], argv[argv.index("--port") + 1] = "127.0.0.1", str(port)
    cluster.start("dicom", argv, None)
    wait_until(lambda: _listening(port), "the DICOM listener", timeout=60, proc=cluster.procs["dicom"])
    return port


def _acknowledged(log: str) -> list[str]:
    """Files storescu was told were stored: each "Sending file" followed by a successful store response."""
    acked, current = [], None
    for line in log.splitlines():
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = None
    return acked


def _stored(engine: sa.Engine, study_uid: str) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(Instance.sop_instance_uid, Instance.object_key).join(Series).join(Study)
                                 .where(Study.study_instance_uid == study_uid)).all())


def test_killing_the_listener_mid_association_loses_nothing_acknowledged(cluster, engine, s3_server,
                                                                         live_factories, tmp_path: Path):
    from minio import Minio

    clinic = live_factories.facility(name="Scanner room")
    aet = f"KILL{secrets.token_hex(3).upper()}"
    db.session.add(DicomPeer(ae_title=aet, facility_id=clinic.id, can_store=True, active=True))
    db.session.commit()
    study_uid = f"2.25.{secrets.randbits(100)}"
    files = []
    for n in range(1, 41):
        path = tmp_path / f"im{n:03d}.dcm"
        path.write_bytes(ct_slice(study_uid=study_uid, series_uid=f"{study_uid}.1", number=n, seed=n, size=256,
                                  patient_id="SCANNER-KILL"))
        files.append(path)
    port = _start_listener(cluster)
    try:
        sender = subprocess.Popen(["storescu", "-v", "-aet", aet, "-aec", "TOWNHEALTH", "127.0.0.1", str(port),  # noqa: S603, S607
                                   *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while len(_stored(engine, study_uid)) < 5:  # a few are in: the association is well under way
            assert sender.poll() is None, "the series was sent before the listener could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        cluster.stop("dicom", signal.SIGKILL)
        log, _ = sender.communicate(timeout=60)
    finally:
        if "dicom" in cluster.procs:
            cluster.stop("dicom")

    acked = _acknowledged(log)
    assert sender.returncode != 0 or len(acked) < len(files), log[-2000:]  # the scanner sees it failed
    assert acked and len(acked) < len(files), log[-2000:]  # stored after the kill may be unacknowledged
    stored = _stored(engine, study_uid)
    s3 = Minio(s3_server, access_key="test", secret_key="test", secure=False)
    for path in acked:  # every acknowledged instance: its row, and its object with the same dataset and pixels
        sent = dcmread(path)
        key = stored.get(str(sent.SOPInstanceUID))
        assert key, f"{Path(path).name} was acknowledged but has no row"
        obj = s3.get_object("cluster", key)
        try:
            kept = dcmread(io.BytesIO(obj.read()))
        finally:
            obj.close()
            obj.release_conn()
        assert kept == sent and kept.PixelData == sent.PixelData, Path(path).name

    port = _start_listener(cluster)  # systemd's Restart=always; the scanner sends the series again
    try:
        again = subprocess.run(["storescu", "-aet", aet, "-aec", "TOWNHEALTH", "127.0.0.1", str(port),  # noqa: S603, S607
                                *map(str, files)], capture_output=True, text=True, timeout=300, check=False)
    finally:
        cluster.stop("dicom")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert len(_stored(engine, study_uid)) == len(files)
    # What the killed listener stored without committing its row goes at the next sweep.
    swept = subprocess.run([str(VENV_BIN / "hospital"), "sweep-objects", "--grace-minutes", "0"],  # noqa: S603
                           env=cluster.env, capture_output=True, text=True, timeout=120, check=False)
    assert swept.returncode == 0, swept.stderr[-2000:]
    with engine.connect() as conn:
        named = set(conn.scalars(sa.select(Instance.object_key)))
    assert {o.object_name for o in s3.list_objects("cluster", prefix="dicom/", recursive=True)} <= named
