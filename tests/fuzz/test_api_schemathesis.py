"""schemathesis drives the published OpenAPI document as every role: no request may get a 5xx, and every
answer must be one the document describes (status code, content type, body schema).

``FUZZ_SEED`` picks another seed and ``FUZZ_EXAMPLES`` more examples per operation, for runs by hand.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from flask import Flask
from schemathesis.engine import events

from app import db
from app.auth import oauth_service

SEED = int(os.environ.get("FUZZ_SEED", "20261204"))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
ROLES = ("patient", "doctor", "clinic_staff", "pharmacist", "admin", "oauth")


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "cache": {"enabled": False},  # each run starts from the seed alone, not from earlier runs
        "generation": {"max-examples": EXAMPLES, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": False}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": True, "max-steps": 10,
                                "inference": {"algorithms": ["location-headers", "dependency-analysis"]}}},
        "suppress-health-check": ["all"],
    })


def _credentials(role: str, app: Flask, client: Any, login: Any, factories: Any) -> dict[str, str]:
    """Headers and cookie of a signed-in ``role`` (``oauth``: a bearer token from the client-credentials grant)."""
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    if role == "oauth":
        row, secret = oauth_service.register_client(oauth_service.ClientInput(
            name="Fuzz", is_public=False, redirect_uris=[], scope="system/*.cruds", grants=["client_credentials"],
            service_user_id=doctor.id), by=factories.admin())
        db.session.commit()
        resp = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "system/*.cruds",
                                                 "client_id": row.client_id, "client_secret": secret})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return {"Authorization": f"Bearer {resp.json['access_token']}"}
    user = {"patient": patient.user, "doctor": doctor, "clinic_staff": factories.nurse(),
            "pharmacist": factories.pharmacist(), "admin": factories.admin()}[role]
    login(client, user)
    token = client.get("/api/v1/auth/csrf").json["csrf_token"]
    name = app.config["SESSION_COOKIE_NAME"]
    return {"cookie": f"{name}={client.get_cookie(name).value}", "X-CSRFToken": token}


class SignedIn:
    """Each generated request goes out as the signed-in user (schemathesis auth provider)."""

    credentials: dict[str, str] = {}

    def get(self, case: Any, ctx: Any) -> dict[str, str]:
        return self.credentials

    def set(self, case: Any, data: dict[str, str], ctx: Any) -> None:
        headers = dict(data)
        cookie = headers.pop("cookie", None)
        case.headers = {**(case.headers or {}), **headers}
        if cookie:
            name, value = cookie.split("=", 1)
            case.cookies = {**(case.cookies or {}), name: value}


@pytest.mark.parametrize("role", ROLES)
def test_no_server_error_and_every_answer_described(role, app, client, login, factories):
    headers = _credentials(role, app, client, login, factories)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=_config())
    schema.auth(refresh_interval=None)(type("Credentials", (SignedIn,), {"credentials": headers}))
    failures: set[str] = set()
    statuses: Counter[int] = Counter()
    phases: dict[str, str] = {}
    started = time.monotonic()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for check in event.recorder.checks.values():
                for result in check:
                    if result.failure_info is not None:
                        failure = result.failure_info.failure
                        failures.add(f"{failure.operation} {result.name}: {failure.title}: {failure.message[:400]}")
            statuses.update(i.response.status_code for i in event.recorder.interactions.values() if i.response)
        elif isinstance(event, events.PhaseFinished):
            phases[event.phase.name.value] = event.phase.skip_reason.value if event.phase.skip_reason else "ran"
        elif isinstance(event, events.NonFatalError):
            failures.add(f"error in {event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    print(f"\n{role}: {statuses.total()} requests in {time.monotonic() - started:.1f} s, {len(failures)} failures;"
          f" statuses {dict(sorted(statuses.items()))}; phases {phases}")
    assert statuses.total() > 100 and statuses[200] + statuses[201] > 5, "the fuzzer barely reached the API"
    assert not failures, "\n".join(sorted(failures))
