"""Schedule and Slot (doctors' published consult hours), Appointment (video consults) and Encounter.

A patient app books through FHIR as a patient books on the web: search free Slots, then create an Appointment
for that slot; :func:`app.consults.service.book` checks who may book, claims the slot and notifies both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from app import db
from app.audit import service as audit
from app.auth.models import Role, User
from app.consults import access as consult_access
from app.consults import service as consults
from app.consults.models import Appointment, AppointmentStatus, Availability, Encounter, EncounterStatus
from app.errors import NotFound
from app.fhir import inputs
from app.fhir import search as fs
from app.fhir.outcome import FhirError
from app.fhir.patients import check_reference, coded, patient_ref, record_id
from app.fhir.search import ResourceType, SearchParam
from app.patients.models import Patient

SLOT_DAYS = 14
VIDEO = ("http://terminology.hl7.org/CodeSystem/v2-0276", "ROUTINE", "Routine appointment")


def practitioner(user_id: int, display: str | None = None) -> dict[str, str]:
    return fs.compact({"reference": f"Practitioner/{user_id}", "display": display})


# ---------------------------------------------------------------- Schedule and Slot


def schedule_to_fhir(doctor: User) -> dict[str, Any]:
    return {"resourceType": "Schedule", "id": str(doctor.id), "active": doctor.active,
            "serviceType": [{"text": "Video consult"}], "actor": [practitioner(doctor.id, doctor.full_name)],
            "comment": "Free slots are listed as Slot resources; times are UTC."}


def _doctors_with_hours() -> fs.Query:
    return sa.select(User).where(User.role == Role.DOCTOR, User.active.is_(True),
                                 User.id.in_(sa.select(Availability.doctor_id)))


def read_schedule(rid: str, _by: User) -> User:
    doctor = db.session.scalar(_doctors_with_hours().where(User.id == record_id(rid)))
    if doctor is None:
        raise NotFound("No Schedule with that id.")
    return doctor


fs.register(ResourceType(
    name="Schedule", model=User, to_fhir=schedule_to_fhir, read=read_schedule,
    visible=lambda _by: _doctors_with_hours(), audited=False,
    documentation="One per doctor who offers video consults; its id is the Practitioner id.",
    params={"actor": fs.ref_param("actor", User.id, "Practitioner", "The doctor")},
))


@dataclass(frozen=True)
class FreeSlot:
    doctor_id: int
    start: datetime
    end: datetime

    @property
    def id(self) -> str:
        return f"{self.doctor_id}-{self.start.astimezone(UTC):%Y%m%d%H%M}"


def slot_to_fhir(slot: FreeSlot) -> dict[str, Any]:
    return {"resourceType": "Slot", "id": slot.id, "schedule": {"reference": f"Schedule/{slot.doctor_id}"},
            "status": "free", "start": fs.instant(slot.start), "end": fs.instant(slot.end),
            "serviceType": [{"text": "Video consult"}]}


def _free(doctor: User, day_from: date, days: int) -> list[FreeSlot]:
    return [FreeSlot(s.doctor_id, s.start, s.end) for s in consults.open_slots(doctor, day_from=day_from, days=days)]


def read_slot(rid: str, _by: User) -> FreeSlot:
    doctor_part, _, stamp = rid.partition("-")
    try:
        start = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        start = None
    doctor = db.session.scalar(_doctors_with_hours().where(User.id == record_id(doctor_part)))
    if start is None or doctor is None:
        raise NotFound("No free Slot with that id.")
    for slot in _free(doctor, start.date(), 1):
        if slot.start == start:
            return slot
    raise NotFound("That slot is not free (any more).")


def search_slots(search: fs.Search, _by: User) -> tuple[list[Any], int]:
    """Free slots over the next two weeks (or from the ``start`` asked for), soonest first."""
    doctors = _doctors_with_hours()
    day_from = db.utcnow().date()
    ranges = []
    for name, _modifier, values in search.filters:
        if name == "schedule":
            doctors = fs.reference(User.id, "Schedule")(doctors, values, None)
        elif name == "status" and not any(code == "free" for _s, code in fs.token_values(values)):
            return [], 0
        elif name == "start":
            ranges.append([fs.date_range(v) for v in values])
        elif name == "_id":
            doctors = doctors.where(sa.false())
    for alternatives in ranges:
        earliest = min(start for prefix, start, _end in alternatives if prefix in ("eq", "ge", "gt", "sa"))\
            if any(p in ("eq", "ge", "gt", "sa") for p, _s, _e in alternatives) else None
        if earliest is not None:
            day_from = max(day_from, earliest.date())
    slots = [s for doctor in db.session.scalars(doctors.order_by(User.id)) for s in _free(doctor, day_from, SLOT_DAYS)]
    for alternatives in ranges:
        slots = [s for s in slots if any(_in_range(s.start, p, lo, hi) for p, lo, hi in alternatives)]
    slots.sort(key=lambda s: (s.start, s.doctor_id))
    return slots[search.offset:search.offset + search.count], len(slots)


def _in_range(moment: datetime, prefix: str, lo: datetime, hi: datetime) -> bool:
    return {"eq": lo <= moment < hi, "ne": not lo <= moment < hi, "gt": moment >= hi, "sa": moment >= hi,
            "ge": moment >= lo, "lt": moment < lo, "eb": moment < lo, "le": moment < hi}[prefix]


def _unused(query: fs.Query, _values: list[str], _modifier: str | None) -> fs.Query:
    return query  # Slot parameters are applied by search_slots


fs.register(ResourceType(
    name="Slot", model=FreeSlot, to_fhir=slot_to_fhir, read=read_slot, visible=lambda _by: sa.select(),
    audited=False, rows=search_slots,
    documentation=f"Free video-consult slots over the next {SLOT_DAYS} days; book one by creating an Appointment.",
    params={"schedule": SearchParam("schedule", "reference", _unused, "The doctor's Schedule"),
            "start": SearchParam("start", "date", _unused, "When the slot starts (UTC)"),
            "status": SearchParam("status", "token", _unused, "Only 'free' slots are listed")},
))


# ---------------------------------------------------------------- Appointment


def appointment_to_fhir(a: Appointment) -> dict[str, Any]:
    return fs.compact({
        "resourceType": "Appointment",
        "id": str(a.id),
        "meta": {"lastUpdated": fs.instant(a.updated_at)},
        "status": a.status.value,
        "cancelationReason": {"text": a.cancel_reason} if a.cancel_reason else None,
        "serviceType": [{"text": "Video consult"}],
        "appointmentType": coded(*VIDEO),
        "description": a.reason,
        "start": fs.instant(a.start_at),
        "end": fs.instant(a.end_at),
        "minutesDuration": int((a.end_at - a.start_at).total_seconds() // 60),
        "created": fs.instant(a.created_at),
        "participant": [
            {"actor": fs.compact({"reference": f"Patient/{a.patient_id}"}), "required": "required",
             "status": "accepted"},
            {"actor": practitioner(a.doctor_id, a.doctor.full_name), "required": "required", "status": "accepted"},
        ],
    })


def visible_appointments(by: User) -> fs.Query:
    return sa.select(Appointment).join(Patient, Patient.id == Appointment.patient_id).where(consults.visible_clause(by))


def read_appointment(rid: str, by: User) -> Appointment:
    return consults.get_appointment(record_id(rid), by=by, action="fhir.appointment.read")


def create_appointment(body: dict[str, Any], by: User) -> Appointment:
    """Book a slot for a patient: the patient themself, or staff of the patient's clinic."""
    inputs.only(body, {"status", "participant", "start", "end", "slot", "description", "reasonCode",
                       "serviceType", "appointmentType", "minutesDuration"}, "Appointment")
    if inputs.get(body, "status", str, required=True, resource="Appointment") != "booked":
        raise FhirError("Appointment.status must be 'booked': a free slot is booked at once.", status=422,
                        code="value", expression=["Appointment.status"])
    patient_id = doctor_id = None
    for n, item in enumerate(inputs.get(body, "participant", list, required=True, resource="Appointment")):
        ref = str(inputs.get(item, "actor.reference", str, required=True, resource=f"Appointment.participant[{n}]"))
        path = f"Appointment.participant[{n}].actor"
        if ref.rsplit("/", 2)[-2:-1] == ["Patient"]:
            patient_id = inputs.reference_id(item["actor"], "Patient", path)
        else:
            doctor_id = inputs.reference_id(item["actor"], "Practitioner", path)
    start = inputs.fhir_instant(inputs.get(body, "start", str, resource="Appointment"), "Appointment.start")
    slot_ref = inputs.get(body, "slot[0].reference", str, resource="Appointment")
    if slot_ref is not None:
        slot_doctor, _, stamp = slot_ref.removeprefix("Slot/").partition("-")
        try:
            slot_start = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            raise FhirError("Appointment.slot must reference a Slot from a Slot search.", status=422,
                            code="value", expression=["Appointment.slot"]) from None
        if (start and start != slot_start) or (doctor_id and str(doctor_id) != slot_doctor):
            raise FhirError("Appointment.start and the Practitioner must match the Slot.", status=422,
                            code="business-rule", expression=["Appointment.slot"])
        start, doctor_id = slot_start, record_id(slot_doctor)
    if patient_id is None or doctor_id is None or start is None:
        raise FhirError("An Appointment needs a Patient participant, a Practitioner participant (or a slot) and a "
                        "start.", status=422, code="required", expression=["Appointment.participant"])
    patient = check_reference(patient_id, by, "Appointment.participant")
    reason = inputs.get(body, "description", str, resource="Appointment") or inputs.get(
        body, "reasonCode[0].text", str, resource="Appointment")
    try:
        return consults.book(patient=patient, doctor_id=doctor_id, start=start, by=by, reason=reason)
    except NotFound:
        raise FhirError("Only the patient, or staff of the patient's clinic, can book for this patient.",
                        status=403, code="forbidden") from None


def update_appointment(appointment: Appointment, body: dict[str, Any], by: User) -> Appointment:
    """Cancel (status 'cancelled', with an optional cancelationReason) or move to another free slot (a new start),
    as the patient, their clinic or the doctor can on the web; the rest of the consult happens in the room."""
    inputs.only(body, {"status", "participant", "start", "end", "slot", "description", "reasonCode", "serviceType",
                       "appointmentType", "minutesDuration", "created", "cancelationReason"}, "Appointment")
    status = inputs.get(body, "status", str, required=True, resource="Appointment")
    start = inputs.fhir_instant(inputs.get(body, "start", str, resource="Appointment"), "Appointment.start")
    if status == AppointmentStatus.CANCELLED.value and appointment.status is not AppointmentStatus.CANCELLED:
        reason = inputs.get(body, "cancelationReason.text", str, resource="Appointment")
        return consults.cancel(appointment, by=by, reason=reason)
    if status != appointment.status.value:
        raise FhirError("Through FHIR an appointment can be cancelled or moved to another free slot; check-in and "
                        "the consult itself happen in Town Health.", status=422, code="business-rule",
                        expression=["Appointment.status"])
    if start is not None and start != appointment.start_at:
        return consults.reschedule(appointment, start=start, by=by)
    return appointment


fs.register(ResourceType(
    name="Appointment", model=Appointment, to_fhir=appointment_to_fhir, read=read_appointment,
    visible=visible_appointments, patient_of=lambda a: a.patient_id, create=create_appointment,
    update=update_appointment,
    documentation="Video consults. Create books a free Slot (status 'booked') for a patient, as on the web; "
                  "update cancels or moves it to another free slot.",
    params={
        **fs.patient_params(Appointment.patient_id),
        "practitioner": fs.ref_param("practitioner", Appointment.doctor_id, "Practitioner", "The doctor"),
        "status": SearchParam("status", "token", fs.token(Appointment.status, transform=AppointmentStatus),
                              "proposed, booked, arrived, fulfilled, cancelled, noshow"),
        "date": SearchParam("date", "date", fs.date_param(Appointment.start_at), "When it starts"),
    },
    sorts={"date": Appointment.start_at},
    includes={"patient": ("Patient", lambda a: [str(a.patient_id)]),
              "practitioner": ("Practitioner", lambda a: [str(a.doctor_id)])},
))


# ---------------------------------------------------------------- Encounter


def encounter_to_fhir(e: Encounter) -> dict[str, Any]:
    return fs.compact({
        "resourceType": "Encounter",
        "id": str(e.id),
        "status": e.status.value,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": e.encounter_class,
                  "display": "virtual"},
        "subject": patient_ref(e.patient_id),
        "participant": [{"individual": practitioner(e.doctor_id)}],
        "appointment": [{"reference": f"Appointment/{e.appointment_id}"}],
        "period": fs.compact({"start": fs.instant(e.started_at), "end": fs.instant(e.ended_at)}),
        "reasonCode": [{"text": e.diagnosis}] if e.diagnosis else None,
    })


def read_encounter(rid: str, by: User) -> Encounter:
    encounter = db.session.get(Encounter, record_id(rid))
    if encounter is None or not consult_access.can_see(encounter.appointment, by):
        audit.forbid("fhir.encounter.read", by=by, patient_id=encounter.patient_id if encounter else None,
                     resource_type="Encounter", resource_id=rid[:64])
    audit.record("fhir.encounter.read", by=by, patient_id=encounter.patient_id, resource_type="Encounter",
                 resource_id=encounter.id)
    return encounter


fs.register(ResourceType(
    name="Encounter", model=Encounter, to_fhir=encounter_to_fhir, read=read_encounter,
    visible=lambda by: (sa.select(Encounter).join(Appointment, Appointment.id == Encounter.appointment_id)
                        .join(Patient, Patient.id == Appointment.patient_id).where(consults.visible_clause(by))),
    patient_of=lambda e: e.patient_id, documentation="Virtual consults (class VR).",
    params={
        **fs.patient_params(Encounter.patient_id, "patient", "subject"),
        "status": SearchParam("status", "token", fs.token(Encounter.status, transform=EncounterStatus),
                              "in-progress, finished"),
        "date": SearchParam("date", "date", fs.date_param(Encounter.started_at), "When it started"),
        "appointment": fs.ref_param("appointment", Encounter.appointment_id, "Appointment", "The booked consult"),
    },
    sorts={"date": Encounter.started_at},
    includes={"patient": ("Patient", lambda e: [str(e.patient_id)]),
              "appointment": ("Appointment", lambda e: [str(e.appointment_id)])},
))
