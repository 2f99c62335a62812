"""FHIR read and search latency beside the same work through the JSON API, with 10,000 patients.

    .venv/bin/python benchmarks/fhir.py [--patients 10000] [--n 200]

Creates a throw-away PostgreSQL database (TEST_PG_ADMIN_URL, default postgres@127.0.0.1), migrates it, inserts
the patients in bulk (one clinic, each with one condition), and times requests through the whole Flask stack
(in process, bearer token, access check, audit row, commit) for each pair. Prints a table; not run by the tests.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any


def timed(fn: Callable[[int], Any], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        resp = fn(i)
        out.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return out


def row(name: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(f"| {name:<44} | {len(samples):>5} | {statistics.median(samples):>8.2f} | {p95:>8.2f} |")


def seed(count: int) -> tuple[Any, list[int], str]:
    """A clinic with ``count`` patients (one condition each) and a nurse's access token."""
    import sqlalchemy as sa

    from app import db
    from app.auth import oauth_service
    from app.auth.oauth_models import OAuthToken, digest
    from app.patients.models import Condition, Patient
    from tests.factories import Factories

    f = Factories()
    nurse = f.nurse()
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    rows = [{"mrn": f"{i:08d}", "given_name": f"Given{i}", "family_name": f"Fam{i}", "given_name_search": f"given{i}",
             "family_name_search": f"fam{i}", "birth_date": date(1940, 1, 1) + timedelta(days=rng.randrange(25_000)),
             "sex": "female" if i % 2 else "male", "facility_id": f.clinic.id, "registered_by_id": nurse.id}
            for i in range(count)]
    db.session.execute(sa.insert(Patient), rows)
    ids = list(db.session.scalars(sa.select(Patient.id).order_by(Patient.id)))
    db.session.execute(sa.insert(Condition), [{"patient_id": pid, "description": "Asthma", "code": "J45.909",
                                               "status": "active"} for pid in ids])
    client, _ = oauth_service.register_client(oauth_service.ClientInput(
        name="Benchmark", is_public=False, redirect_uris=["https://bench.example/cb"], scope="user/*.rs",
        grants=["authorization_code"]), by=f.admin())
    token = secrets.token_urlsafe(24)
    db.session.add(OAuthToken(client_id=client.client_id, user_id=nurse.id, grant_type="authorization_code",
                              scope="user/*.rs", access_token_hash=digest(token), family_id=secrets.token_hex(8),
                              expires_in=86400))
    db.session.commit()
    return nurse, ids, token


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()

    from app import db
    from benchmarks.scratch import scratch_app

    with scratch_app() as app:
        with app.app_context():
            _nurse, ids, token = seed(args.patients)
        db.session.remove()
        http = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(11)  # noqa: S311
        picks = [rng.choice(ids) for _ in range(args.n)]
        prefixes = [f"fam{rng.randrange(args.patients) // 10}" for _ in range(args.n)]
        days = [(date(1940, 1, 1) + timedelta(days=rng.randrange(25_000))).isoformat() for _ in range(args.n)]

        def get(path: str, **query: Any) -> Callable[[int], Any]:
            return lambda i: http.get(path.format(pid=picks[i]), headers=headers,
                                      query_string={k: v(i) if callable(v) else v for k, v in query.items()})

        pairs = [
            ("read one patient", get("/fhir/Patient/{pid}"), get("/api/v1/patients/{pid}")),
            ("search by name prefix (20 per page)", get("/fhir/Patient", name=lambda i: prefixes[i], _count=20),
             get("/api/v1/patients", q=lambda i: prefixes[i], per_page=20)),
            ("search by birth date", get("/fhir/Patient", birthdate=lambda i: days[i]),
             get("/api/v1/patients", birth_date=lambda i: days[i])),
            ("a patient's conditions", get("/fhir/Condition", patient=lambda i: f"Patient/{picks[i]}"),
             get("/api/v1/patients/{pid}/conditions")),
        ]
        print(f"\n{args.patients} patients, {args.n} requests each, in-process Flask test client, PostgreSQL\n")
        print(f"| {'request':<44} | {'n':>5} | {'median ms':>8} | {'p95 ms':>8} |")
        print(f"|{'-' * 46}|{'-' * 7}|{'-' * 10}|{'-' * 10}|")
        for label, fhir, api in pairs:
            for fn in (fhir, api):
                fn(0)  # warm the statement cache
            row(f"FHIR  {label}", timed(fhir, args.n))
            row(f"/api  {label}", timed(api, args.n))


if __name__ == "__main__":
    main()
