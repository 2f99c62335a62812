"""DICOMweb read latency of this checkout against another one, measured side by side.

``python benchmarks/imaging_reads.py OTHER_CHECKOUT`` (e.g. after ``git worktree add /tmp/base main``) serves
both checkouts with gunicorn (2 workers x 8 threads each, as in deploy/) on one fresh PostgreSQL database with
10,000 indexed studies, then times QIDO exact match, a WADO-RS frame (512x512x16) and a rendered JPEG against each in
alternating blocks, so both see the same load. On a shared machine single runs of ``benchmarks/imaging.py``
swing with the load; this comparison does not. Both checkouts must share the database schema; the other one
runs with this checkout's interpreter. ``BENCH_ROUNDS`` and ``BENCH_BLOCK`` set the rounds and block size.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.imaging import PG_ADMIN, STUDIES, Server  # noqa: E402
from tests.imaging.dicomgen import ct_slice, stow_body  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", 10))
BLOCK = int(os.environ.get("BENCH_BLOCK", 20))


def main(other: Path) -> None:
    import sqlalchemy as sa
    from pydicom.uid import generate_uid

    from app import create_app, db
    from app.cli import migrate
    from app.config import Config
    from app.imaging.models import Study
    from tests.factories import PASSWORD, Factories

    name = f"hospital_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="imaging-reads-"))
    servers: list[Server] = []
    try:
        migrate(url)
        cfg = Config.from_env()
        cfg.DATABASE_URL, cfg.INSTANCE_PATH, cfg.STORAGE_PATH = url, tmp, tmp / "objects"
        app = create_app(cfg)
        with app.app_context():
            nurse = Factories().nurse()
            email = nurse.email
            db.session.execute(sa.insert(Study), [
                {"study_instance_uid": f"2.25.{uuid.uuid4().int}", "facility_id": nurse.facility_id,
                 "dicom_patient_id": f"P{i:06d}", "patient_name": f"Bench^Patient{i}",
                 "patient_name_search": f"bench^patient{i}", "modalities": "CT", "accession_number": f"A{i:06d}"}
                for i in range(STUDIES)])
            db.session.commit()
        app.extensions["db_engine"].dispose()
        env = dict(os.environ, DATABASE_URL=url, HOSPITAL_INSTANCE_PATH=str(tmp),
                   HOSPITAL_STORAGE_PATH=str(tmp / "objects"), HOSPITAL_OBJECT_STORE="fs")
        servers = [Server(env, cwd=ROOT), Server(env, cwd=other)]
        sessions = [server.session(email, PASSWORD) for server in servers]
        study, series = generate_uid(), generate_uid()
        body, ctype = stow_body([ct_slice(patient_id="BENCH-READS", study_uid=study, series_uid=series, number=n,
                                          size=512, seed=n) for n in (1, 2)])
        token = sessions[0].get(f"{servers[0].url}/api/v1/auth/csrf").json()["csrf_token"]
        assert sessions[0].post(f"{servers[0].url}/dicomweb/studies", data=body,
                                headers={"Content-Type": ctype, "X-CSRFToken": token}).status_code == 200
        sop = sessions[0].get(f"{servers[0].url}/dicomweb/instances",
                              params={"PatientID": "BENCH-READS", "limit": 1}).json()[0]["00080018"]["Value"][0]
        path = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
        kinds: dict[str, Callable[[requests.Session, str], object]] = {
            "QIDO exact match": lambda s, u: s.get(f"{u}/dicomweb/studies", params={"PatientID": "P004242"}).json(),
            "WADO-RS frame": lambda s, u: s.get(f"{u}{path}/frames/1").content,
            "rendered JPEG": lambda s, u: s.get(f"{u}{path}/rendered", headers={"Accept": "image/jpeg"}).content,
        }
        times: dict[tuple[str, int], list[float]] = {(k, i): [] for k in kinds for i in (0, 1)}
        for rnd in range(ROUNDS + 1):  # round 0 warms up
            for kind, call in kinds.items():
                for i in ((0, 1) if rnd % 2 else (1, 0)):
                    for _ in range(BLOCK):
                        start = time.perf_counter()
                        call(sessions[i], servers[i].url)
                        if rnd:
                            times[(kind, i)].append((time.perf_counter() - start) * 1000)
    finally:
        for server in servers:
            server.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f}; {ROUNDS * BLOCK} requests of each kind per checkout")
    print(f"{'median (p25) ms':18}  {'this checkout':>14}  {other.name:>14}")
    for kind in kinds:
        cells = []
        for i in (0, 1):
            ordered = sorted(times[(kind, i)])
            cells.append(f"{statistics.median(ordered):6.2f} ({ordered[len(ordered) // 4]:5.2f})")
        print(f"{kind:18}  {cells[0]:>14}  {cells[1]:>14}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1], "wsgi.py").exists():
        sys.exit("usage: imaging_reads.py OTHER_CHECKOUT (a directory with wsgi.py)")
    main(Path(sys.argv[1]).resolve())
