"""Load: 200 virtual users of a realistic mix against gunicorn on PostgreSQL, with locust (not part of the tests).

Patients read their record and prescriptions and look for free slots; clinic staff search patients, open charts
and chart a condition; doctors search and read scans through QIDO-RS / WADO-RS; pharmacists work their queue.
Run ``.venv/bin/python benchmarks/load.py`` (``--seconds``, ``--users``). It prints, per endpoint group,
throughput, p50/p95/p99 and errors for

1. the mix at a human pace (1-3 s between a user's clicks): what 200 people at work feel;
2. the mix flat out (no pause): the most the app serves, and
3. a bare Flask + SQLAlchemy one-query endpoint flat out under the same gunicorn settings: the ratio of 2 to 3.

Both servers run with deploy/gunicorn.conf.py (the production settings) and the same worker count. locust runs on
the same machine with its cheaper client (FastHttpUser), and each phase also prints the CPU time spent by the app
server, by its PostgreSQL backends and by locust itself, so a load generator starving the server shows, and the
ratio is also given per CPU second of server and database (which does not depend on what else the cores do).

Runs against a throw-away PostgreSQL database (TEST_PG_ADMIN_URL, default local trust). This file is also the
locustfile: locust imports it (with LOAD_ACCOUNTS set) for the user classes below.
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUNICORN = ["--config", "deploy/gunicorn.conf.py", "--workers", "2"]
PASSWORD = "correct horse battery staple"  # noqa: S105 - throw-away accounts


# ---------------------------------------------------------------- the virtual users (imported by locust)

if os.environ.get("LOAD_ACCOUNTS"):
    from locust import between, constant, task
    from locust.contrib.fasthttp import FastHttpUser

    ACCOUNTS: dict[str, Any] = json.loads(Path(os.environ["LOAD_ACCOUNTS"]).read_text())
    PACE = constant(0) if os.environ.get("LOAD_FLAT_OUT") else between(1, 3)

    class Signed(FastHttpUser):
        abstract = True
        wait_time = PACE
        role = ""

        def on_start(self) -> None:
            self.me = random.choice(ACCOUNTS[self.role])  # noqa: S311 - load mix, not security
            token = self.client.get("/api/v1/auth/csrf", name="sign-in").json()["csrf_token"]
            self.client.post("/sign-in", data=urlencode({"email": self.me["email"], "password": PASSWORD}),
                             headers={"X-CSRFToken": token, "Content-Type": "application/x-www-form-urlencoded"},
                             name="sign-in", allow_redirects=False)
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
            self.client.get("/api/v1/patients?" + urlencode({"q": random.choice(["Fam", "Giv", "Family1"])}),  # noqa: S311
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
            self.client.get("/dicomweb/studies?limit=20", headers={"Accept": "application/dicom+json"},
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

    class Bare(FastHttpUser):
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


def _cpu_seconds(server_pid: int, database: str) -> tuple[float, float]:
    """CPU seconds used so far by the app server (master and workers) and by the PostgreSQL backends of its
    database; measured on the server side, so the figure does not depend on the load generator sharing the cores."""
    import psutil

    def used(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
            return times.user + times.system
        except psutil.Error:
            return 0.0

    master = psutil.Process(server_pid)
    app = sum(used(p) for p in [master, *master.children(recursive=True)])
    db = sum(used(p) for p in psutil.process_iter(["cmdline"])
             if f" {database} " in " ".join(p.info["cmdline"] or []) + " ")
    return app, db


def _locust(host: str, accounts: Path, out: Path, *, users: int, seconds: int, flat_out: bool,
            classes: list[str], server_pid: int, database: str) -> list[dict[str, str]]:
    env = dict(os.environ, LOAD_ACCOUNTS=str(accounts))
    if flat_out:
        env["LOAD_FLAT_OUT"] = "1"
    rate = max(users // 4, 1)
    spawning = users / rate
    # Statistics and CPU time cover the run once every user has started (and signed in once, mostly): the steady
    # state, not the sign-in burst of the first seconds.
    argv = [str(BIN / "locust"), "-f", __file__, "--headless", "-u", str(users), "-r", str(rate), "--reset-stats",
            "-t", f"{seconds + spawning:.0f}s", "--host", host, "--csv", str(out), "--only-summary",
            "--loglevel", "ERROR", *classes]
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    time.sleep(spawning)
    app_before, db_before = _cpu_seconds(server_pid, database)
    proc.wait()
    app_after, db_after = _cpu_seconds(server_pid, database)
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {"app": app_after - app_before, "db": db_after - db_before,
           "locust": own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime}
    with (out.parent / f"{out.name}_failures.csv").open() as fh:
        failures = [f"  failed {row['Occurrences']:>5} x {row['Method']} {row['Name']}: {row['Error'][:110]}"
                    for row in sorted(csv.DictReader(fh), key=lambda r: -int(r["Occurrences"]))[:6]]
    with (out.parent / f"{out.name}_stats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.update({f"cpu_{k}": str(v) for k, v in cpu.items()}, failures="\n".join(failures))
    return rows


def _print(title: str, rows: list[dict[str, str]]) -> tuple[float, float, float]:
    """Print the table; return the throughput of the work itself (every group but the one-off sign-in), per
    second and per CPU second of app server and database, and that of every request (sign-ins included)."""
    print(f"\n{title}")
    print(f"  {'endpoint group':34} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>7} "
          f"{'requests':>9}")
    work, done, cpu, everything = 0.0, 0, 0.0, 0.0
    for row in rows:
        name = "all" if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
        print(f"  {name:34} {float(row['Requests/s']):8.1f} {row['50%']:>7} {row['95%']:>7} {row['99%']:>7} "
              f"{row['Failure Count']:>7} {row['Request Count']:>9}")
        if row["Name"] == "Aggregated":
            everything = float(row["Requests/s"])
        elif row["Name"] != "sign-in":
            work += float(row["Requests/s"])
            done += int(row["Request Count"])
        cpu = float(row["cpu_app"]) + float(row["cpu_db"])
    per_cpu = done / cpu if cpu else 0.0
    last = rows[-1]
    print(f"  CPU seconds: app server {float(last['cpu_app']):.1f}, its PostgreSQL backends "
          f"{float(last['cpu_db']):.1f}, locust {float(last['cpu_locust']):.1f} (sign-ins included); "
          f"load average {os.getloadavg()[0]:.1f} after")
    print(f"  requests (sign-in aside) per CPU second of app server + database: {per_cpu:.0f}")
    if last["failures"]:
        print(last["failures"])
    return work, per_cpu, everything


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
            app_pid, bare_pid = procs[0].pid, procs[1].pid
            _print("1. the mix at a human pace (1-3 s between clicks)",
                   _locust(app_url, accounts, tmp / "paced", users=args.users, seconds=args.seconds, flat_out=False,
                           classes=mix, server_pid=app_pid, database=name))
            flat, flat_cpu, flat_all = _print("2. the mix flat out", _locust(
                app_url, accounts, tmp / "flat", users=args.users, seconds=args.seconds, flat_out=True, classes=mix,
                server_pid=app_pid, database=name))
            bare, bare_cpu, _ = _print("3. bare Flask + SQLAlchemy, one query, flat out", _locust(
                bare_url, accounts, tmp / "bare", users=args.users, seconds=args.seconds, flat_out=True,
                classes=["Bare"], server_pid=bare_pid, database=name))
            if bare and bare_cpu:
                print(f"\nthe mix over the bare endpoint (sign-in aside): throughput {flat / bare:.2f}, "
                      f"requests per CPU second {flat_cpu / bare_cpu:.2f}; every request (sign-ins included) "
                      f"{flat_all / bare:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
