"""Plain sentences for audit action codes, and the grouping of a record's accesses into visits.

For people who are not auditors: a patient reading "Who viewed my record" sees "Dr Okafor, 09:12–09:40 UTC:
opened the record, looked at 3 prescriptions, viewed a scan" instead of 60 rows of ``prescription.read``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.audit.models import AuditEvent

# (one, several): "{n}" is the count. Kept in one place so every page says the same thing.
ACTIONS: dict[str, tuple[str, str]] = {
    "patient.read": ("opened the record", "opened the record {n} times"),
    "patient.create": ("registered the patient", "registered the patient"),
    "patient.update": ("changed the personal details", "changed the personal details {n} times"),
    "patient.search": ("found the record in a search", "found the record in {n} searches"),
    "patient.portal_account": ("created the patient's sign-in", "created the patient's sign-in"),
    "patient.access_log": ("looked at this list of visits", "looked at this list of visits {n} times"),
    "allergy.create": ("added an allergy", "added {n} allergies"),
    "allergy.none_known": ("noted that there are no known allergies", "noted that there are no known allergies"),
    "allergyintolerance.update": ("changed an allergy", "changed {n} allergies"),
    "condition.create": ("added a condition", "added {n} conditions"),
    "condition.update": ("changed a condition", "changed {n} conditions"),
    "medication.create": ("added a medicine to the list", "added {n} medicines to the list"),
    "medicationstatement.create": ("added a medicine to the list", "added {n} medicines to the list"),
    "medicationstatement.update": ("updated the medicine list", "updated the medicine list {n} times"),
    "care_team.assign": ("added a doctor to the care team", "added {n} doctors to the care team"),
    "care_team.end": ("took a doctor off the care team", "took {n} doctors off the care team"),
    "caregiver.link": ("added a caregiver", "added {n} caregivers"),
    "caregiver.revoke": ("ended a caregiver's access", "ended {n} caregivers' access"),
    "caregiver.list": ("looked at the list of caregivers", "looked at the list of caregivers {n} times"),
    "caregiver.act_for": ("started acting as caregiver", "started acting as caregiver {n} times"),
    "caregiver.account": ("created a caregiver's sign-in", "created {n} caregivers' sign-ins"),
    "consult.caregiver_seat": ("took the patient's seat in a video consult as caregiver",
                               "took the patient's seat in video consults {n} times as caregiver"),
    "prescription.create": ("started a prescription", "started {n} prescriptions"),
    "prescription.update": ("changed a draft prescription", "changed draft prescriptions {n} times"),
    "prescription.sign": ("signed a prescription", "signed {n} prescriptions"),
    "prescription.status": ("changed a prescription (held, resumed, stopped or cancelled)",
                            "changed prescriptions {n} times (held, resumed, stopped or cancelled)"),
    "prescription.read": ("looked at a prescription", "looked at prescriptions {n} times"),
    "prescription.list": ("looked at the list of prescriptions", "looked at the list of prescriptions {n} times"),
    "prescription.print": ("printed a prescription", "printed prescriptions {n} times"),
    "prescription.qr": ("showed a prescription's code", "showed prescription codes {n} times"),
    "prescription.verify": ("checked a prescription's code", "checked prescription codes {n} times"),
    "dispense.create": ("started preparing a medicine", "started preparing {n} medicines"),
    "dispense.read": ("looked at a medicine being prepared", "looked at medicines being prepared {n} times"),
    "dispense.status": ("updated a medicine at the pharmacy", "updated medicines at the pharmacy {n} times"),
    "dispense.label": ("printed a medicine label", "printed {n} medicine labels"),
    "dispense.pickup_code": ("showed a pickup code", "showed pickup codes {n} times"),
    "dispense.pickup_lookup": ("looked up a pickup code", "looked up pickup codes {n} times"),
    "dispense.handover": ("handed over a medicine", "handed over {n} medicines"),
    "appointment.create": ("booked a video consult", "booked {n} video consults"),
    "appointment.read": ("looked at an appointment", "looked at appointments {n} times"),
    "appointment.cancel": ("cancelled an appointment", "cancelled {n} appointments"),
    "appointment.reschedule": ("moved an appointment", "moved appointments {n} times"),
    "appointment.check_in": ("checked in for a consult", "checked in {n} times"),
    "appointment.noshow": ("noted a missed appointment", "noted {n} missed appointments"),
    "consult.admit": ("started a video consult", "started {n} video consults"),
    "consult.join": ("joined a video consult", "joined video consults {n} times"),
    "consult.leave": ("left a video consult", "left video consults {n} times"),
    "consult.end": ("ended a video consult", "ended {n} video consults"),
    "consult.chat": ("wrote in the consult chat", "wrote {n} messages in the consult chat"),
    "consult.recording_play": ("played a consult recording", "played consult recordings {n} times"),
    "encounter.read": ("read a consult note", "read consult notes {n} times"),
    "encounter.update": ("wrote in a consult note", "wrote in consult notes {n} times"),
    "encounter.list": ("looked at the visit history", "looked at the visit history {n} times"),
    "imaging.study.view": ("viewed a scan", "viewed scans {n} times"),
    "imaging.study.read": ("looked at a scan's details", "looked at scan details {n} times"),
    "imaging.study.export": ("exported a scan without names", "exported {n} scans without names"),
    "imaging.study.link": ("filed a scan to the record", "filed {n} scans to the record"),
    "imaging.study.link.preview": ("compared a scan with the record", "compared scans with the record {n} times"),
    "imaging.study.move": ("moved a scan to the record", "moved {n} scans to the record"),
    "imaging.study.unlink": ("took a scan off the record", "took {n} scans off the record"),
    "imaging.instance.store": ("stored a scan", "stored scans {n} times"),
    # The viewer loads images one by one: how many is no news to anyone.
    **{f"imaging.{part}.read": ("looked at the scan's images", "looked at the scan's images")
       for part in ("series", "instance", "frames", "rendered")},
}
# Codes not listed above read by their first part, so a new action is never shown raw.
AREAS: dict[str, str] = {
    "patient": "used the record", "allergy": "updated the allergies", "condition": "updated the conditions",
    "medication": "updated the medicine list", "prescription": "worked on prescriptions",
    "dispense": "worked on medicines at the pharmacy", "appointment": "handled appointments",
    "consult": "took part in a video consult", "encounter": "worked on a consult note", "imaging": "looked at scans",
}
VISIT_GAP = timedelta(minutes=30)
"""Accesses by one person closer together than this belong to the same visit."""


def describe(action: str, count: int = 1) -> str:
    """A plain phrase for ``count`` events of ``action`` (lower case, to go inside a sentence)."""
    one, several = ACTIONS.get(action, (None, None))
    if one is None or several is None:
        return AREAS.get(action.split(".", 1)[0], "used the record")
    return one if count == 1 else several.format(n=count)


@dataclass
class Visit:
    """One person's accesses to one record, close together in time."""

    actor_id: int | None
    actor_name: str
    actor_role: str | None
    started_at: datetime
    ended_at: datetime
    counts: dict[str, int] = field(default_factory=dict)  # action -> events, in order of first use
    as_caregiver: bool = False
    """The person acted as the patient's caregiver (proxy) during this visit."""

    @property
    def what(self) -> list[str]:
        return [describe(action, n) for action, n in self.counts.items()]

    @property
    def sentence(self) -> str:
        parts = self.what
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return text[:1].upper() + text[1:] + "."


def visits(events: Iterable[AuditEvent], *, gap: timedelta = VISIT_GAP) -> list[Visit]:
    """Group events (any order) into visits per person, newest visit first."""
    ordered: Sequence[AuditEvent] = sorted(events, key=lambda e: (e.occurred_at, e.id or 0))
    open_by_actor: dict[tuple[int | None, str], Visit] = {}
    done: list[Visit] = []
    for e in ordered:
        key = (e.actor_id, e.actor_name or "system", e.on_behalf_of is not None)
        current = open_by_actor.get(key)
        if current is None or e.occurred_at - current.ended_at > gap:
            current = Visit(e.actor_id, e.actor_name or "The system", e.actor_role, e.occurred_at, e.occurred_at,
                            as_caregiver=e.on_behalf_of is not None)
            open_by_actor[key] = current
            done.append(current)
        current.ended_at = e.occurred_at
        current.counts[e.action] = current.counts.get(e.action, 0) + 1
    return sorted(done, key=lambda v: v.ended_at, reverse=True)
