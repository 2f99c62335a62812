"""Where a request of the load mix spends its time, in process (not part of the tests).

Seeds the same throw-away PostgreSQL database as ``benchmarks/load.py``, signs one user of each role in through the
real form, then calls every endpoint group of the mix ``--repeat`` times with Flask's test client. Per group it
prints the SQL statements per request, the wall time per request, and the share of that time spent in the user
load, CSRF, the audit write, template rendering and JSON. Two floors come first: a signed-in request for a CSRF
token (the user load and nothing else) and the health probe. ``--top N`` adds cProfile's N costliest functions per
group. Run ``.venv/bin/python benchmarks/profile_mix.py``.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.load import PASSWORD, _seed  # noqa: E402

PHASES: dict[str, tuple[str, ...]] = {
    # (module, function) pairs whose cumulative time is reported, by the phase they stand for.
    "user load": ("app/auth/service.py:load_session_user",),
    "csrf": ("flask_wtf/csrf.py:protect",),
    "audit write": ("app/audit/service.py:record",),
    "templates": ("flask/templating.py:render_template",),
    "json": ("flask/json/provider.py:dumps", "json/__init__.py:dumps"),
}


def _cumulative(stats: pstats.Stats, suffixes: tuple[str, ...]) -> float:
    total = 0.0
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if any(f"{path}:{func}".endswith(s) for s in suffixes):
            total += ct
    return total


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--sort", default="cumulative", choices=("cumulative", "tottime"),
                        help="order of --top: time including callees (default) or in the function itself")
    parser.add_argument("--sql", action="store_true", help="list each group's statements with their time")
    parser.add_argument("--only", default="", help="profile only the groups whose name contains this")
    args = parser.parse_args()
    admin = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"hospital_profile_{uuid.uuid4().hex[:8]}"
    url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            accounts = _seed(url, tmp)
            _profile(url, tmp, accounts, args.repeat, args.top, args.only, args.sql, args.sort)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


def _profile(url: str, tmp: Path, accounts: dict[str, Any], repeat: int, top: int, only: str,
             sql: bool, sort: str = "cumulative") -> None:
    from app import create_app
    from app.config import Config

    os.environ.update(DATABASE_URL=url, SECRET_KEY="profile-" + "k" * 40, DICOM_PORT="0",
                      HOSPITAL_INSTANCE_PATH=str(tmp), HOSPITAL_STORAGE_PATH=str(tmp / "objects"),
                      HOSPITAL_MFA_REQUIRED_ROLES="")
    app = create_app(Config.from_env())
    statements = [0]
    timings: dict[str, list[float]] = {}

    def before(conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        statements[0] += 1
        conn.info["started"] = (" ".join(statement.split())[:110], time.perf_counter())

    def after(conn: Any, *_a: Any) -> None:
        text, started = conn.info["started"]
        timings.setdefault(text, []).append(time.perf_counter() - started)

    engine = app.extensions["db_engine"]
    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)

    def signed_in(role: str) -> tuple[Any, str]:
        client = app.test_client()
        token = client.get("/api/v1/auth/csrf").get_json()["csrf_token"]
        resp = client.post("/sign-in", data={"email": accounts[role][0]["email"], "password": PASSWORD},
                           headers={"X-CSRFToken": token})
        assert resp.status_code in (302, 303), resp.status_code
        return client, client.get("/api/v1/auth/csrf").get_json()["csrf_token"]

    patient, _ = signed_in("patients")
    nurse, nurse_csrf = signed_in("nurses")
    doctor, _ = signed_in("doctors")
    pharmacist, _ = signed_in("pharmacists")
    study = next(s for s in accounts["studies"] if s["doctor"] == accounts["doctors"][0]["email"])
    dicom_json = {"Accept": "application/dicom+json"}
    groups: dict[str, Callable[[], Any]] = {
        "floor: signed-in CSRF token": lambda: patient.get("/api/v1/auth/csrf"),
        "floor: health probe": lambda: patient.get("/healthz"),
        "patient: my record": lambda: patient.get("/api/v1/me/record"),
        "patient: my prescriptions": lambda: patient.get("/me/prescriptions"),
        "patient: free slots": lambda: patient.get(
            f"/api/v1/consults/doctors/{random.choice(accounts['doctor_ids'])}/slots"),  # noqa: S311
        "staff: search": lambda: nurse.get("/api/v1/patients", query_string={"q": "Fam"}),
        "staff: chart": lambda: nurse.get(f"/patients/{random.choice(accounts['patient_ids'])}"),  # noqa: S311
        "staff: chart a condition": lambda: nurse.post(
            f"/api/v1/patients/{random.choice(accounts['patient_ids'])}/conditions",  # noqa: S311
            json={"description": "Seasonal rhinitis"}, headers={"X-CSRFToken": nurse_csrf}),
        "doctor: QIDO studies": lambda: doctor.get("/dicomweb/studies", query_string={"limit": "20"},
                                                   headers=dicom_json),
        "doctor: WADO metadata": lambda: doctor.get(
            f"/dicomweb/studies/{study['study']}/series/{study['series']}/metadata", headers=dicom_json),
        "pharmacist: queue": lambda: pharmacist.get("/pharmacy"),
    }
    print(f"{repeat} requests per group, in process (no HTTP server), times in ms per request: 'ms' unprofiled, "
          "the phases (and --sql, --top) from a second, profiled pass")
    print(f"  {'endpoint group':28} {'status':>6} {'SQL':>5} {'ms':>6} " + " ".join(f"{p:>11}" for p in PHASES))
    for name, call in groups.items():
        if only not in name:
            continue
        status = call().status_code  # warm caches and the pool
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        elapsed = (time.perf_counter() - start) / repeat * 1000  # unprofiled
        statements[0] = 0
        timings.clear()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(repeat):
            call()
        profiler.disable()
        stats = pstats.Stats(profiler)
        phases = [_cumulative(stats, s) / repeat * 1000 for s in PHASES.values()]
        print(f"  {name:28} {status:>6} {statements[0] / repeat:5.1f} {elapsed:6.1f} "
              + " ".join(f"{p:11.2f}" for p in phases))
        if sql:
            for text, spent in sorted(timings.items(), key=lambda kv: -sum(kv[1])):
                print(f"      {len(spent) / repeat:4.1f} x {sum(spent) / len(spent) * 1000:6.2f} ms  {text}")
        if top:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
            print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    print("the phases include cProfile's own overhead (up to about 2x on pure-Python code)")


if __name__ == "__main__":
    raise SystemExit(main())
