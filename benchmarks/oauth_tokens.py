"""Cost of the authorization server and of bearer authentication, in-process (Flask test client).

Run: ``DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/bench_oauth .venv/bin/python benchmarks/oauth_tokens.py``
(defaults to a temporary SQLite file). Prints a table; not run by the tests.
"""

from __future__ import annotations

import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

from app import create_app, db
from app.auth import oauth_service
from app.auth.models import Role, User
from app.auth.passwords import hash_password
from app.cli import migrate
from app.config import TestConfig
from app.facilities.models import Facility, FacilityKind

N = int(os.environ.get("BENCH_N", "300"))


def _timed(label: str, fn, n: int = N) -> tuple[str, float, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return label, statistics.median(samples) * 1000, n / sum(samples)


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    cfg = TestConfig()
    cfg.DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{tmp / 'bench.db'}")
    cfg.INSTANCE_PATH = tmp
    migrate(cfg.DATABASE_URL)
    app = create_app(cfg)
    with app.app_context():
        hosp = Facility(code=f"B{time.time_ns() % 10**9}", name="Bench Hospital", kind=FacilityKind.HOSPITAL)
        db.session.add(hosp)
        db.session.flush()
        admin = User(email=f"admin{time.time_ns()}@bench.example", full_name="Admin", role=Role.ADMIN,
                     password_hash=hash_password("x" * 12))
        svc = User(email=f"svc{time.time_ns()}@bench.example", full_name="Service", role=Role.DOCTOR,
                   facility_id=hosp.id, password_hash=hash_password("x" * 12))
        db.session.add_all([admin, svc])
        db.session.flush()
        client, secret = oauth_service.register_client(oauth_service.ClientInput(
            name="Bench", is_public=False, redirect_uris=[], scope="system/*.rs", grants=["client_credentials"],
            service_user_id=svc.id), by=admin)
        db.session.commit()
        client_id = client.client_id
    http = app.test_client()
    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()

    def issue() -> str:
        resp = http.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                         headers={"Authorization": basic})
        assert resp.status_code == 200, resp.data
        return resp.json["access_token"]

    token = issue()
    rows = [
        _timed("token endpoint (client_credentials)", issue),
        _timed("GET /api/v1/me with bearer", lambda: http.get("/api/v1/me", headers={
            "Authorization": f"Bearer {token}"})),
        _timed("POST /oauth/introspect", lambda: http.post("/oauth/introspect", data={"token": token},
                                                           headers={"Authorization": basic})),
        _timed("GET /oauth/jwks", lambda: http.get("/oauth/jwks")),
    ]
    print(f"database: {cfg.DATABASE_URL.split('@')[-1]}  n={N}")
    print(f"{'operation':42} {'median ms':>10} {'req/s':>8}")
    for label, median, rate in rows:
        print(f"{label:42} {median:10.2f} {rate:8.0f}")


if __name__ == "__main__":
    main()
