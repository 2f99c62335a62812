"""Sealed audit events leave as FHIR AuditEvent (IHE BALP) and as RFC 5424 syslog to a collector on loopback."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from app import db
from app.audit import chain, export
from app.audit.models import AuditEvent, AuditExportCursor, AuditLink

SYSLOG_LINE = re.compile(rb'^<(\d+)>1 (\S+) (\S+) townhealth (\S+) (\S+) \[audit@32473 ([^\]]*)\] \xef\xbb\xbf(.*)$',
                         re.DOTALL)


def _sealed_reads(client, login, factories) -> tuple[list[int], int]:
    nurse, patient = factories.nurse(), factories.patient()
    login(client, nurse)
    client.get(f"/api/v1/patients/{patient.id}")
    client.get(f"/api/v1/patients/{patient.id + 10_000}")  # denied / not found
    chain.seal()
    db.session.commit()
    ids = list(db.session.scalars(sa.select(AuditEvent.id).where(AuditEvent.actor_id == nurse.id)
                                  .order_by(AuditEvent.id)))
    return ids, patient.id


def _event_row(event_id: int) -> dict:
    return dict(db.session.execute(sa.select(AuditEvent.__table__).where(AuditEvent.id == event_id)).mappings().one())


def test_a_chart_read_as_a_balp_patient_read(client, login, factories):
    ids, patient_id = _sealed_reads(client, login, factories)
    read = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.id.in_(ids),
                                                          AuditEvent.action == "patient.read",
                                                          AuditEvent.outcome == "success")).one()
    resource = export.to_fhir(_event_row(read.id), chain_hash=db.session.get(AuditLink, read.id).hash)
    assert resource["resourceType"] == "AuditEvent"
    assert resource["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
                                           "IHE.BasicAudit.PatientRead"]
    assert resource["action"] == "R" and resource["outcome"] == "0"
    assert {"system": "http://hl7.org/fhir/restful-interaction", "code": "read"} in resource["subtype"]
    patient = [e for e in resource["entity"] if e["role"]["code"] == "1"]
    assert patient == [{"what": {"reference": f"Patient/{patient_id}"}, "type": patient[0]["type"],
                        "role": patient[0]["role"]}]
    agent = resource["agent"][0]
    assert agent["requestor"] is True and agent["network"] == {"address": "127.0.0.1", "type": "2"}
    assert resource["recorded"].endswith("+00:00")
    sign_in = export.to_fhir(_event_row(ids[0]))
    assert sign_in["type"]["code"] == "110114" and sign_in["subtype"][0]["code"] == "110122"
    denied = [e for e in ids if _event_row(e)["outcome"] != "success"]
    assert denied and export.to_fhir(_event_row(denied[0]))["outcome"] == "4"


@pytest.fixture
def udp_collector() -> Iterator[tuple[str, list[bytes]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                received.append(sock.recv(65536))
            except TimeoutError:
                continue

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    yield f"udp://127.0.0.1:{sock.getsockname()[1]}", received
    stop.set()
    thread.join()
    sock.close()


def _wait_for(received: list[bytes], count: int) -> None:
    import time

    deadline = time.monotonic() + 5
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_sealed_events_go_to_a_syslog_collector_once_each(client, login, factories, udp_collector):
    url, received = udp_collector
    ids, patient_id = _sealed_reads(client, login, factories)
    db.session.add(AuditExportCursor(destination=url, last_event_id=ids[0] - 1))
    db.session.commit()
    assert export.forward_to_syslog(url) >= len(ids)
    db.session.commit()
    _wait_for(received, len(ids))
    messages = {}
    for datagram in received:
        match = SYSLOG_LINE.match(datagram)
        assert match, datagram[:200]
        fields = dict(re.findall(rb'(\w+)="([^"]*)"', match.group(6)))
        messages[int(fields[b"id"])] = (match, fields)
    for event_id in ids:
        match, fields = messages[event_id]
        event = _event_row(event_id)
        severity = 6 if event["outcome"] == "success" else 4
        assert int(match.group(1)) == 13 * 8 + severity  # facility "log audit"
        assert match.group(5) == event["action"].encode()
        assert fields[b"hash"] == db.session.get(AuditLink, event_id).hash.hex().encode()
        body = json.loads(match.group(7))
        assert body["resourceType"] == "AuditEvent" and body["id"] == str(event_id)
    assert messages[ids[1]][1][b"patient"] == str(patient_id).encode()
    before = len(received)
    assert export.forward_to_syslog(url) == 0
    assert db.session.get(AuditExportCursor, url).last_event_id >= ids[-1]
    assert len(received) == before


def test_a_tcp_collector_gets_octet_counted_frames_and_a_missing_one_keeps_the_cursor(client, login, factories):
    ids, _ = _sealed_reads(client, login, factories)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"tcp://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: connection refused
        db.session.add(AuditExportCursor(destination=gone, last_event_id=ids[0] - 1))
        db.session.commit()
        with pytest.raises(export.SyslogUnreachable):
            export.forward_to_syslog(gone)
    db.session.rollback()
    assert db.session.get(AuditExportCursor, gone).last_event_id == ids[0] - 1

    server = socket.create_server(("127.0.0.1", 0))
    url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    db.session.add(AuditExportCursor(destination=url, last_event_id=ids[0] - 1))
    db.session.commit()
    chunks: list[bytes] = []

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                chunks.append(data)

    thread = threading.Thread(target=accept)
    thread.start()
    sent = export.forward_to_syslog(url)
    thread.join(timeout=5)
    server.close()
    stream, frames = b"".join(chunks), []
    while stream:
        length, _, rest = stream.partition(b" ")
        frames.append(rest[:int(length)])
        stream = rest[int(length):]
    assert len(frames) == sent >= len(ids)
    assert all(SYSLOG_LINE.match(frame) for frame in frames)
