"""Key flows, also run on the embedded SQLite database (``TEST_DB=sqlite pytest -m smoke``)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.smoke


def test_nurse_registers_patient_and_finds_them_by_name(client, factories, login):
    nurse = factories.nurse()
    login(client, nurse)
    resp = client.post("/api/v1/patients", json={"given_name": "Ada", "family_name": "Lovelace",
                                                 "birth_date": "1990-12-10", "sex": "female",
                                                 "allergies": [{"substance": "Penicillin", "severity": "severe"}]})
    assert resp.status_code == 201, resp.json
    assert len(resp.json["mrn"]) == 8
    found = client.get("/api/v1/patients", query_string={"q": "love"}).json
    assert [p["family_name"] for p in found["items"]] == ["Lovelace"]
    page = client.get(f"/patients/{resp.json['id']}")
    assert page.status_code == 200 and b"Penicillin" in page.data


def test_patient_sees_only_own_record(make_client, factories, login):
    me = factories.patient(with_account=True, given_name="Own")
    other = factories.patient(given_name="Other")
    browser = make_client()
    login(browser, me.user)
    assert browser.get("/api/v1/me/record").json["given_name"] == "Own"
    assert browser.get(f"/api/v1/patients/{other.id}").status_code == 404
