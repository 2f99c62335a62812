"""Several senders deliver one new study at once, as modalities and PACS routers do with parallel associations
and parallel STOW-RS requests. Every instance answered as stored must be listed by QIDO and retrievable with
the bytes that were sent; nothing may be answered as stored and then be missing.

Each test repeats the delivery over several new studies: the race it guards against (two transactions creating
the same study or series row) shows in about half of the rounds without the fix.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app.imaging.models import Study
from app.imaging.scp import Listener
from tests.http import signed_in
from tests.imaging.dicomgen import ct_slice, stow_body

pytestmark = pytest.mark.smoke  # on PostgreSQL and, in the smoke run, on SQLite

ROUNDS = 6
SENDERS = 3
SERIES = ("CT", "PT", "CT")  # two modalities: ModalitiesInStudy must keep both whichever sender wins
PER_SENDER_AND_SERIES = 4


def _round_files(patient_id: str) -> tuple[str, list[list[bytes]]]:
    """One new study; for each sender, its instances (of every series), all distinct."""
    study = generate_uid()
    series = [generate_uid() for _ in SERIES]
    per_sender: list[list[bytes]] = [[] for _ in range(SENDERS)]
    number = 0
    for sender in range(SENDERS):
        for uid, modality in zip(series, SERIES, strict=True):
            for _ in range(PER_SENDER_AND_SERIES):
                number += 1
                per_sender[sender].append(ct_slice(patient_id=patient_id, study_uid=study, series_uid=uid,
                                                   number=number, modality=modality, size=32))
    return study, per_sender



def _assert_all_there(reader: requests.Session, base: str, study: str, sent: dict[str, bytes]) -> None:
    """QIDO lists every instance once, and WADO-RS returns each with the pixel data that was sent."""
    url = f"{base}/dicomweb/studies/{study}"
    listed = reader.get(f"{url}/instances", params={"limit": 1000}, timeout=30)
    assert listed.status_code == 200, listed.text[:300]
    uids = [item["00080018"]["Value"][0] for item in listed.json()]
    assert sorted(uids) == sorted(sent), f"{len(set(sent) - set(uids))} of {len(sent)} instances are missing"
    found = reader.get(f"{base}/dicomweb/studies", params={"StudyInstanceUID": study}, timeout=30).json()
    assert sorted(found[0]["00080061"]["Value"]) == sorted(set(SERIES))
    for sop, data in list(sent.items())[::7]:  # a sample, byte for byte: the dataset as sent
        got = reader.get(f"{url}/instances/{sop}", headers={"Accept": 'multipart/related; type="application/dicom"'},
                         timeout=30)
        assert got.status_code == 200
        body = got.content
        part = body[body.index(b"\r\n\r\n") + 4:body.rindex(b"\r\n--")]
        original, stored = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(part))
        assert stored.SOPInstanceUID == sop and stored.PixelData == original.PixelData
        assert stored == original


@pytest.fixture
def clinic_people(live_server: str, live_factories: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    clinic = live_factories.facility(name=f"Parallel clinic {tag}")
    nurse = live_factories.nurse(facility=clinic, email=f"par-nurse-{tag}@test.example")
    # calling AE titles of its own: a peer, once known, stays filed to the clinic it was first seeded with
    return {"clinic": clinic, "nurse": nurse, "mrn": f"PAR-{tag}", "aet": f"S{tag}".upper()}


def test_parallel_stow_requests_of_one_new_study_lose_nothing(live_server: str,
                                                             clinic_people: dict[str, Any]) -> None:
    sessions = [signed_in(live_server, clinic_people["nurse"]) for _ in range(SENDERS)]

    def stow_each(args: tuple[requests.Session, list[bytes]]) -> list[dict[str, Any]]:
        """One request per instance, interleaved with the other senders' (the tightest race)."""
        session, files = args
        return [stow((session, [f])) for f in files]

    def stow(args: tuple[requests.Session, list[bytes]]) -> dict[str, Any]:
        session, files = args
        body, ctype = stow_body(files, boundary=uuid.uuid4().hex)
        resp = session.post(f"{live_server}/dicomweb/studies", data=body, timeout=120,
                            headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
        return {"status": resp.status_code, "json": resp.json() if resp.content else {}}

    with ThreadPoolExecutor(SENDERS) as pool:
        for round_no in range(ROUNDS):
            study, per_sender = _round_files(clinic_people["mrn"])
            # half the rounds send a sender's instances in one request, half one request per instance
            if round_no % 2:
                answers = [a for each in pool.map(stow_each, zip(sessions, per_sender, strict=True)) for a in each]
            else:
                answers = list(pool.map(stow, zip(sessions, per_sender, strict=True)))
            acknowledged: dict[str, bytes] = {}
            by_uid = {pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID: f
                      for files in per_sender for f in files}
            for answer in answers:
                for item in answer["json"].get("00081199", {}).get("Value", []):
                    acknowledged[item["00081155"]["Value"][0]] = by_uid[item["00081155"]["Value"][0]]
                    assert "00081190" in item  # a RetrieveURL only for what is stored
            # every sender is answered for every instance; what failed says why (the sender retries those)
            failed = [item for a in answers for item in a["json"].get("00081198", {}).get("Value", [])]
            assert all(item["00000902"]["Value"][0] for item in failed)
            assert len(acknowledged) + len(failed) == len(by_uid)
            assert len(acknowledged) == len(by_uid), f"{len(failed)} refused under concurrency: {failed[:2]}"
            _assert_all_there(sessions[0], live_server, study, acknowledged)


@pytest.fixture
def listener(app: Any, clinic_people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    aets = ",".join(f"{clinic_people['aet']}{n}={clinic_people['clinic'].code}" for n in range(SENDERS))
    monkeypatch.setitem(app.config, "DICOM_ALLOWED_AETS", aets)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Listener(app).serve("127.0.0.1", port, block=False)
    yield port
    server.shutdown()


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is installed by .ci/run")
def test_parallel_storescu_associations_of_one_new_study_lose_nothing(live_server: str, listener: int,
                                                                     clinic_people: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    reader = signed_in(live_server, clinic_people["nurse"])
    for round_no in range(ROUNDS):
        study, per_sender = _round_files(clinic_people["mrn"])
        procs, sent = [], {}
        for n, files in enumerate(per_sender):
            paths = []
            for i, data in enumerate(files):
                path = tmp_path / f"r{round_no}s{n}i{i}.dcm"
                path.write_bytes(data)
                paths.append(str(path))
                sent[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
            procs.append(subprocess.Popen(  # noqa: S603
                ["storescu", "-v", "-aet", f"{clinic_people['aet']}{n}", "-aec", "TOWNHEALTH", "127.0.0.1",
                 str(listener), *paths],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        successes = sum(out.count("Received Store Response (Success)") for out in outputs)
        assert successes == len(sent), "\n".join(outputs)[-2000:]
        _assert_all_there(reader, live_server, study, sent)


@pytest.mark.skipif(os.environ.get("TEST_DB") == "sqlite", reason="a PostgreSQL trigger stands in for the race")
def test_a_unique_violation_is_answered_as_a_failure_not_as_already_stored(client: Any, factories: Any, login: Any,
                                                                          db_session: Any, app: Any) -> None:
    """A unique violation while creating the series (what a concurrent sender used to cause) once made the
    instance read "already stored" and its object deleted: acknowledged, yet lost. It must be a failure that
    tells the sender to retry, with nothing half-written."""
    from app.imaging.service import object_store

    db_session.execute(sa.text(
        "CREATE FUNCTION test_series_race() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE unique_violation USING MESSAGE = 'duplicate key value violates unique constraint'; END $$"))
    db_session.execute(sa.text("CREATE TRIGGER test_series_race BEFORE INSERT ON imaging_series "
                               "FOR EACH ROW EXECUTE FUNCTION test_series_race()"))
    db_session.commit()  # into the test's outer transaction, rolled back at its end
    with app.app_context():
        before = set(object_store().list("dicom/"))
    login(client, factories.nurse())
    study = generate_uid()
    files = [ct_slice(study_uid=study, series_uid=generate_uid(), number=n) for n in (1, 2)]
    body, ctype = stow_body(files)
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert resp.status_code == 409, resp.get_data(as_text=True)[:300]
    failed = resp.get_json()["00081198"]["Value"]
    assert len(failed) == 2 and "00081199" not in resp.get_json()
    assert {f["00081197"]["Value"][0] for f in failed} == {0xA700}
    assert {f["00000902"]["Value"][0] for f in failed} == {"could not be stored; try again"}
    assert db_session.scalar(sa.select(sa.func.count(Study.id)).where(Study.study_instance_uid == study)) == 0
    with app.app_context():
        assert set(object_store().list("dicom/")) == before


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is installed by .ci/run")
def test_parallel_associations_of_an_ordered_study_send_it_to_be_read_once(
        live_server: str, listener: int, clinic_people: dict[str, Any], live_factories: Any, tmp_path: Path) -> None:
    """The order that asked for a reading is locked by the first arrivals only; whichever association wins, the
    study is sent to be read exactly once, and its later instances leave the order alone."""
    from datetime import UTC, datetime

    from app import db
    from app.imaging import orders
    from app.reading.models import ReadingRequest

    nurse = clinic_people["nurse"]
    patient = live_factories.patient(facility=clinic_people["clinic"])
    reader = live_factories.doctor()  # named, so these requests stay off other tests' reading pool
    for round_no in range(ROUNDS // 2):
        order = orders.create_order(patient, by=nurse, modality="CT", description="CT chest",
                                    scheduled_at=datetime(2031, 3, 4, 14, 15, tzinfo=UTC),
                                    read=orders.ReadingAsk(priority="routine", question="Nodules?",
                                                           assigned_to_id=reader.id))
        db.session.commit()
        study, procs, sent = generate_uid(), [], 0
        for n in range(SENDERS):
            paths = []
            for i in range(PER_SENDER_AND_SERIES):
                path = tmp_path / f"o{round_no}s{n}i{i}.dcm"
                path.write_bytes(ct_slice(patient_id=patient.mrn, study_uid=study, series_uid=f"{study[:60]}.{n}",
                                          number=n * 10 + i, accession=order.accession_number, size=32))
                paths.append(str(path))
                sent += 1
            procs.append(subprocess.Popen(  # noqa: S603
                ["storescu", "-v", "-aet", f"{clinic_people['aet']}{n}", "-aec", "TOWNHEALTH", "127.0.0.1",
                 str(listener), *paths],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert sum(out.count("Received Store Response (Success)") for out in outputs) == sent
        db.session.rollback()  # a fresh snapshot of what the listener committed
        requests_made = db.session.scalars(sa.select(ReadingRequest).join(Study, Study.id == ReadingRequest.study_id)
                                           .where(Study.study_instance_uid == study)).all()
        assert len(requests_made) == 1, f"round {round_no}: {len(requests_made)} reading requests"
