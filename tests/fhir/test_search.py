"""Searchset Bundles: paging links, sorting, _include/_revinclude, and FHIR's lenient vs strict handling."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from app import db
from app.auth.models import User
from tests.fhir.conftest import validate


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_next_links_page_through_every_match_once(world, client, bearer, factories):
    for n in range(3):
        factories.patient(facility=world.patient.facility, given_name=f"Page{n}", family_name="Pager")
    headers = bearer(world.nurse, "user/*.rs")
    first = client.get("/fhir/Patient", query_string={"family": "pager", "_count": 2}, headers=headers).get_json()
    assert first["total"] == 3
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "_count=2" in links["self"] and "next" in links
    second = client.get(_path(links["next"]), headers=headers).get_json()
    assert "next" not in {link["relation"] for link in second["link"]}
    names = [e["resource"]["name"][0]["given"][0] for e in first["entry"] + second["entry"]]
    assert sorted(names) == ["Page0", "Page1", "Page2"]


def test_sort_by_birthdate_both_ways(world, client, bearer, factories):
    from datetime import date

    factories.patient(facility=world.patient.facility, family_name="Sorter", given_name="Old",
                      birth_date=date(1940, 1, 1))
    factories.patient(facility=world.patient.facility, family_name="Sorter", given_name="Young",
                      birth_date=date(2001, 1, 1))
    headers = bearer(world.nurse, "user/*.rs")

    def given(sort: str) -> list[str]:
        bundle = client.get("/fhir/Patient", query_string={"family": "sorter", "_sort": sort}, headers=headers)
        return [e["resource"]["name"][0]["given"][0] for e in bundle.get_json()["entry"]]

    assert given("birthdate") == ["Old", "Young"]
    assert given("-birthdate") == ["Young", "Old"]


def test_include_and_revinclude(world, client, bearer):
    headers = bearer(world.doctor, "user/*.rs")
    bundle = client.get("/fhir/MedicationRequest", headers=headers, query_string=[
        ("patient", f"Patient/{world.patient.id}"), ("_include", "MedicationRequest:patient"),
        ("_include", "MedicationRequest:medication")]).get_json()
    validate(bundle)
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("MedicationRequest", "match"), ("Patient", "include"), ("Medication", "include")}
    history = client.get("/fhir/Patient", headers=headers, query_string={
        "_id": world.patient.id, "_revinclude": "Provenance:target"}).get_json()
    provenance = [e["resource"] for e in history["entry"] if e["resource"]["resourceType"] == "Provenance"]
    assert provenance and provenance[0]["target"] == [{"reference": f"Patient/{world.patient.id}"}]
    registrar = db.session.get(User, world.patient.registered_by_id)
    assert provenance[0]["agent"][0]["who"]["display"] == registrar.full_name
    assert provenance[0]["activity"]["coding"][0]["code"] == "CREATE"
    bad = client.get("/fhir/Patient", query_string={"_include": "Patient:nonsense"}, headers=headers)
    assert bad.status_code == 400 and bad.get_json()["issue"][0]["code"] == "not-supported"


def test_unknown_parameters_are_ignored_and_reported_unless_strict(world, client, bearer):
    headers = bearer(world.nurse, "user/*.rs")
    lenient = client.get("/fhir/Patient", query_string={"family": "gonzalez", "eye-colour": "blue"}, headers=headers)
    assert lenient.status_code == 200
    bundle = lenient.get_json()
    validate(bundle)
    assert bundle["total"] == 1
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "eye-colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "eye-colour" not in bundle["link"][0]["url"]
    strict = client.get("/fhir/Patient", query_string={"family": "gonzalez", "eye-colour": "blue"},
                        headers=headers | {"Prefer": "handling=strict"})
    assert strict.status_code == 400
    body = strict.get_json()
    validate(body)
    assert body["issue"][0]["code"] == "not-supported" and "eye-colour" in body["issue"][0]["diagnostics"]


def test_bad_search_values_get_a_clear_operation_outcome(world, client, bearer):
    headers = bearer(world.nurse, "user/*.rs")
    for query, words in [({"birthdate": "last tuesday"}, "not a FHIR date"), ({"_count": "lots"}, "_count"),
                         ({"_sort": "shoe-size"}, "shoe-size")]:
        resp = client.get("/fhir/Patient", query_string=query, headers=headers | {"Prefer": "handling=strict"})
        assert resp.status_code == 400, query
        assert words in resp.get_json()["issue"][0]["diagnostics"]
    huge = client.get("/fhir/Patient", query_string={"_count": 100000}, headers=headers).get_json()
    assert huge["resourceType"] == "Bundle"
    assert client.get("/fhir/Patient", query_string={"_count": 100000},
                      headers=headers | {"Prefer": "handling=strict"}).status_code == 400
    assert client.get("/fhir/Nonsense", headers=headers).get_json()["resourceType"] == "OperationOutcome"


def test_xml_and_batch_bundles_are_refused_clearly(world, client, bearer):
    headers = bearer(world.nurse, "user/*.cruds")
    xml = client.get("/fhir/Patient", query_string={"_format": "xml"}, headers=headers)
    assert xml.status_code == 406 and "JSON only" in xml.get_json()["issue"][0]["diagnostics"]
    accept_xml = client.get("/fhir/Patient", headers=headers | {"Accept": "application/fhir+xml"})
    assert accept_xml.status_code == 406
    batch = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                       "entry": [{"resource": {"resourceType": "Patient"}}] * 5000},
                        headers=headers)
    assert batch.status_code == 405
    outcome = batch.get_json()
    validate(outcome)
    assert "batch or transaction" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", [
    "/fhir/Patient?_id=99999999999999999999999", "/fhir/Patient/99999999999999999999999",
    "/fhir/Condition?patient=Patient/99999999999999999999", "/fhir/Patient?_offset=99999999999999999999",
    "/fhir/Medication?status=maybe", "/fhir/Communication?status=sideways", "/fhir/AuditEvent?outcome=12",
    "/fhir/Patient?name=%00abc", "/fhir/Patient?birthdate=ge", "/fhir/Patient?birthdate=9999",
    "/fhir/Patient?birthdate=2024-13-45", "/fhir/Slot?start=ge2024-02-30", "/fhir/Slot/abc-nonsense",
    "/fhir/Appointment?date=lt0000", "/fhir/Patient?_sort=,,,", "/fhir/Patient?_include=:",
    "/fhir/Patient?_revinclude=Provenance", "/fhir/Patient/%20/$everything",
])
def test_odd_queries_never_fail_on_the_server(world, client, bearer, path):
    resp = client.get(path, headers=bearer(world.admin, "user/*.rs"))
    assert resp.status_code < 500, resp.get_json()
    assert resp.get_json()["resourceType"] in ("Bundle", "OperationOutcome", "Patient")


@pytest.mark.parametrize("body", [
    "[" * 5000 + "]" * 5000, '{"resourceType": "Patient", "address": [{"line": 5}]}',
    '{"resourceType": "Patient", "name": [{"family": "A", "given": ["B"]}], "gender": "male", '
    '"birthDate": "1990-01-01", "address": [{"line": ["x"], "city": 3}]}',
    '{"resourceType": "Patient", "name": [7]}', '{"resourceType": "Patient", "telecom": "phone"}',
])
def test_odd_resources_never_fail_on_the_server(world, client, bearer, body):
    resp = client.post("/fhir/Patient", data=body,
                       headers=bearer(world.nurse, "user/*.cruds") | {"Content-Type": "application/fhir+json"})
    assert 400 <= resp.status_code < 500, resp.get_json()
    assert resp.get_json()["resourceType"] == "OperationOutcome"


def test_odd_references_in_writes_never_fail_on_the_server(world, client, bearer):
    body = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
            "medicationReference": {"reference": "Medication/99999999999999999999"},
            "subject": {"reference": "Patient/99999999999999999999"}}
    resp = client.post("/fhir/MedicationRequest", json=body, headers=bearer(world.doctor, "user/*.cruds"))
    assert resp.status_code == 422 and resp.get_json()["resourceType"] == "OperationOutcome"
