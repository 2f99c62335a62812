"""Load: 200 virtual users of a realistic mix against gunicorn on PostgreSQL, with locust (not part of the tests).

Patients read their record and prescriptions and look for free slots; clinic staff search patients, open charts
and chart a condition; doctors search and read scans through QIDO-RS / WADO-RS; pharmacists work their queue.
Run ``.venv/bin/python benchmarks/load.py`` (``--seconds``, ``--users``). It prints, per endpoint group,
throughput, p50/p95/p99 and errors for

1. the mix at a human pace (1-3 s between a user's clicks): what 200 people at work feel;
2. the mix flat out (no pause): the most the app serves, and
3. a bare Flask + SQLAlchemy one-query endpoint flat out under the same gunicorn settings: the ratio of 2 to 3.

Runs against a throw-away PostgreSQL database (TEST_PG_ADMIN_URL, default local trust). This file is also the
locustfile: locust imports it (with LOAD_ACCOUNTS set) for the user classes below.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUNICORN = ["--workers", "2", "--threads", "8", "--graceful-timeout", "5"]
PASSWORD = "correct horse battery staple"  # noqa: S105 - throw-away accounts


# ---------------------------------------------------------------- the virtual users (imported by locust)

if os.environ.get("LOAD_ACCOUNTS"):
    from locust import HttpUser, between, constant, task

    ACCOUNTS: dict[str, Any] = json.loads(Path(os.environ["LOAD_ACCOUNTS"]).read_text())
    PACE = constant(0) if os.environ.get("LOAD_FLAT_OUT") else between(1, 3)

    class Signed(HttpUser):
        abstract = True
        wait_time = PACE
        role = ""

        def on_start(self) -> None:
            self.me = random.choice(ACCOUNTS[self.role])  # noqa: S311 - load mix, not security
            token = self.client.get("/api/v1/auth/csrf", name="sign-in").json()["csrf_token"]
            self.client.post("/sign-in", data={"email": self.me["email"], "password": PASSWORD},
                             headers={"X-CSRFToken": token}, name="sign-in", allow_redirects=False)
            self.csrf = self.client.get("/api/v1/auth/csrf", name="sign-in").json()["csrf_token"]

    class Patient(Signed):
        weight, role = 10, "patients"

        @task(3)
        def record(self) -> None:
            self.client.get("/api/v1/me/record", name="patient: my record")

        @task(2)
        def prescriptions(self) -> None:
            self.client.get("/me/prescriptions", name="patient: my prescriptions")

        @task(1)
        def slots(self) -> None:
            doctor = random.choice(ACCOUNTS["doctor_ids"])  # noqa: S311
            self.client.get(f"/api/v1/consults/doctors/{doctor}/slots", name="patient: free slots")

    class Staff(Signed):
        weight, role = 4, "nurses"

        @task(3)
        def search(self) -> None:
            self.client.get("/api/v1/patients", params={"q": random.choice(["Fam", "Giv", "Family1"])},  # noqa: S311
                            name="staff: search")

        @task(3)
        def chart(self) -> None:
            self.client.get(f"/patients/{random.choice(ACCOUNTS['patient_ids'])}", name="staff: chart")  # noqa: S311

        @task(1)
        def condition(self) -> None:
            self.client.post(f"/api/v1/patients/{random.choice(ACCOUNTS['patient_ids'])}/conditions",  # noqa: S311
                             json={"description": "Seasonal rhinitis"}, headers={"X-CSRFToken": self.csrf},
                             name="staff: chart a condition")

    class Doctor(Signed):
        weight, role = 4, "doctors"

        def on_start(self) -> None:
            super().on_start()
            self.studies = [s for s in ACCOUNTS["studies"] if s["doctor"] == self.me["email"]]

        @task(1)
        def qido(self) -> None:
            self.client.get("/dicomweb/studies", params={"limit": "20"}, headers={"Accept": "application/dicom+json"},
                            name="doctor: QIDO studies")

        @task(2)
        def wado(self) -> None:
            study = random.choice(self.studies)  # noqa: S311 - the scans of this doctor's own patients
            self.client.get(f"/dicomweb/studies/{study['study']}/series/{study['series']}/metadata",
                            headers={"Accept": "application/dicom+json"}, name="doctor: WADO metadata")
            self.client.get(f"/dicomweb/studies/{study['study']}/series/{study['series']}/instances/"
                            f"{random.choice(study['instances'])}/frames/1",  # noqa: S311
                            headers={"Accept": "multipart/related; type=\"application/octet-stream\""},
                            name="doctor: WADO frame")

    class Pharmacist(Signed):
        weight, role = 2, "pharmacists"

        @task
        def queue(self) -> None:
            self.client.get("/pharmacy", name="pharmacist: queue")

    class Bare(HttpUser):
        """Only in the yardstick run (locust -u N Bare)."""

        wait_time = PACE

        @task
        def one_query(self) -> None:
            self.client.get("/one-query", name="bare: one query")


# ---------------------------------------------------------------- set-up and the runs


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _seed(url: str, instance: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import io

    from app import create_app, db
    from app.cli import migrate
    from app.config import TestConfig
    from app.imaging.ingest import ingest_files
    from app.prescriptions import service as rx_service
    from tests.consults.helpers import open_all_week
    from tests.factories import Factories
    from tests.imaging.dicomgen import ct_slice
    from tests.prescriptions.conftest import rx_input

    migrate(url)
    cfg = TestConfig()
    cfg.DATABASE_URL, cfg.INSTANCE_PATH, cfg.STORAGE_PATH = url, instance, instance / "objects"
    app = create_app(cfg)
    accounts: dict[str, Any] = {"patients": [], "nurses": [], "doctors": [], "pharmacists": [], "studies": []}
    with app.test_request_context("/"):
        f = Factories()
        doctors = [f.doctor() for _ in range(10)]
        for d in doctors:
            open_all_week(d)
        nurses = [f.nurse() for _ in range(10)]
        pharmacists = [f.pharmacist() for _ in range(5)]
        patients = [f.patient(with_account=True, doctor=doctors[n % 10]) for n in range(100)]
        for n, p in enumerate(patients[:40]):
            rx_service.sign(rx_service.create_draft(p, rx_input(), by=doctors[n % 10]), by=doctors[n % 10])
        db.session.commit()
        for n, p in enumerate(patients[:8]):
            study = f"2.25.{uuid.uuid4().int}"
            series = f"{study}.1"
            files = [(f"{i}.dcm", io.BytesIO(ct_slice(patient_id=p.mrn, study_uid=study, series_uid=series,
                                                      sop_uid=f"{series}.{i}", number=i, size=256, seed=i)))
                     for i in range(1, 21)]
            ingest_files(files, by=nurses[0], facility_id=nurses[0].facility_id, source="upload")
            accounts["studies"].append({"study": study, "series": series, "doctor": doctors[n].email,
                                        "instances": [f"{series}.{i}" for i in range(1, 21)]})
        accounts.update(patients=[{"email": p.user.email} for p in patients],
                        nurses=[{"email": u.email} for u in nurses], doctors=[{"email": u.email} for u in doctors[:8]],
                        pharmacists=[{"email": u.email} for u in pharmacists],
                        doctor_ids=[d.id for d in doctors], patient_ids=[p.id for p in patients])
    db.session.remove()
    return accounts


def _serve(argv: list[str], env: dict[str, str], probe: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(probe, timeout=2).read()  # noqa: S310 - loopback
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not start") from None
            time.sleep(0.2)


def _locust(host: str, accounts: Path, out: Path, *, users: int, seconds: int, flat_out: bool,
            classes: list[str]) -> list[dict[str, str]]:
    env = dict(os.environ, LOAD_ACCOUNTS=str(accounts))
    if flat_out:
        env["LOAD_FLAT_OUT"] = "1"
    argv = [str(BIN / "locust"), "-f", __file__, "--headless", "-u", str(users), "-r", str(max(users // 4, 1)),
            "-t", f"{seconds}s", "--host", host, "--csv", str(out), "--only-summary", "--loglevel", "ERROR", *classes]
    subprocess.run(argv, env=env, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    with (out.parent / f"{out.name}_failures.csv").open() as fh:
        for row in sorted(csv.DictReader(fh), key=lambda r: -int(r["Occurrences"]))[:6]:
            print(f"  failed {row['Occurrences']:>5} x {row['Method']} {row['Name']}: {row['Error'][:110]}")
    with (out.parent / f"{out.name}_stats.csv").open() as fh:
        return list(csv.DictReader(fh))


def _print(title: str, rows: list[dict[str, str]]) -> float:
    """Print the table; return the throughput of the work itself (every group but the one-off sign-in)."""
    print(f"\n{title}")
    print(f"  {'endpoint group':34} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>7} "
          f"{'requests':>9}")
    work = 0.0
    for row in rows:
        name = "all" if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
        print(f"  {name:34} {float(row['Requests/s']):8.1f} {row['50%']:>7} {row['95%']:>7} {row['99%']:>7} "
              f"{row['Failure Count']:>7} {row['Request Count']:>9}")
        if row["Name"] not in ("Aggregated", "sign-in"):
            work += float(row["Requests/s"])
    return work


def main() -> int:
    import argparse

    import psycopg

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    admin = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"hospital_load_{uuid.uuid4().hex[:8]}"
    url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            accounts = tmp / "accounts.json"
            accounts.write_text(json.dumps(_seed(url, tmp)))
            env = dict(os.environ, DATABASE_URL=url, SECRET_KEY="load-test-" + "k" * 40, DICOM_PORT="0",
                       HOSPITAL_INSTANCE_PATH=str(tmp), HOSPITAL_STORAGE_PATH=str(tmp / "objects"),
                       HOSPITAL_MFA_REQUIRED_ROLES="")
            app_port, bare_port = _free_port(), _free_port()
            procs.append(_serve([str(BIN / "gunicorn"), *GUNICORN, "--bind", f"127.0.0.1:{app_port}", "wsgi:app"],
                                env, f"http://127.0.0.1:{app_port}/sign-in"))
            procs.append(_serve([str(BIN / "gunicorn"), *GUNICORN, "--bind", f"127.0.0.1:{bare_port}",
                                 "benchmarks.bare_app:app"], env, f"http://127.0.0.1:{bare_port}/one-query"))
            app_url, bare_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{bare_port}"
            mix = ["Patient", "Staff", "Doctor", "Pharmacist"]
            print(f"{args.users} users, {args.seconds} s per run, gunicorn {' '.join(GUNICORN)}, "
                  f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before")
            _print("1. the mix at a human pace (1-3 s between clicks)",
                   _locust(app_url, accounts, tmp / "paced", users=args.users, seconds=args.seconds, flat_out=False,
                           classes=mix))
            flat = _print("2. the mix flat out", _locust(app_url, accounts, tmp / "flat", users=args.users,
                                                        seconds=args.seconds, flat_out=True, classes=mix))
            bare = _print("3. bare Flask + SQLAlchemy, one query, flat out",
                          _locust(bare_url, accounts, tmp / "bare", users=args.users, seconds=args.seconds,
                                  flat_out=True, classes=["Bare"]))
            if bare:
                print(f"\nthe mix's throughput (sign-in aside) over the bare endpoint's: {flat / bare:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
