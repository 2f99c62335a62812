"""The DICOMweb read path: every read audited by the statement that reads it, one database round trip per
request, and what makes that safe (autocommit reads, the pool's check of a connection at checkout)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from psycopg import pq
from pydicom.uid import generate_uid

from app import db
from app.audit.models import AuditEvent, Outcome
from app.auth.models import User
from tests.conftest import PASSWORD, PG_ADMIN_URL
from tests.imaging.dicomgen import ct_slice, stow_body

postgresql_only = pytest.mark.skipif(os.environ.get("TEST_DB") == "sqlite",
                                     reason="PostgreSQL's connections and wire protocol")


def _events(action: str, *actors: User) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.action == action, AuditEvent.actor_id.in_([a.id for a in actors])).order_by(AuditEvent.id)))


@pytest.mark.smoke
def test_each_read_writes_its_audit_event(client: Any, login: Any, factories: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, ctype = stow_body([ct_slice(patient_id=patient.mrn, study_uid=study, series_uid=series, sop_uid=sop)])
    assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"

    found = json.loads(client.get(f"/dicomweb/studies?PatientID={patient.mrn}").data)
    assert len(found) == 1
    assert json.loads(client.get("/dicomweb/studies?PatientID=NOBODY").data) == []
    assert client.get(f"{base}/frames/1").status_code == 200
    assert client.get(f"{base}/rendered").status_code == 200

    searches = _events("imaging.study.search", nurse)
    assert [(e.detail, e.actor_id, e.outcome) for e in searches] == [
        ({"results": 1}, nurse.id, Outcome.SUCCESS), ({"results": 0}, nurse.id, Outcome.SUCCESS)]
    [frame_read] = _events("imaging.frames.read", nurse)
    [render_read] = _events("imaging.rendered.read", nurse)
    instance_id = db.session.scalar(sa.text("SELECT id FROM imaging_instance WHERE sop_instance_uid = :u"), {"u": sop})
    for event in (frame_read, render_read):
        assert (event.patient_id, event.resource_type, event.resource_id, event.actor_role) == (
            patient.id, "ImagingInstance", str(instance_id), "clinic_staff")
    client.post("/sign-out")

    outsider = factories.nurse(facility=factories.facility())  # another clinic's staff
    login(client, outsider)
    assert client.get(f"{base}/frames/1").status_code == 404
    [refused] = _events("imaging.frames.read", outsider)
    assert (refused.outcome, refused.resource_id, refused.patient_id) == (Outcome.DENIED, sop, None)


# ---------------------------------------------------------------- against the real engine (no test transaction)


class RoundTrips:
    """Counts the database round trips of each request: the server's ReadyForQuery messages in libpq's trace
    of every connection the engine opens while this is installed (psycopg's automatic statement preparation,
    a one-off extra round trip per statement and connection, is turned off on them)."""

    def __init__(self, engine: sa.Engine, trace: Path) -> None:
        self.engine, self.trace, self.connections = engine, trace, []
        self._out = trace.open("a")

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.prepare_threshold = None
        self.connections.append(dbapi_conn)
        self._start(dbapi_conn)

    def _start(self, dbapi_conn: Any) -> None:
        dbapi_conn.pgconn.trace(self._out.fileno())
        dbapi_conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def _flush(self) -> None:
        for conn in self.connections:
            if not conn.closed:
                conn.pgconn.untrace()  # flushes libpq's buffer
                self._start(conn)

    def of(self, request: Callable[[], Any]) -> tuple[int, list[str]]:
        """(round trips, statements sent) of one call."""
        self._flush()
        start, busy = self.trace.stat().st_size, self.engine.pool.checkedout()
        request()
        deadline = time.monotonic() + 5
        while self.engine.pool.checkedout() > busy and time.monotonic() < deadline:
            time.sleep(0.005)  # the server thread returns its connection just after the response is sent
        self._flush()
        text = self.trace.read_text()[start:]
        sent = [line.split("\t", 3)[-1].strip(' "')[:60] for line in text.splitlines()
                if line.startswith("F\t") and ("\tParse\t" in line or "\tQuery\t" in line)]
        return text.count("\tReadyForQuery\t"), sent

    def __enter__(self) -> RoundTrips:
        self.engine.dispose()  # every connection from now on is a traced one
        sa.event.listen(self.engine, "connect", self._on_connect)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa.event.remove(self.engine, "connect", self._on_connect)
        self.engine.dispose()
        self._out.close()


@pytest.fixture
def live_scan(live_server: str, live_factories: Any) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    nurse = live_factories.nurse(email=f"read-path-{tag}@test.example")
    patient = live_factories.patient(facility=nurse.facility)
    s = requests.Session()
    token = s.get(f"{live_server}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    assert s.post(f"{live_server}/sign-in", data={"email": nurse.email, "password": PASSWORD, "csrf_token": token},
                  allow_redirects=False, timeout=10).status_code == 302
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, ctype = stow_body([ct_slice(patient_id=patient.mrn, study_uid=study, series_uid=series, sop_uid=sop,
                                      size=128)])
    token = s.get(f"{live_server}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    assert s.post(f"{live_server}/dicomweb/studies", data=body, timeout=30,
                  headers={"Content-Type": ctype, "X-CSRFToken": token}).status_code == 200
    yield {"session": s, "nurse": nurse, "patient": patient, "sop": sop,
           "base": f"{live_server}/dicomweb/studies/{study}/series/{series}/instances/{sop}"}


def _committed_events(engine: sa.Engine, actor_id: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(a, o) for a, o in conn.execute(sa.text(
            "SELECT action, outcome FROM audit_event WHERE actor_id = :a AND action LIKE 'imaging.%.read' "
            "OR actor_id = :a AND action LIKE 'imaging.%.search' ORDER BY id"), {"a": actor_id})]


@postgresql_only
def test_one_round_trip_per_read_over_http(live_scan: dict[str, Any], engine: sa.Engine, live_server: str,
                                           tmp_path: Path) -> None:
    """The access-checked read with its audit INSERT and the session check: no user load, ping, BEGIN or COMMIT.
    (The scan's upload in ``live_scan`` loaded the account, so this process keeps it.)"""
    s, base = live_scan["session"], live_scan["base"]
    qido = f"{live_server}/dicomweb/studies?PatientID={live_scan['patient'].mrn}"
    calls = {
        "search": lambda: s.get(qido, timeout=10).json(),
        "frame": lambda: s.get(f"{base}/frames/1", timeout=10).content,
        "rendered": lambda: s.get(f"{base}/rendered", headers={"Accept": "image/jpeg"}, timeout=10).content,
    }
    with RoundTrips(engine, tmp_path / "libpq.trace") as trips:
        for name, call in calls.items():
            for _ in range(2):  # the first rendered request renders, the second is a cache hit
                count, sent = trips.of(call)
                assert count == 1, (name, sent)
                assert sent[0].startswith("WITH audit_insert AS"), (name, sent)
    frame = s.get(f"{base}/frames/1", timeout=10)  # parts already in memory go out with their length
    assert "Transfer-Encoding" not in frame.headers and int(frame.headers["Content-Length"]) == len(frame.content)
    assert len(frame.content) > 128 * 128 * 2
    assert _committed_events(engine, live_scan["nurse"].id) == [
        ("imaging.study.search", "success")] * 2 + [("imaging.frames.read", "success")] * 2 + [
        ("imaging.rendered.read", "success")] * 2 + [("imaging.frames.read", "success")]


def _change_account(engine: sa.Engine, user_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(User).where(User.id == user_id).values(**values))


@pytest.mark.smoke
@pytest.mark.parametrize("change", ["deactivated", "password reset"])
def test_an_ended_session_reads_nothing_even_from_a_warm_process(
        live_scan: dict[str, Any], engine: sa.Engine, live_server: str, change: str) -> None:
    """The process keeps the account it loaded, but every read re-checks it: a deactivated account or a reset
    password (a new session epoch) ends access on the very next read, and no success is put on the record."""
    s, base, nurse = live_scan["session"], live_scan["base"], live_scan["nurse"]
    qido = f"{live_server}/dicomweb/studies?PatientID={live_scan['patient'].mrn}"
    assert s.get(f"{base}/frames/1", timeout=10).status_code == 200  # the account is now kept in the process
    assert len(s.get(qido, timeout=10).json()) == 1
    before = _committed_events(engine, nurse.id)
    _change_account(engine, nurse.id, **({"active": False} if change == "deactivated" else
                                         {"session_epoch": User.session_epoch + 1}))
    for url in (f"{base}/frames/1", f"{base}/rendered", qido, f"{base}/metadata",
                live_scan["base"].rsplit("/instances/", 1)[0] + "/metadata"):
        resp = s.get(url, timeout=10, headers={"Accept": "application/dicom+json"})
        assert resp.status_code == 401, (url, resp.status_code)
        assert resp.headers["Content-Type"] == "application/problem+json"
    assert _committed_events(engine, nurse.id) == before


@pytest.mark.smoke
def test_a_nurse_moved_to_another_clinic_reads_as_the_new_clinic_at_once(
        live_scan: dict[str, Any], engine: sa.Engine, live_server: str, live_factories: Any) -> None:
    """A clinic change keeps the session: the next read follows the account's new clinic, not the kept copy."""
    s, base, nurse = live_scan["session"], live_scan["base"], live_scan["nurse"]
    assert s.get(f"{base}/frames/1", timeout=10).status_code == 200
    elsewhere = live_factories.facility()
    other_patient = live_factories.patient(facility=elsewhere)
    mover = live_factories.nurse(facility=elsewhere, email=f"read-path-mover-{uuid.uuid4().hex[:8]}@test.example")
    t = requests.Session()
    token = t.get(f"{live_server}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    t.post(f"{live_server}/sign-in", data={"email": mover.email, "password": PASSWORD, "csrf_token": token},
           timeout=10)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, ctype = stow_body([ct_slice(patient_id=other_patient.mrn, study_uid=study, series_uid=series,
                                      sop_uid=sop, size=64)])
    token = t.get(f"{live_server}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    assert t.post(f"{live_server}/dicomweb/studies", data=body, timeout=30,
                  headers={"Content-Type": ctype, "X-CSRFToken": token}).status_code == 200
    there = f"{live_server}/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
    assert s.get(there, timeout=10).status_code == 404

    _change_account(engine, nurse.id, facility_id=elsewhere.id)
    assert s.get(there, timeout=10).status_code == 200
    assert s.get(f"{base}/frames/1", timeout=10).status_code == 404
    assert len(s.get(f"{live_server}/dicomweb/studies?PatientID={other_patient.mrn}", timeout=10).json()) == 1


@pytest.mark.smoke
def test_reads_over_http_are_audited_and_refusals_too(live_scan: dict[str, Any], live_factories: Any,
                                                      live_server: str, engine: sa.Engine) -> None:
    """Through the real engine (autocommit reads), on PostgreSQL and on the embedded SQLite database."""
    s, base = live_scan["session"], live_scan["base"]
    assert s.get(f"{base}/frames/1", timeout=10).status_code == 200
    assert s.get(f"{base}/rendered", timeout=10).headers["Content-Type"] == "image/jpeg"
    assert len(s.get(f"{live_server}/dicomweb/studies?PatientID={live_scan['patient'].mrn}", timeout=10).json()) == 1
    assert _committed_events(engine, live_scan["nurse"].id) == [
        ("imaging.frames.read", "success"), ("imaging.rendered.read", "success"), ("imaging.study.search", "success")]
    other = live_factories.nurse(facility=live_factories.facility(),
                                 email=f"read-path-other-{uuid.uuid4().hex[:8]}@test.example")
    s = requests.Session()
    token = s.get(f"{live_server}/api/v1/auth/csrf", timeout=10).json()["csrf_token"]
    s.post(f"{live_server}/sign-in", data={"email": other.email, "password": PASSWORD, "csrf_token": token},
           timeout=10)
    resp = s.get(f"{live_scan['base']}/frames/1", timeout=10)
    assert resp.status_code == 404 and resp.headers["Content-Type"] == "application/problem+json"
    assert _committed_events(engine, other.id) == [("imaging.frames.read", "denied")]


@contextlib.contextmanager
def _autocommit_unit(app: Flask, user: User) -> Iterator[User]:
    """A request's unit of work without a transaction (as a DICOMweb read runs), with ``user`` loaded in it."""
    db.session.remove()
    with app.test_request_context("/"):
        db.begin_autocommit()
        me = db.session.get(User, user.id)
        assert me is not None
        yield me
        db.session.remove()


@pytest.mark.smoke
def test_larger_flush_in_an_autocommit_unit_of_work_is_atomic(app: Flask, live_factories: Any,
                                                               engine: sa.Engine) -> None:
    """Only single-row writes run without a transaction: a flush of several rows that fails keeps none."""
    user = live_factories.nurse(email=f"read-path-atomic-{uuid.uuid4().hex[:8]}@test.example")
    action = f"test.atomic.{uuid.uuid4().hex[:8]}"
    with _autocommit_unit(app, user) as me:
        db.session.add(AuditEvent(occurred_at=db.utcnow(), action=action, outcome=Outcome.SUCCESS))
        me.facility_id = None  # clinic staff without a clinic: refused by a CHECK constraint
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).where(AuditEvent.action == action)) == 0
    with _autocommit_unit(app, user) as me:  # and one that succeeds is committed whole
        db.session.add(AuditEvent(occurred_at=db.utcnow(), action=action, outcome=Outcome.SUCCESS))
        me.full_name = "Renamed Nurse"
        db.session.commit()
    with engine.connect() as conn:
        assert conn.scalar(sa.select(User.full_name).where(User.id == user.id)) == "Renamed Nurse"
        assert conn.scalar(sa.select(sa.func.count()).where(AuditEvent.action == action)) == 1


@postgresql_only
def test_pool_replaces_a_connection_the_server_ended(engine: sa.Engine) -> None:
    """No pre-ping round trip, yet a pooled connection whose backend was terminated is not handed out."""
    engine.dispose()
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        fd = conn.connection.dbapi_connection.fileno()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    select.select([fd], [], [], 5)  # the server's goodbye has arrived
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid


@pytest.mark.smoke
def test_reused_search_statements_bind_each_viewer_and_value(client: Any, login: Any, factories: Any) -> None:
    """Searches of one shape share a statement; who is asking and what they ask for are parameters."""
    uids = {}
    for name in ("north", "south"):
        nurse = factories.nurse(facility=factories.facility(name=f"Clinic {name}"))
        login(client, nurse)
        study = generate_uid()
        body, ctype = stow_body([ct_slice(patient_id=f"RP-{name}", study_uid=study, accession=f"ACC_{name}")])
        assert client.post("/dicomweb/studies", data=body, content_type=ctype).status_code == 200
        uids[name] = (nurse, study)
        client.post("/sign-out")
    for name, (nurse, study) in uids.items():
        login(client, nurse)
        assert [s["0020000D"]["Value"][0] for s in json.loads(client.get("/dicomweb/studies?PatientID=RP-*").data)] \
            == [study]
        assert json.loads(client.get(f"/dicomweb/studies?AccessionNumber=ACC_{name}").data)[0]["0020000D"] \
            == {"vr": "UI", "Value": [study]}
        assert json.loads(client.get("/dicomweb/studies?AccessionNumber=ACC%25").data) == []  # % is no wildcard
        assert client.get(f"/dicomweb/studies/{study}/series?SeriesNumber=x").status_code == 400  # IS is a number
        client.post("/sign-out")


@pytest.mark.smoke
def test_a_denial_already_stored_by_an_autocommit_flush_is_not_stored_twice(app: Flask, live_factories: Any,
                                                                            engine: sa.Engine) -> None:
    """A refusal's event flushed before the error's rollback (a lazy load on the error page autoflushes) is
    already stored without a transaction; the rollback keeps it once, not twice."""
    from app.audit import service as audit

    user = live_factories.nurse(email=f"read-path-denied-{uuid.uuid4().hex[:8]}@test.example")
    action = f"test.denied.{uuid.uuid4().hex[:8]}"
    with _autocommit_unit(app, user) as me:
        audit.record(action, by=me, outcome=Outcome.DENIED)
        db.session.flush()
        db.rollback()
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(AuditEvent.action == action)) == 1
