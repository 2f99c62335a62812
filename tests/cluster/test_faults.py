"""Parts of the two-node deployment fail while it is used: Redis goes away, PostgreSQL ends the app servers'
connections. Users notice at most a slower wake-up; nothing is lost and no server needs a restart."""

from __future__ import annotations

import io
import os
import signal
import threading
import uuid

import psycopg
import pytest
import requests
import sqlalchemy as sa

from app.imaging.models import Instance, ObjectToDelete, Series, Study
from tests.cluster.conftest import (
    OFFER,
    Browser,
    Stream,
    answers,
    consult_across_servers,
    sign_in,
    wait_until,
    workers_of,
)
from tests.conftest import PASSWORD
from tests.imaging.dicomgen import ct_slice

pytestmark = [pytest.mark.cluster, pytest.mark.fault]

def test_redis_going_away_loses_no_signal(cluster, app, live_factories):
    doctor, appt, doc, pat = consult_across_servers(cluster, app, live_factories)
    a, b = cluster.url("web_a"), cluster.url("web_b")
    stream = Stream(pat, f"{b}/api/v1/consults/appointments/{appt.id}/events")
    signals = f"{a}/api/v1/consults/appointments/{appt.id}/signals"
    cand = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}

    cluster.stop("redis")
    try:
        sent = [doc.post(signals, json={"kind": "offer", "sdp": OFFER, "gen": "g1"})]
        sent += [doc.post(signals, json={"kind": "candidate", "candidate": cand, "gen": "g1"}) for _ in range(3)]
        assert [r.status_code for r in sent] == [201] * 4, [r.text[:200] for r in sent]
        ids = {r.json()["id"] for r in sent}
        # No wake-up crosses servers now: the stream on B finds them on its database poll.
        assert stream.wait_for(ids, timeout=10), (ids, stream.ids)
    finally:
        cluster.start_redis()
    late = doc.post(signals, json={"kind": "candidate", "candidate": cand, "gen": "g1"})
    assert late.status_code == 201
    assert stream.wait_for({late.json()["id"]}, timeout=10)
    stream.stopped.set()
    polled = pat.get(f"{cluster.front}/api/v1/consults/appointments/{appt.id}/signals").json()
    assert ids | {late.json()["id"]} <= {m["id"] for m in polled}


COUNT_APP_BACKENDS = ("SELECT count(*) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND application_name = 'townhealth-cluster'")
END_APP_BACKENDS = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'townhealth-cluster'")


def _app_backends(conn: psycopg.Connection) -> int:
    return conn.execute(COUNT_APP_BACKENDS).fetchone()[0]


def test_app_servers_recover_when_postgresql_ends_their_connections(cluster, database_url, live_factories):
    nurse = live_factories.nurse()
    live_factories.patient()
    servers = [cluster.url("web_a"), cluster.url("web_b")]
    browsers = [sign_in(base, nurse.email, PASSWORD) for base in servers]
    for s, base in zip(browsers, servers, strict=True):
        assert s.get(f"{base}/api/v1/patients", params={"q": "Family"}).status_code == 200

    stop, failures, in_flight = threading.Event(), [], []

    def keep_asking(s: Browser, base: str) -> None:
        while not stop.is_set():
            resp = s.get(f"{base}/api/v1/patients", params={"q": "Family"})
            in_flight.append(resp.status_code)
            if resp.status_code >= 500 and "problem+json" not in resp.headers.get("Content-Type", ""):
                failures.append(resp.text[:200])

    threads = [threading.Thread(target=keep_asking, args=(s, base)) for s, base in zip(browsers, servers,
                                                                                       strict=True)]
    for thread in threads:
        thread.start()
    libpq = database_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(libpq, autocommit=True) as conn:
            for _ in range(3):  # each time the servers have reconnected, end their connections again
                wait_until(lambda: _app_backends(conn) > 0, "the app servers' reconnection", timeout=20)
                conn.execute(END_APP_BACKENDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures  # a request caught mid-statement gets a clear error, never a bare crash
    assert in_flight
    for s, base in zip(browsers, servers, strict=True):  # and every request after that succeeds at once
        for _ in range(5):
            resp = s.get(f"{base}/api/v1/patients", params={"q": "Family"})
            assert resp.status_code == 200, resp.text[:300]
        assert s.get(f"{base}/api/v1/me").status_code == 200


def _study_zip(study_uid: str, mrn: str, count: int) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for n in range(1, count + 1):
            zf.writestr(f"study/IM{n:04d}.dcm", ct_slice(patient_id=mrn, study_uid=study_uid, number=n, size=256,
                                                       series_uid=f"{study_uid}.1", seed=n))
    return buffer.getvalue()


def _bucket_keys(s3_server: str) -> set[str]:
    from minio import Minio

    client = Minio(s3_server, access_key="test", secret_key="test", secure=False)
    return {o.object_name for o in client.list_objects("cluster", prefix="dicom/", recursive=True)}


def _instance_keys(engine: sa.Engine, study_uid: str | None = None) -> set[str]:
    query = sa.select(Instance.object_key)
    if study_uid:
        query = query.join(Series).join(Study).where(Study.study_instance_uid == study_uid)
    with engine.connect() as conn:
        return set(conn.scalars(query))


def test_s3_stopping_mid_zip_upload_leaves_no_orphan_and_no_row_and_the_retry_stores_all(
        cluster, engine, s3_server, live_factories):
    clinic = live_factories.facility()
    nurse, patient = live_factories.nurse(facility=clinic), live_factories.patient(facility=clinic)
    study_uid = f"2.25.{uuid.uuid4().int}"
    archive = _study_zip(study_uid, patient.mrn, 24)
    a = cluster.url("web_a")
    s = sign_in(a, nurse.email, PASSWORD)

    cluster.s3.cut_after(len(archive) // 3)  # S3 goes away a third of the way into the study
    try:
        first = s.post(f"{a}/scans/upload", files={"files": ("study.zip", archive, "application/zip")},
                       headers={"Accept": "application/json"})
    finally:
        cluster.s3.restore()
    if first.status_code == 200:
        counts, rows = first.json()["counts"], first.json()["results"]
        assert counts["rejected"] > 0 and counts["stored"] < 24, counts
        assert all(r["reason"] == "could not be stored; try again" for r in rows if r["status"] == "rejected")
    else:  # the whole upload refused: a problem report, not a crash
        assert first.status_code in (502, 503), first.text[:500]
        assert first.headers["Content-Type"] == "application/problem+json"
        counts = {"stored": 0}
    kept = _instance_keys(engine, study_uid)
    assert len(kept) == counts["stored"], counts  # a row for every file reported stored, and for nothing else
    bucket = _bucket_keys(s3_server)
    assert kept <= bucket
    # An object that reached S3 before the cut but has no row is written down for deletion once S3 is back ...
    with engine.connect() as conn:
        noted = set(conn.scalars(sa.select(ObjectToDelete.object_key)))
    assert bucket - _instance_keys(engine) <= noted

    retry = s.post(f"{a}/scans/upload", files={"files": ("study.zip", archive, "application/zip")},
                   headers={"Accept": "application/json"})
    assert retry.status_code == 200, retry.text[:300]
    assert retry.json()["counts"]["stored"] + retry.json()["counts"]["duplicate"] == 24
    assert len(_instance_keys(engine, study_uid)) == 24
    # ... and is gone by the time the retry is stored.
    assert _bucket_keys(s3_server) <= _instance_keys(engine), "objects without a row were left in the bucket"


def test_a_web_worker_killed_while_signing_leaves_no_half_signed_prescription(cluster, app, engine, live_factories):
    from app import db
    from app.audit.models import AuditEvent
    from app.prescriptions import service as rx_service
    from app.prescriptions.models import Prescription, RequestStatus
    from tests.prescriptions.conftest import rx_input

    doctor = live_factories.doctor()
    patient = live_factories.patient(with_account=True, doctor=doctor)
    rx = rx_service.create_draft(patient, rx_input(), by=doctor)
    db.session.commit()
    a = cluster.url("web_a")
    s = sign_in(a, doctor.email, PASSWORD)
    sign_url = f"{a}/api/v1/medication-requests/{rx.id}/sign"
    outcome: list[object] = []

    def sign() -> None:
        try:
            outcome.append(s.post(sign_url, json={}).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    with engine.connect() as blocker, psycopg.connect(
            str(engine.url.set(drivername="postgresql").render_as_string(hide_password=False)),
            autocommit=True) as watch:
        # Hold the prescription's row, so the signing request stops in the middle of its transaction.
        blocker.execute(sa.select(Prescription.id).where(Prescription.id == rx.id).with_for_update())
        thread = threading.Thread(target=sign)
        thread.start()
        waiting: list[int] = []

        def signing_waits() -> bool:
            waiting[:] = [row[0] for row in watch.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'townhealth-cluster' "
                "AND wait_event_type = 'Lock'")]
            return bool(waiting)

        wait_until(signing_waits, "the signing request to reach the database", timeout=20)
        [worker] = workers_of(cluster.procs["web_a"].pid)
        os.kill(worker, signal.SIGKILL)
        thread.join(timeout=20)
        blocker.rollback()  # the killed request's transaction may now go on, but can never commit
        wait_until(lambda: not watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                             [waiting]).fetchone(), "the orphaned backend to end", timeout=20)
    assert outcome and isinstance(outcome[0], requests.RequestException)  # the doctor sees it failed

    db.session.expire_all()
    left = db.session.get(Prescription, rx.id)
    assert left.status is RequestStatus.DRAFT and left.signature is None and left.signed_at is None
    assert not db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "prescription.sign",
                                                              AuditEvent.resource_id == str(rx.id))).all()

    wait_until(lambda: len(workers_of(cluster.procs["web_a"].pid)) == 1, "gunicorn to replace the worker")
    wait_until(lambda: answers(f"{a}/sign-in"), "the new worker", timeout=60)
    again = s.post(sign_url, json={})  # the same session: the cookie holds it, not the worker
    assert again.status_code == 200, again.text[:300]
    db.session.expire_all()
    signed = db.session.get(Prescription, rx.id)
    assert signed.status is RequestStatus.ACTIVE and signed.signature
