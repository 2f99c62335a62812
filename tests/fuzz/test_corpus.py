"""Every committed fuzz input (seeds and the inputs that once crashed a parser) replays without a crash."""

from __future__ import annotations

import io

import pytest

from tests.fuzz.targets import CORPUS, TARGETS

CASES = [(name, path) for name in TARGETS for path in sorted((CORPUS / name).glob("*"))]


def test_every_target_has_a_corpus():
    assert {name for name, _ in CASES} == set(TARGETS)


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_replays_cleanly(name, path):
    TARGETS[name](path.read_bytes())


@pytest.mark.parametrize("crash", sorted(p.name for p in (CORPUS / "zip_ingest").glob("crash-*")))
def test_damaged_zip_uploads_are_rejected_by_name(crash, client, login, factories):
    """The zips that once crashed the reader, uploaded from a chart: a reason per file, never a 500."""
    login(client, factories.nurse())
    resp = client.post("/scans/upload", data={"files": [(io.BytesIO((CORPUS / "zip_ingest" / crash).read_bytes()),
                                                         "study.zip")]},
                       content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:400]
    results = resp.json["results"]
    assert results and all(r["status"] == "rejected" and r["reason"] for r in results), results
