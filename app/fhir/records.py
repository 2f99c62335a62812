"""Consent (recording consent), Communication (notifications), AuditEvent and Provenance, from the audit trail.

Provenance is not stored twice: every successful write is already an audit event naming who changed which
resource and when, so ``Provenance/<id>`` is that event seen as the provenance of its target.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.audit.models import AuditEvent, Outcome
from app.auth.models import Role, User
from app.consults import service as consults
from app.consults.models import Appointment, RecordingConsent
from app.errors import Forbidden
from app.fhir import search as fs
from app.fhir.patients import coded, patient_ref, record_id
from app.fhir.search import ResourceType, SearchParam
from app.notify.models import Notification, NotificationStatus
from app.patients import access
from app.patients.models import Patient

# ---------------------------------------------------------------- Consent


def consent_to_fhir(c: RecordingConsent) -> dict[str, Any]:
    period = fs.compact({"start": fs.instant(c.given_at), "end": fs.instant(c.revoked_at)})
    return {
        "resourceType": "Consent",
        "id": str(c.id),
        "status": "active" if c.active else "inactive",
        "scope": coded("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
        "category": [coded("http://loinc.org", "59284-0", "Patient Consent")],
        "patient": patient_ref(c.patient_id),
        "dateTime": fs.instant(c.given_at),
        "performer": [{"reference": f"Practitioner/{c.given_by_id}"} if c.given_by.role.is_staff
                      else patient_ref(c.patient_id)],
        "policyRule": coded("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", "opt-in"),
        "provision": {"type": "permit", "period": period,
                      "action": [{"text": "Record the video consult"}],
                      "data": [{"meaning": "related", "reference": {"reference": f"Appointment/{c.appointment_id}"}}]},
    }


def visible_consents(by: User) -> fs.Query:
    return (sa.select(RecordingConsent).join(Appointment, Appointment.id == RecordingConsent.appointment_id)
            .join(Patient, Patient.id == Appointment.patient_id).where(consults.visible_clause(by)))


def reader(resource_type: str, model: Any, visible: Any) -> Any:
    """Read one row of ``visible(by)`` by id: audited with its patient, or denied (audited) as not found."""
    action = f"fhir.{resource_type.lower()}.read"

    def read(rid: str, by: User) -> Any:
        row = db.session.scalar(visible(by).where(model.id == record_id(rid)))
        if row is None:
            audit.forbid(action, by=by, resource_type=resource_type, resource_id=rid[:64])
        audit.record(action, by=by, patient_id=row.patient_id, resource_type=resource_type, resource_id=row.id)
        return row

    return read


read_consent = reader("Consent", RecordingConsent, visible_consents)


fs.register(ResourceType(
    name="Consent", model=RecordingConsent, to_fhir=consent_to_fhir, read=read_consent, visible=visible_consents,
    patient_of=lambda c: c.patient_id, documentation="A patient's consent to record one video consult.",
    params={
        **fs.patient_params(RecordingConsent.patient_id),
        "status": SearchParam("status", "token", lambda q, values, _m: q.where(sa.or_(*[
            RecordingConsent.revoked_at.is_(None) if code == "active" else RecordingConsent.revoked_at.is_not(None)
            for _s, code in fs.token_values(values) if code in ("active", "inactive")] or [sa.false()])),
            "active, inactive"),
        "date": SearchParam("date", "date", fs.date_param(RecordingConsent.given_at), "When given"),
    },
    sorts={"date": RecordingConsent.given_at},
))


# ---------------------------------------------------------------- Communication


COMMUNICATION_STATUS = {NotificationStatus.PENDING: "preparation", NotificationStatus.SENT: "completed",
                        NotificationStatus.FAILED: "not-done"}


def _own_patient_id(user_id: int) -> int | None:
    return db.session.scalar(sa.select(Patient.id).where(Patient.user_id == user_id))


def communication_to_fhir(n: Notification) -> dict[str, Any]:
    patient_id = _own_patient_id(n.recipient_id) if n.recipient.role is Role.PATIENT else None
    recipient = patient_ref(patient_id) if patient_id else {"reference": f"Practitioner/{n.recipient_id}"}
    return fs.compact({
        "resourceType": "Communication",
        "id": str(n.id),
        "status": COMMUNICATION_STATUS[n.status],
        "category": [coded("http://terminology.hl7.org/CodeSystem/communication-category", "notification",
                           "Notification")],
        "medium": [coded("http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "EMAILWRIT", "email")],
        "subject": recipient if patient_id else None,
        "topic": {"text": n.subject},
        "recipient": [recipient],
        "sent": fs.instant(n.sent_at),
        "received": fs.instant(n.read_at),
        "payload": [{"contentString": n.body}],
    })


def visible_notifications(by: User) -> fs.Query:
    """Only one's own messages: they may name other people's appointments and medicines."""
    return sa.select(Notification).where(Notification.recipient_id == by.id)


def read_notification(rid: str, by: User) -> Notification:
    notification = db.session.scalar(visible_notifications(by).where(Notification.id == record_id(rid)))
    if notification is None:
        audit.forbid("fhir.communication.read", by=by, resource_type="Communication", resource_id=rid[:64])
    audit.record("fhir.communication.read", by=by, patient_id=_own_patient_id(notification.recipient_id),
                 resource_type="Communication", resource_id=notification.id)
    return notification


fs.register(ResourceType(
    name="Communication", model=Notification, to_fhir=communication_to_fhir, read=read_notification,
    visible=visible_notifications, patient_of=lambda n: _own_patient_id(n.recipient_id),
    documentation="The notifications sent to you (appointment confirmations, medicine ready for pickup).",
    params={
        "status": SearchParam("status", "token", fs.token(Notification.status, transform=lambda c: {
            v: k for k, v in COMMUNICATION_STATUS.items()}[c]), "preparation, completed, not-done"),
        "sent": SearchParam("sent", "date", fs.date_param(Notification.sent_at), "When delivered"),
    },
    sorts={"sent": Notification.sent_at},
))


# ---------------------------------------------------------------- AuditEvent and Provenance


ACTIONS = {"create": "C", "read": "R", "search": "E", "list": "R", "update": "U", "delete": "D"}
OUTCOMES = {Outcome.SUCCESS: "0", Outcome.DENIED: "4", Outcome.FAILURE: "8"}
WRITES = ("create", "update", "sign", "status", "assign", "handover", "transition", "cancel", "reschedule",
          "recording_consent", "recording_revoke")
CREATES = ("create", "recording_consent")
ALIASES = {"RecordingConsent": "Consent"}
"""Audit resource types that are a FHIR type under another name."""


def fhir_type(resource_type: str | None) -> str | None:
    name = ALIASES.get(resource_type or "", resource_type)
    return name if name in fs.REGISTRY else None


def _entity(e: AuditEvent) -> list[dict[str, Any]]:
    out = []
    if e.patient_id is not None:
        out.append({"what": patient_ref(e.patient_id), "role": {
            "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}})
    if e.resource_type and e.resource_id and (e.resource_type, e.resource_id) != ("Patient", str(e.patient_id)):
        kind = fhir_type(e.resource_type)
        what = ({"reference": f"{kind}/{e.resource_id}"} if kind else {"display": f"{e.resource_type} {e.resource_id}"})
        out.append({"what": what})
    return out


def _who(e: AuditEvent) -> dict[str, Any]:
    who: dict[str, Any] = {"display": e.actor_name or "Town Health (system)"}
    if e.actor_id is not None:
        who["identifier"] = {"system": "urn:town-health:user", "value": str(e.actor_id)}
    return who


def audit_event_to_fhir(e: AuditEvent) -> dict[str, Any]:
    verb = e.action.rsplit(".", 1)[-1]
    return fs.compact({
        "resourceType": "AuditEvent",
        "id": str(e.id),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "urn:town-health:audit-action", "code": e.action}],
        "action": ACTIONS.get(verb, "E"),
        "recorded": fs.instant(e.occurred_at),
        "outcome": OUTCOMES[e.outcome],
        "agent": [fs.compact({"who": _who(e), "requestor": True,
                              "role": [{"text": e.actor_role}] if e.actor_role else None,
                              "network": {"address": e.ip, "type": "2"} if e.ip else None})],
        "source": {"observer": {"display": "Town Health"}},
        "entity": _entity(e),
    })


def visible_events(by: User) -> fs.Query:
    """Administrators read the whole trail; a patient reads the events about their own record."""
    if by.role is Role.ADMIN:
        return sa.select(AuditEvent)
    if by.role is Role.PATIENT:
        return sa.select(AuditEvent).where(AuditEvent.patient_id.in_(
            sa.select(Patient.id).where(Patient.user_id == by.id)))
    return sa.select(AuditEvent).where(sa.false())


def read_event(rid: str, by: User) -> AuditEvent:
    if by.role not in (Role.ADMIN, Role.PATIENT):
        audit.forbid("fhir.auditevent.read", by=by, resource_type="AuditEvent",
                     error=Forbidden("Only administrators, and patients for their own record, read the audit trail."))
    return reader("AuditEvent", AuditEvent, visible_events)(rid, by)


def _audit_params(extra: dict[str, SearchParam]) -> dict[str, SearchParam]:
    return {"patient": fs.ref_param("patient", AuditEvent.patient_id, "Patient",
                                    "The patient whose record was touched"), **extra}


fs.register(ResourceType(
    name="AuditEvent", model=AuditEvent, to_fhir=audit_event_to_fhir, read=read_event, visible=visible_events,
    patient_of=lambda e: e.patient_id,
    documentation="The audit trail: administrators read all of it, a patient the events about their own record.",
    params=_audit_params({
        "date": SearchParam("date", "date", fs.date_param(AuditEvent.occurred_at), "When it happened"),
        "subtype": SearchParam("subtype", "token", fs.token(AuditEvent.action, system="urn:town-health:audit-action"),
                               "The action, e.g. patient.read"),
        "outcome": SearchParam("outcome", "token", fs.token(AuditEvent.outcome, transform=lambda c: {
            v: k for k, v in OUTCOMES.items()}[c]), "0 success, 4 denied, 8 failed"),
    }),
    sorts={"date": AuditEvent.occurred_at},
))


def provenance_to_fhir(e: AuditEvent) -> dict[str, Any]:
    verb = e.action.rsplit(".", 1)[-1]
    return {
        "resourceType": "Provenance",
        "id": str(e.id),
        "target": [{"reference": f"{fhir_type(e.resource_type)}/{e.resource_id}"}],
        "recorded": fs.instant(e.occurred_at),
        "activity": coded("http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                          "CREATE" if verb in CREATES else "UPDATE"),
        "agent": [{"type": coded("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author",
                                 "Author"), "who": _who(e)}],
    }


def visible_writes(by: User) -> fs.Query:
    """Successful writes to resources this server serves, about patients ``by`` may read."""
    writes = sa.or_(*[AuditEvent.action.endswith(f".{verb}") for verb in WRITES])
    query = sa.select(AuditEvent).where(AuditEvent.outcome == Outcome.SUCCESS, writes,
                                        AuditEvent.resource_type.in_([*fs.REGISTRY, *ALIASES]),
                                        AuditEvent.resource_id.is_not(None))
    if by.role is Role.ADMIN:
        return query
    return query.where(AuditEvent.patient_id.in_(sa.select(Patient.id).where(access.visible_clause(by))))


read_provenance = reader("Provenance", AuditEvent, visible_writes)


def _target(query: fs.Query, values: list[str], _modifier: str | None) -> fs.Query:
    pairs = []
    for value in values:
        kind, _, rid = value.rpartition("/")
        kind = kind.rsplit("/", 1)[-1]
        if kind in fs.REGISTRY and rid:
            names = [kind, *(alias for alias, name in ALIASES.items() if name == kind)]
            pairs.append(sa.and_(AuditEvent.resource_type.in_(names), AuditEvent.resource_id == rid))
    return query.where(sa.or_(*pairs) if pairs else sa.false())


WRITABLE = ("Patient", "AllergyIntolerance", "Condition", "MedicationStatement", "MedicationRequest",
            "MedicationDispense", "Appointment", "Encounter", "Consent")

fs.register(ResourceType(
    name="Provenance", model=AuditEvent, to_fhir=provenance_to_fhir, read=read_provenance, visible=visible_writes,
    patient_of=lambda e: e.patient_id,
    documentation="Who created or changed a resource, and when (from the audit trail; every write has one).",
    params=_audit_params({
        "target": SearchParam("target", "reference", _target, "The resource written", WRITABLE),
        "recorded": SearchParam("recorded", "date", fs.date_param(AuditEvent.occurred_at), "When"),
    }),
    sorts={"recorded": AuditEvent.occurred_at},
))
