"""What a request costs the database: the health probe none, a page each list once (regression guards for
benchmarks/load.py; the figures are in docs/scaling.md)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent
from tests.prescriptions.conftest import drug

CHART_STATEMENTS_MAX = 22
"""Statements of a chart page with two prescriptions and a care team, the test rig's savepoints included (31 before
the lists were read once)."""


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def _repeated_reads(seen: list[str]) -> dict[str, int]:
    reads = Counter(re.sub(r"\s+", " ", s) for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH")))
    return {s[:120]: n for s, n in reads.items() if n > 1}


def _signed(client: Any, patient_id: int, code: str) -> int:
    body = dict(drug_id=drug(code).id, dose_units=1, frequency_per_day=3, duration_days=7, quantity=21,
                refills=0, instructions="After meals")
    rx = client.post(f"/api/v1/patients/{patient_id}/medication-requests", json=body).json
    signed = client.post(f"/api/v1/medication-requests/{rx['id']}/sign", json={})
    assert signed.status_code == 200, signed.json
    return rx["id"]


def test_health_probe_reads_nothing_even_with_a_session_cookie(client, factories, login, engine):
    login(client, factories.nurse())
    with statements(engine) as seen:
        resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_data(as_text=True) == "ok"
    assert seen == []
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/patients").status_code == 200  # still signed in afterwards


def test_chart_reads_each_list_once_and_audits_the_prescriptions_read_once(make_client, factories, login, engine):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    doc = make_client()
    login(doc, doctor)
    rx_ids = {_signed(doc, patient.id, code) for code in ("AMOX500", "LISI10")}
    with statements(engine) as seen:
        page = doc.get(f"/patients/{patient.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert all(f"/prescriptions/{rx_id}" in text for rx_id in rx_ids)
    assert doctor.full_name in text  # the care team and the assignment picker
    assert _repeated_reads(seen) == {}
    assert len(seen) <= CHART_STATEMENTS_MAX, "\n".join(s[:100] for s in seen)
    lists = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.patient_id == patient.id,
                                                           AuditEvent.action == "prescription.list")).all()
    assert len(lists) == 1 and {str(i) for i in lists[0].detail["ids"]} == rx_ids


def test_my_prescriptions_reads_the_supply_of_all_prescriptions_at_once(make_client, factories, login, engine):
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    patient_id, account = patient.id, patient.user
    doc, me = make_client(), make_client()
    login(doc, doctor), login(me, account)
    for code in ("AMOX500", "LISI10", "SALB100"):
        _signed(doc, patient_id, code)
    with statements(engine) as seen:
        page = me.get("/me/prescriptions")
    assert page.status_code == 200
    assert page.get_data(as_text=True).count("21 of 21 ") == 3
    assert sum("sum(dispense.quantity)" in s for s in seen) == 1


def test_a_later_instance_of_a_stored_series_reads_its_series_and_study_once(app_ctx, factories, engine):
    """The DICOM listener stores one instance per transaction: after the first, the study and series rows come
    from one query (was three: the other-study check, the study, the series); the other read is the reading
    service's look for an order waiting for the study."""
    import io

    from pydicom.uid import generate_uid

    from app.imaging.ingest import store_one
    from tests.imaging.dicomgen import ct_slice

    nurse = factories.nurse()
    study_uid, series_uid = generate_uid(), generate_uid()

    def send(n: int) -> str:
        result = store_one(io.BytesIO(ct_slice(study_uid=study_uid, series_uid=series_uid, number=n)),
                           filename=f"{n}.dcm", by=None, facility_id=nurse.facility_id, source="c-store",
                           actor_name="DICOM AE SCANNER")
        return result.status

    assert send(1) == "stored"
    with statements(engine) as seen:
        assert send(2) == "stored"
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")
             and re.search(r"FROM imaging_(series|study)\b", s)]
    assert len(reads) == 2, reads
