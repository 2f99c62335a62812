"""Imaging benchmark: STOW-RS (filesystem and S3 stores), C-STORE from storescu, QIDO, WADO frame, rendered JPEG,
and the peak memory of a web worker ingesting a ~1 GB zip through the upload page.

Generates a 300-slice 512x512 16-bit CT series (~158 MB), serves the app with gunicorn on a fresh PostgreSQL
database and prints one table of measured vs target. Needs PostgreSQL on 127.0.0.1:5432 and dcmtk. Not part of
``make test``. ``BENCH_SLICES``, ``BENCH_STUDIES`` and ``BENCH_ZIP_MB`` (0 skips the zip) shrink it.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.imaging.dicomgen import ct_slice, stow_body  # noqa: E402

SLICES = int(os.environ.get("BENCH_SLICES", 300))
STUDIES = int(os.environ.get("BENCH_STUDIES", 10_000))
ZIP_MB = int(os.environ.get("BENCH_ZIP_MB", 1024))
BATCH = 25
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    """Wait for a server to answer (a loaded two-core machine can take over 30 s to import the app)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()  # noqa: S310
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def series(study_uid: str, series_uid: str, tag: str) -> list[bytes]:
    from pydicom.uid import generate_uid

    return [ct_slice(patient_id=f"BENCH-{tag}", study_uid=study_uid, series_uid=series_uid, number=n, size=512,
                     sop_uid=generate_uid(), seed=n) for n in range(1, SLICES + 1)]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            pass
    return total / 1024


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout  # noqa: S603,S607
    return [pid, *(int(p) for p in out.split())]


class Server:
    def __init__(self, env: dict[str, str], workers: int = 2, cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", "8", "--bind",
             f"127.0.0.1:{self.port}", "wsgi:app"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        wait_http(f"{self.url}/healthz")

    def session(self, email: str, password: str) -> requests.Session:
        s = requests.Session()
        token = s.get(f"{self.url}/api/v1/auth/csrf").json()["csrf_token"]
        r = s.post(f"{self.url}/sign-in", data={"email": email, "password": password, "csrf_token": token},
                   allow_redirects=False)
        assert r.status_code == 302, r.text[:300]
        return s

    def stop(self) -> float:
        peak = rss_mb(children(self.proc.pid))
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return peak


def vm_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def zip_upload(env: dict[str, str], email: str, password: str, tmp: Path) -> tuple[float, float, int, float]:
    """Upload a ~ZIP_MB zip of CT slices to a one-worker server; sample the worker's RSS all along.

    Returns (peak RSS MB of the worker, zip MB, files stored, seconds).
    """
    from pydicom.uid import generate_uid

    boundary = uuid.uuid4().hex
    body = tmp / "zip-upload.body"
    study, series_uid = generate_uid(), generate_uid()
    n = 0
    with body.open("wb") as out:  # the multipart body, with the zip written straight into it
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.zip"\r\n'
                  f"Content-Type: application/zip\r\n\r\n".encode())
        start = out.tell()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            while out.tell() - start < ZIP_MB * 1024 * 1024:
                n += 1
                zf.writestr(f"STUDY/IM{n:05d}.dcm", ct_slice(
                    patient_id="BENCH-ZIP", study_uid=study, series_uid=series_uid, number=n, size=512,
                    sop_uid=generate_uid(), seed=n))
        zip_mb = (out.tell() - start) / 1e6
        out.write(f"\r\n--{boundary}--\r\n".encode())
    server = Server(env, workers=1)
    try:
        s = server.session(email, password)
        token = s.get(f"{server.url}/api/v1/auth/csrf").json()["csrf_token"]
        worker = children(server.proc.pid)[-1]
        peak = [vm_rss_mb(worker)]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], vm_rss_mb(worker))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t = time.perf_counter()
        with body.open("rb") as fh:
            r = s.post(f"{server.url}/scans/upload", data=fh, timeout=1800,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                "Accept": "application/json", "X-CSRFToken": token})
        secs = time.perf_counter() - t
        done.set()
        sampler.join()
        assert r.status_code == 200, r.text[:300]
        stored = r.json()["counts"]["stored"]
        peak[0] = max(peak[0], rss_mb([worker]))  # VmHWM: the kernel's own high-water mark
    finally:
        server.stop()
        body.unlink(missing_ok=True)
    return peak[0], zip_mb, stored, secs


def stow(server: Server, s: requests.Session, files: list[bytes]) -> float:
    start = time.perf_counter()
    for i in range(0, len(files), BATCH):
        body, ctype = stow_body(files[i:i + BATCH])
        r = s.post(f"{server.url}/dicomweb/studies", data=body, headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text[:300]
    return time.perf_counter() - start


def timed(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def main() -> None:  # noqa: PLR0915
    from pydicom.uid import generate_uid

    from app import create_app, db
    from app.cli import migrate
    from app.config import Config
    from tests.factories import PASSWORD, Factories

    name = f"hospital_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="imaging-bench-"))
    moto = None
    rows: list[tuple[str, str, str]] = []
    try:
        migrate(url)
        cfg = Config.from_env()
        cfg.DATABASE_URL = url
        cfg.INSTANCE_PATH = tmp
        cfg.STORAGE_PATH = tmp / "objects"
        app = create_app(cfg)
        with app.app_context():
            f = Factories()
            nurse = f.nurse()
            clinic_code = nurse.facility.code
            nurse_email = nurse.email
            # 10,000 indexed studies for QIDO
            import sqlalchemy as sa

            from app.imaging.models import Study
            batch = [{"study_instance_uid": f"2.25.{uuid.uuid4().int}", "facility_id": nurse.facility_id,
                      "dicom_patient_id": f"P{i:06d}", "patient_name": f"Bench^Patient{i}",
                      "patient_name_search": f"bench^patient{i}", "modalities": "CT",
                      "accession_number": f"A{i:06d}"} for i in range(STUDIES)]
            db.session.execute(sa.insert(Study), batch)
            db.session.commit()
        env = dict(os.environ, DATABASE_URL=url, HOSPITAL_INSTANCE_PATH=str(tmp),
                   HOSPITAL_STORAGE_PATH=str(tmp / "objects"), HOSPITAL_OBJECT_STORE="fs", PYTHONUNBUFFERED="1")
        print(f"generating {SLICES} slices ...", flush=True)
        files = series(generate_uid(), generate_uid(), "FS")
        mb = sum(len(x) for x in files) / 1e6

        server = Server(env)
        s = server.session(nurse_email, PASSWORD)
        secs = stow(server, s, files)
        rows.append(("STOW-RS, filesystem store", f"{SLICES / secs:.0f} inst/s, {mb / secs:.0f} MB/s ({mb:.0f} MB)",
                     ">= 185 inst/s"))

        med, p95 = timed(lambda: s.get(f"{server.url}/dicomweb/studies", params={"PatientID": "P004242"}).json(),
                         200)
        rows.append((f"QIDO exact match ({STUDIES} studies)", f"median {med:.1f} ms, p95 {p95:.1f} ms", "<= 3 ms"))
        inst = s.get(f"{server.url}/dicomweb/instances", params={"PatientID": "BENCH-FS", "limit": 1}).json()[0]
        base = (f"{server.url}/dicomweb/studies/{inst['0020000D']['Value'][0]}/series/"
                f"{inst['0020000E']['Value'][0]}/instances/{inst['00080018']['Value'][0]}")
        med, p95 = timed(lambda: s.get(f"{base}/frames/1").content, 200)
        rows.append(("WADO-RS frame (512x512x16)", f"median {med:.1f} ms, p95 {p95:.1f} ms", "<= 4 ms"))
        med, p95 = timed(lambda: s.get(f"{base}/rendered", headers={"Accept": "image/jpeg"}).content, 200)
        rows.append(("WADO-RS rendered JPEG", f"median {med:.1f} ms, p95 {p95:.1f} ms", "<= 4 ms"))
        med, p95 = timed(lambda: s.get(f"{base}/rendered", headers={"Accept": "image/png"}).content, 50)
        rows.append(("WADO-RS rendered PNG", f"median {med:.1f} ms, p95 {p95:.1f} ms", ""))
        rows.append(("peak RSS, web workers (fs run)", f"{server.stop():.0f} MB", ""))

        # C-STORE
        scp_port = free_port()
        scp_env = dict(env, DICOM_ALLOWED_AETS=f"BENCHSCU={clinic_code}")
        scp = subprocess.Popen([sys.executable, "-m", "app.imaging.scp", "--host", "127.0.0.1", "--port",  # noqa: S603
                                str(scp_port)], cwd=ROOT, env=scp_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:  # wait until the listener accepts connections
            try:
                socket.create_connection(("127.0.0.1", scp_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        cfiles = series(generate_uid(), generate_uid(), "CS")
        cdir = tmp / "cstore"
        cdir.mkdir()
        paths = []
        for i, data in enumerate(cfiles):
            p = cdir / f"{i:04d}.dcm"
            p.write_bytes(data)
            paths.append(str(p))
        t = time.perf_counter()
        out = subprocess.run(["storescu", "-aet", "BENCHSCU", "-aec", "TOWNHEALTH", "127.0.0.1", str(scp_port),  # noqa: S603,S607
                              *paths], capture_output=True, text=True, check=False,
                             env=dict(os.environ, TCP_NODELAY="1"))  # dcmtk's own switch for its side
        secs = time.perf_counter() - t
        if out.returncode:
            print("storescu:", out.stderr[-800:])
        scp_rss = rss_mb([scp.pid])
        scp.send_signal(signal.SIGTERM)
        scp.wait(10)
        rows.append(("C-STORE from storescu (1 association)",
                     f"{SLICES / secs:.0f} inst/s (exit {out.returncode}), listener peak RSS {scp_rss:.0f} MB",
                     ">= 150 inst/s"))

        # S3 via moto
        moto_port = free_port()
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],  # noqa: S603
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{moto_port}/moto-api/")
        s3_env = dict(env, HOSPITAL_OBJECT_STORE="s3", S3_ENDPOINT=f"127.0.0.1:{moto_port}", S3_ACCESS_KEY="bench",
                      S3_SECRET_KEY="benchbench", S3_BUCKET="bench", S3_SECURE="0")  # noqa: S106
        server = Server(s3_env)
        s = server.session(nurse_email, PASSWORD)
        sfiles = series(generate_uid(), generate_uid(), "S3")
        secs_s3 = stow(server, s, sfiles)
        rows.append(("STOW-RS, S3 store (moto)", f"{SLICES / secs_s3:.0f} inst/s, {mb / secs_s3:.0f} MB/s", ""))
        server.stop()
        import io

        from minio import Minio
        client = Minio(f"127.0.0.1:{moto_port}", access_key="bench", secret_key="benchbench", secure=False)  # noqa: S106
        t = time.perf_counter()
        for i, data in enumerate(sfiles):
            client.put_object("bench", f"bare/{i}", io.BytesIO(data), len(data), content_type="application/dicom")
        bare = time.perf_counter() - t
        rows.append(("bare minio put_object, same files", f"{SLICES / bare:.0f} obj/s", ""))
        rows.append(("S3 ingest / bare put_object", f"{bare / secs_s3:.2f}", ">= 0.8"))
        if ZIP_MB:
            print(f"generating a {ZIP_MB} MB zip ...", flush=True)
            peak, zip_mb, stored, zsecs = zip_upload(env, nurse_email, PASSWORD, tmp)
            rows.append((f"upload page, {zip_mb:.0f} MB zip: peak RSS of the worker",
                         f"{peak:.0f} MB ({stored} files stored in {zsecs:.1f} s)", "< 300 MB"))
    finally:
        if moto is not None:
            moto.send_signal(signal.SIGTERM)
            moto.wait(10)
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{'measure'.ljust(width)}  {'result'.ljust(vwidth)}  target")
    for label, value, target in rows:
        print(f"{label.ljust(width)}  {value.ljust(vwidth)}  {target}")


if __name__ == "__main__":
    main()
