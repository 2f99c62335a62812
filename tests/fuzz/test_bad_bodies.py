"""Malformed bodies and impossible ids get a 4xx problem naming the problem on every API write, never a 500."""

from __future__ import annotations

import re

import pytest

BODIES = {
    "not UTF-8": (b"\xff\xfe\x00garbage", "not valid UTF-8"),
    "not JSON": (b"{'given_name': 'Grace'", "not valid JSON"),
    "a NUL byte": (b"\x00", "not valid JSON"),
}


def _api_writes(app):
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and not rule.endpoint.startswith("api-docs"):
            for method in sorted(rule.methods & {"POST", "PUT", "PATCH", "DELETE"}):
                yield method, re.sub(r"<int:[^>]+>", "1", re.sub(r"<(?!int:)[^>]+>", "x", rule.rule))


@pytest.mark.parametrize("kind", BODIES)
def test_every_api_write_refuses_a_malformed_body_by_name(kind, app, client, login, factories):
    login(client, factories.nurse())
    body, reason = BODIES[kind]
    writes = list(_api_writes(app))
    assert len(writes) > 30
    for method, path in writes:
        resp = client.open(path, method=method, data=body, content_type="application/json")
        assert resp.status_code == 400, (method, path, resp.status_code, resp.get_data(as_text=True)[:300])
        assert resp.mimetype == "application/problem+json"
        assert resp.json["type"] == "/problems/malformed-body" and reason in resp.json["detail"]


def test_an_array_where_an_object_is_expected(client, login, factories):
    login(client, factories.nurse())
    resp = client.post("/api/v1/patients", json=[{"given_name": "Grace"}])
    assert resp.status_code == 400
    assert resp.json["detail"] == "The body must be a JSON object, not an array."
    scalar = client.post("/api/v1/patients", json="Grace")
    assert scalar.status_code == 400 and scalar.json["detail"].endswith("not a string.")


def test_ids_beyond_the_databases_range_are_not_found(client, login, factories):
    login(client, factories.nurse())
    for path in ("/api/v1/patients/744895992331289886720", "/api/v1/patients/2147483648/allergies",
                 "/api/v1/consults/appointments/99999999999999999999/chat",
                 "/api/v1/consults/appointments/3000000000/signals"):  # GET and POST rules: 404, not 405
        resp = client.get(path)
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json", path
    assert client.get("/patients/744895992331289886720").status_code == 404


def test_an_id_in_the_body_past_the_range_is_a_clear_422(client, login, factories):
    login(client, factories.nurse())
    patient = factories.patient()
    resp = client.post(f"/api/v1/patients/{patient.id}/care-team", json={"doctor_id": 2**40, "reason": "x"})
    assert resp.status_code in (404, 422), resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
