"""Reading worklist and signing figures on this machine (not part of the test suite).

1. The doctor's worklist page (HTML, first 200 rows) and the worklist API (first 100, FHIR ServiceRequest JSON)
   with 10,000 open requests in the database: median and p95 over ``BENCH_ROUNDS`` requests.
2. Time to sign: the "Sign report" POST of the editor (save, Ed25519 signature, commit, PDF, DICOM Encapsulated
   PDF written back into the study through the ingest path), median and p95 over ``BENCH_SIGNS`` reports.
   The second-factor check is left out (a TOTP code is accepted once per 30 s step); it is one HMAC.

Runs in-process (Flask test client, no network) against a throw-away PostgreSQL database (TEST_PG_ADMIN_URL).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app, db  # noqa: E402
from app.cli import migrate  # noqa: E402
from app.config import TestConfig  # noqa: E402
from app.imaging.models import Study  # noqa: E402
from app.reading import service  # noqa: E402
from app.reading.models import Priority, ReadingRequest  # noqa: E402
from tests.conftest import PASSWORD  # noqa: E402
from tests.factories import Factories  # noqa: E402
from tests.reading.conftest import store_study  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OPEN_REQUESTS = int(os.environ.get("BENCH_REQUESTS", 10_000))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 30))
SIGNS = int(os.environ.get("BENCH_SIGNS", 20))


def timed(fn, rounds: int) -> list[float]:  # noqa: ANN001 - a tiny local helper
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary(label: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{label:<48} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   ({len(ms)} runs)"


def fill(nurse_id: int, patient_ids: list[int], facility_id: int) -> None:
    """10,000 open requests, each on its own study, spread over priorities and the last two days."""
    now = db.utcnow()
    studies = [{"study_instance_uid": f"2.25.{uuid.uuid4().int}", "patient_id": patient_ids[i % len(patient_ids)],
                "facility_id": facility_id, "modalities": "CT" if i % 3 else "CR"} for i in range(OPEN_REQUESTS)]
    ids = db.session.scalars(sa.insert(Study).returning(Study.id), studies).all()
    prios = list(Priority)
    db.session.execute(sa.insert(ReadingRequest), [
        {"study_id": sid, "patient_id": studies[i]["patient_id"], "facility_id": facility_id,
         "requested_by_id": nurse_id, "priority": prios[i % 3], "priority_rank": prios[i % 3].rank,
         "clinical_question": "Benchmark question", "modality": studies[i]["modalities"],
         "requested_at": now - timedelta(seconds=17 * i)} for i, sid in enumerate(ids)])
    db.session.commit()


def main() -> None:
    name = f"hospital_bench_reading_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
        migrate(url)
        cfg = TestConfig()
        cfg.DATABASE_URL = url
        cfg.INSTANCE_PATH = Path(tempfile.mkdtemp(prefix="bench-reading-"))
        cfg.STORAGE_PATH = cfg.INSTANCE_PATH / "objects"
        app = create_app(cfg)
        with app.app_context():
            f = Factories()
            nurse, doctor = f.nurse(), f.doctor()
            patients = [f.patient(facility=nurse.facility) for _ in range(50)]
            t = time.perf_counter()
            fill(nurse.id, [p.id for p in patients], nurse.facility_id)
            print(f"inserted {OPEN_REQUESTS} open requests in {time.perf_counter() - t:.1f} s")
            to_sign = []
            with app.test_request_context("/"):
                for p in patients[:SIGNS]:
                    req = service.request_reading(store_study(nurse, p, slices=1), by=nurse, question="Q?",
                                                  priority="routine", assigned_to_id=doctor.id)
                    service.claim(req, by=doctor)
                    db.session.commit()
                    to_sign.append(req.id)
            db.session.remove()
        client = app.test_client()
        token = client.get("/api/v1/auth/csrf").get_json()["csrf_token"]
        assert client.post("/sign-in", data={"email": doctor.email, "password": PASSWORD,
                                             "csrf_token": token}).status_code == 302

        def page() -> None:
            resp = client.get("/reading")
            assert resp.status_code == 200 and b"Reading worklist" in resp.data

        def api() -> None:
            resp = client.get("/api/v1/reading-requests?limit=100")
            assert resp.status_code == 200 and len(resp.get_json()) == 100

        page(), api()  # warm caches
        print(summary(f"worklist page, {OPEN_REQUESTS} open (200 rows)", timed(page, ROUNDS)))
        print(summary(f"worklist API, {OPEN_REQUESTS} open (100 rows)", timed(api, ROUNDS)))
        token = client.get("/api/v1/auth/csrf").get_json()["csrf_token"]
        signs = []
        for rid in to_sign:
            t = time.perf_counter()
            resp = client.post(f"/reading/{rid}/report", data={
                "csrf_token": token, "action": "sign", "findings": "No acute finding.", "impression": "1. Normal.",
                "patient_summary": "All normal.", "release": "now"})
            signs.append((time.perf_counter() - t) * 1000)
            assert resp.status_code == 302, resp.status_code
        print(summary("sign report (+ PDF + DICOM write-back)", signs))
        with app.app_context():
            written = db.session.scalar(sa.text("SELECT count(*) FROM reading_report "
                                                "WHERE dicom_sop_instance_uid IS NOT NULL"))
            assert written == len(to_sign), written
            db.session.remove()
    finally:
        db.session.remove()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
