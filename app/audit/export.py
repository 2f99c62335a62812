"""The audit trail leaving the hospital: FHIR AuditEvent (IHE Basic Audit Log Patterns) and RFC 5424 syslog.

Only sealed events leave, in id order, each with its chain link: the collector's copy then holds every link
hash, so a trail rewritten inside the database (links and seals included) no longer matches what it received.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from rfc5424logging import FRAMING_OCTET_COUNTING, Rfc5424SysLogHandler

from app import db
from app.audit.models import AuditEvent, AuditExportCursor, AuditLink, Outcome

DCM = "http://dicom.nema.org/resources/ontology/DCM"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition"
ENTERPRISE_ID = 32473
"""The structured-data id's enterprise number (RFC 5612's documentation number, until one is registered)."""
FACILITY_AUDIT = 13  # "log audit" (RFC 5424 section 6.2.1)
BATCH = 1000

# The action's last word says what was done to the data: (FHIR AuditEvent.action, restful interaction).
_VERBS: dict[str, tuple[str, str]] = {
    "create": ("C", "create"), "store": ("C", "create"), "invite": ("C", "create"), "assign": ("C", "create"),
    "read": ("R", "read"), "play": ("R", "read"), "lookup": ("R", "read"), "verify": ("R", "read"),
    "access_log": ("R", "read"), "join": ("R", "read"),
    "search": ("E", "search-type"), "list": ("E", "search-type"), "queue": ("E", "search-type"),
    "delete": ("D", "delete"), "remove": ("D", "delete"), "revoke": ("D", "delete"),
}
_OUTCOME = {Outcome.SUCCESS: "0", Outcome.DENIED: "4", Outcome.FAILURE: "8"}


def _action(action: str) -> tuple[str, str]:
    verb = action.rsplit(".", 1)[-1]
    return _VERBS.get(verb, ("U", "update") if verb not in ("sign_in", "sign_out") else ("E", "operation"))


def _profile(action: str, code: str, has_patient: bool) -> str:
    kind = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete", "E": "Query"}[code]
    if action.startswith("auth.sign_"):
        return f"{BALP}/IHE.BasicAudit.Login" if action == "auth.sign_in" else f"{BALP}/IHE.BasicAudit.Logout"
    return f"{BALP}/IHE.BasicAudit.Patient{kind}" if has_patient else f"{BALP}/IHE.BasicAudit.{kind}"


def to_fhir(event: Mapping[str, Any], *, chain_hash: bytes | None = None) -> dict[str, Any]:
    """One audit event as a FHIR R4 AuditEvent in the IHE BALP shape (no patient names: references only)."""
    code, interaction = _action(event["action"])
    sign_in = event["action"].startswith("auth.sign_")
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP", "display": "information recipient"}]},
        "requestor": True,
    }
    if event["actor_id"] is not None:
        agent["who"] = {"reference": f"Practitioner/{event['actor_id']}" if event["actor_role"] not in (None, "patient")
                        else f"Patient/{event['actor_id']}", "display": event["actor_name"]}
    else:
        agent["who"] = {"display": event["actor_name"] or "unknown"}
    if event["actor_role"]:
        agent["role"] = [{"text": event["actor_role"]}]
    if event.get("on_behalf_of") is not None:  # R5's agent.onBehalfOf, as an extension in R4
        agent["extension"] = [{"url": "urn:townhealth:audit-on-behalf-of",
                               "valueReference": {"reference": f"Patient/{event['on_behalf_of']}"}}]
    if event["ip"]:
        agent["network"] = {"address": event["ip"], "type": "2"}
    entities: list[dict[str, Any]] = []
    if event["patient_id"] is not None:
        entities.append({"what": {"reference": f"Patient/{event['patient_id']}"},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                  "code": "1", "display": "Person"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                                  "code": "1", "display": "Patient"}})
    if event["resource_type"]:
        entity: dict[str, Any] = {
            "what": {"identifier": {"system": f"urn:townhealth:{event['resource_type']}",
                                    "value": event["resource_id"] or ""}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                     "code": "2", "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                     "code": "4", "display": "Domain Resource"}}
        if event["detail"]:
            entity["detail"] = [{"type": "detail", "valueString": json.dumps(event["detail"], sort_keys=True)}]
        entities.append(entity)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event["id"]),
        "meta": {"profile": [_profile(event["action"], code, event["patient_id"] is not None)]},
        "type": ({"system": DCM, "code": "110114", "display": "User Authentication"} if sign_in else
                 {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                  "display": "Restful Operation"}),
        "subtype": ([{"system": DCM, "code": "110122" if event["action"] == "auth.sign_in" else "110123",
                      "display": "Login" if event["action"] == "auth.sign_in" else "Logout"}] if sign_in else
                    [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction},
                     {"system": "urn:townhealth:audit-action", "code": event["action"]}]),
        "action": code,
        "recorded": event["occurred_at"].isoformat(),
        "outcome": _OUTCOME[Outcome(event["outcome"])],
        "outcomeDesc": Outcome(event["outcome"]).value,
        "agent": [agent],
        "source": {"observer": {"display": "Town Health"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "entity": entities,
    }
    if chain_hash is not None:
        resource["extension"] = [{"url": "urn:townhealth:audit-chain-hash", "valueString": chain_hash.hex()}]
    return resource


def sealed_events(*, after: int = 0, limit: int | None = None) -> Iterator[tuple[Mapping[str, Any], bytes]]:
    """Sealed events with their link hashes, in id order, from just after event ``after``."""
    events, links = AuditEvent.__table__, AuditLink.__table__
    query = (sa.select(events, links.c.hash.label("chain_hash"))
             .join(links, links.c.event_id == events.c.id)
             .where(events.c.id > after).order_by(events.c.id).execution_options(yield_per=BATCH))
    if limit is not None:
        query = query.limit(limit)
    for row in db.session.execute(query).mappings():
        yield row, row["chain_hash"]


class SyslogUnreachable(RuntimeError):
    """The collector could not be reached; nothing was marked as forwarded."""


def syslog_handler(url: str) -> Rfc5424SysLogHandler:
    """A handler for ``udp://host:port`` or ``tcp://host:port`` (TCP frames by octet counting, RFC 6587)."""
    parts = urlsplit(url)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise ValueError(f"syslog destination must look like udp://host:514 or tcp://host:601, not {url!r}")
    tcp = parts.scheme == "tcp"
    try:
        return Rfc5424SysLogHandler(
            address=(parts.hostname, parts.port or (601 if tcp else 514)), facility=FACILITY_AUDIT,
            socktype=socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM, framing=FRAMING_OCTET_COUNTING,
            appname="townhealth", enterprise_id=ENTERPRISE_ID, utc_timestamp=True)
    except OSError as exc:
        raise SyslogUnreachable(f"cannot reach the syslog collector at {url}: {exc}") from exc


def _syslog_record(event: Mapping[str, Any], chain_hash: bytes) -> logging.LogRecord:
    level = logging.INFO if Outcome(event["outcome"]) is Outcome.SUCCESS else logging.WARNING
    message = json.dumps(to_fhir(event, chain_hash=chain_hash), separators=(",", ":"))
    record = logging.LogRecord("hospital.audit", level, __file__, 0, message, None, None)
    record.created = event["occurred_at"].timestamp()  # the event's own time, not the time it was sent
    record.msgid = event["action"][:32]
    fields = {"id": str(event["id"]), "outcome": Outcome(event["outcome"]).value, "hash": chain_hash.hex()}
    if event["patient_id"] is not None:
        fields["patient"] = str(event["patient_id"])
    record.structured_data = {"audit": fields}
    return record


def forward_to_syslog(url: str, *, limit: int = 10_000) -> int:
    """Send the sealed events not yet sent to ``url`` and remember how far it got; the caller commits.

    At least once: an event whose send failed midway is sent again next time (its id tells duplicates apart).
    :raises SyslogUnreachable: when the collector cannot be reached or goes away (after the cursor is moved
        past what was sent).
    """
    session = db.session()
    cursor = session.get(AuditExportCursor, url, with_for_update=True)
    after = cursor.last_event_id if cursor else 0
    sent_through, count, failure = after, 0, None
    handler = syslog_handler(url)
    try:
        for event, chain_hash in sealed_events(after=after, limit=limit):
            # Not handler.emit(), which reports a failed send on stderr and carries on.
            handler.transport.transmit(handler.build_msg(_syslog_record(event, chain_hash)))
            sent_through, count = event["id"], count + 1
    except OSError as exc:
        failure = SyslogUnreachable(f"lost the syslog collector at {url} after {count} event(s): {exc}")
    finally:
        handler.close()
    if count:
        if cursor is None:
            session.add(AuditExportCursor(destination=url, last_event_id=sent_through))
        else:
            cursor.last_event_id, cursor.updated_at = sent_through, db.utcnow()
        session.flush()
    if failure:
        raise failure
    return count


def fhir_ndjson(*, after: int = 0) -> Iterator[str]:
    """Sealed events as FHIR AuditEvent resources, one JSON document per line (FHIR bulk data's NDJSON)."""
    for event, chain_hash in sealed_events(after=after):
        yield json.dumps(to_fhir(event, chain_hash=chain_hash), separators=(",", ":")) + "\n"
