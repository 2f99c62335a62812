"""Two app servers behind nginx act as one hospital: a consult's signals cross servers, sign-in lockout counts
across servers, a study uploaded through one server is read through the other."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.cluster.conftest import OFFER, Browser, Stream, consult_across_servers, sign_in
from tests.conftest import PASSWORD
from tests.imaging.dicomgen import ct_slice

pytestmark = pytest.mark.cluster


def test_patient_and_doctor_on_different_servers_exchange_signals(cluster, app, live_factories):
    doctor, appt, doc, pat = consult_across_servers(cluster, app, live_factories)
    stream = Stream(pat, f"{cluster.url('web_b')}/api/v1/consults/appointments/{appt.id}/events")
    sent = doc.post(f"{cluster.url('web_a')}/api/v1/consults/appointments/{appt.id}/signals",
                    json={"kind": "offer", "sdp": OFFER, "gen": "g1"})
    assert sent.status_code == 201, sent.text[:300]
    # Woken through Redis: well before the streams' own database poll would find it.
    assert stream.wait_for({sent.json()["id"]}, timeout=5), "the offer sent through server A never reached B"
    stream.stopped.set()
    polled = pat.get(f"{cluster.front}/api/v1/consults/appointments/{appt.id}/signals").json()
    assert [m["sdp"] for m in polled if m["kind"] == "offer"] == [OFFER]
    assert [m["from"] for m in polled if m["kind"] == "offer"] == [doctor.id]


def test_sign_in_lockout_counts_across_servers(cluster, live_factories):
    nurse = live_factories.nurse()
    servers = [cluster.url("web_a"), cluster.url("web_b")]
    for attempt in range(5):  # the threshold, spread over both servers
        base = servers[attempt % 2]
        resp = Browser().post(f"{base}/sign-in", data={"email": nurse.email, "password": "wrong"},
                              allow_redirects=False)
        assert resp.status_code != 302
    for base in (*servers, cluster.front):
        resp = Browser().post(f"{base}/sign-in", data={"email": nurse.email, "password": PASSWORD},
                              allow_redirects=False)
        assert resp.status_code != 302 and "Too many failed sign-ins" in resp.text, base


def test_a_study_uploaded_through_one_server_is_read_through_the_other(cluster, live_factories):
    clinic = live_factories.facility()
    nurse = live_factories.nurse(facility=clinic)
    patient = live_factories.patient(facility=clinic)
    study_uid = f"2.25.{uuid.uuid4().int}"
    scan = ct_slice(patient_id=patient.mrn, study_uid=study_uid, seed=7)
    up = sign_in(cluster.url("web_a"), nurse.email, PASSWORD)
    resp = up.post(f"{cluster.url('web_a')}/scans/upload", files={"files": ("scan.dcm", scan)},
                   headers={"Accept": "application/json"})
    assert resp.status_code == 200 and resp.json()["counts"]["stored"] == 1, resp.text[:300]

    b = cluster.url("web_b")
    down = sign_in(b, nurse.email, PASSWORD)
    found = down.get(f"{b}/dicomweb/studies", params={"StudyInstanceUID": study_uid},
                     headers={"Accept": "application/dicom+json"})
    assert found.status_code == 200 and len(found.json()) == 1
    study = down.get(f"{b}/dicomweb/studies/{study_uid}", headers={"Accept": "multipart/related; "
                                                                               "type=\"application/dicom\""})
    assert study.status_code == 200
    assert hashlib.sha256(scan).digest() in {hashlib.sha256(p).digest() for p in _parts(study)}


def _parts(resp) -> list[bytes]:
    boundary = resp.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = []
    for chunk in resp.content.split(b"--" + boundary.encode())[1:-1]:
        _headers, _, body = chunk.partition(b"\r\n\r\n")
        parts.append(body.removesuffix(b"\r\n"))
    return parts
