"""Prescribing rules: drafts, safety checks, signing, status changes, reads, and QR verification.

Every function takes the acting user (``by=``), checks :mod:`app.prescriptions.access`, and writes an audit
event. Refused or invalid attempts are audited as durable failures and change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext

from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.catalogue import N_
from app.errors import Conflict, Forbidden, ValidationFailed
from app.facilities.models import Facility
from app.patients import service as patients
from app.patients.models import Patient
from app.prescriptions import access, rules, signing
from app.prescriptions.models import Drug, Prescription, RequestStatus

RT = "MedicationRequest"
LIMITS = {
    "dose_units": (0.0, 20.0), "frequency_per_day": (1, 24), "duration_days": (1, 365),
    "quantity": (1, 1000), "refills": (0, 12),
}

TRANSITIONS: dict[RequestStatus, set[RequestStatus]] = {
    RequestStatus.DRAFT: {RequestStatus.ACTIVE, RequestStatus.CANCELLED},
    RequestStatus.ACTIVE: {RequestStatus.ON_HOLD, RequestStatus.CANCELLED, RequestStatus.STOPPED,
                           RequestStatus.COMPLETED},
    RequestStatus.ON_HOLD: {RequestStatus.ACTIVE, RequestStatus.CANCELLED, RequestStatus.STOPPED},
}
"""Allowed MedicationRequest transitions; completed, cancelled and stopped are final. draft → active only by
:func:`sign`, active → completed only when the pharmacy has handed everything over."""
DOCTOR_TARGETS = {RequestStatus.ON_HOLD, RequestStatus.ACTIVE, RequestStatus.CANCELLED, RequestStatus.STOPPED}


@dataclass
class PrescriptionInput:
    drug_id: int | None
    dose_units: float | None
    frequency_per_day: int | None
    duration_days: int | None
    quantity: int | None
    refills: int | None = 0
    instructions: str | None = None
    dispensing_facility_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def formulary() -> Sequence[Drug]:
    return db.session.scalars(sa.select(Drug).where(Drug.active.is_(True)).order_by(Drug.name, Drug.strength)).all()


def pharmacies() -> Sequence[Facility]:
    return db.session.scalars(sa.select(Facility).where(Facility.has_pharmacy.is_(True)).order_by(Facility.name)).all()


def _fail(action: str, by: User, rx_or_patient: Prescription | Patient, exc: Exception,
          detail: dict[str, Any] | None = None) -> Exception:
    patient_id = rx_or_patient.patient_id if isinstance(rx_or_patient, Prescription) else rx_or_patient.id
    rid = rx_or_patient.id if isinstance(rx_or_patient, Prescription) else None
    audit.record(action, by=by, outcome=Outcome.FAILURE, patient_id=patient_id, resource_type=RT, resource_id=rid,
                 detail=detail or {"error": type(exc).__name__})
    return exc


def suggested_quantity(dose_units: object, frequency_per_day: object, duration_days: object) -> int | None:
    """Units for the whole course (dose x times a day x days, rounded up), or None if a part is missing."""
    parts = (dose_units, frequency_per_day, duration_days)
    if not all(isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p) and p > 0 for p in parts):
        return None
    return math.ceil(float(dose_units) * float(frequency_per_day) * float(duration_days) - 1e-9)  # type: ignore[arg-type]


def _validate(data: PrescriptionInput, patient: Patient) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    if data.quantity is None:  # the whole course unless the prescriber says otherwise
        data.quantity = suggested_quantity(data.dose_units, data.frequency_per_day, data.duration_days)
    drug = (db.session.get(Drug, data.drug_id)
            if isinstance(data.drug_id, int) and not isinstance(data.drug_id, bool) else None)
    if drug is None or not drug.active:
        errors["drug_id"] = ["Choose a drug from the formulary."]
    clean: dict[str, Any] = {"drug": drug}
    for name, (low, high) in LIMITS.items():
        value = getattr(data, name)
        if value is None:
            if name == "refills":
                value = 0
            else:
                errors.setdefault(name, []).append("This field is required.")
                continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            errors.setdefault(name, []).append("Enter a number.")
            continue
        if name != "dose_units" and value != int(value):
            errors.setdefault(name, []).append("Enter a whole number.")
            continue
        if name == "dose_units" and not (low < value <= high):
            errors.setdefault(name, []).append(f"Enter more than {low:g} and at most {high:g}.")
        elif name != "dose_units" and not (low <= value <= high):
            errors.setdefault(name, []).append(f"Enter a value from {low} to {high}.")
        clean[name] = float(value) if name == "dose_units" else int(value)
    instructions = (data.instructions or "").strip()
    if len(instructions) > 500:
        errors["instructions"] = ["Use at most 500 characters."]
    clean["instructions"] = instructions or None
    facility_id = data.dispensing_facility_id or patient.facility_id
    valid_id = isinstance(facility_id, int) and not isinstance(facility_id, bool)
    facility = db.session.get(Facility, facility_id) if valid_id else None
    if facility is None or not facility.has_pharmacy:
        errors["dispensing_facility_id"] = ["Choose a clinic with a pharmacy."]
    clean["dispensing_facility_id"] = facility_id
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    return clean


def create_draft(patient: Patient, data: PrescriptionInput, *, by: User) -> Prescription:
    """Start a prescription (a doctor treating the patient).

    :raises NotFound: no care relationship (audited). :raises ValidationFailed: bad field (audited).
    """
    if not access.can_prescribe(by, patient):
        audit.forbid("prescription.create", by=by, patient_id=patient.id, resource_type=RT)
    try:
        clean = _validate(data, patient)
    except ValidationFailed as exc:
        raise _fail("prescription.create", by, patient, exc, {"fields": sorted(exc.errors or {})}) from None
    rx = Prescription(patient_id=patient.id, prescriber_id=by.id, drug_id=clean["drug"].id,
                      **{k: v for k, v in clean.items() if k != "drug"})
    db.session.add(rx)
    db.session.flush()
    audit.record("prescription.create", by=by, patient_id=patient.id, resource_type=RT, resource_id=rx.id)
    return rx


def update_draft(rx: Prescription, data: PrescriptionInput, *, by: User) -> Prescription:
    """Change a draft. :raises Conflict: the prescription is signed (frozen); audited."""
    if not access.can_manage(by, rx):
        audit.forbid("prescription.update", by=by, patient_id=rx.patient_id, resource_type=RT,
                     resource_id=rx.id)
    if rx.status is not RequestStatus.DRAFT:
        raise _fail("prescription.update", by, rx,
                    Conflict("A signed prescription cannot be edited; stop it and write a new one."),
                    {"error": "signed"})
    try:
        clean = _validate(data, rx.patient)
    except ValidationFailed as exc:
        raise _fail("prescription.update", by, rx, exc, {"fields": sorted(exc.errors or {})}) from None
    rx.drug = clean.pop("drug")
    for key, value in clean.items():
        setattr(rx, key, value)
    rx.overrides = None
    db.session.flush()
    audit.record("prescription.update", by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=rx.id)
    return rx


def get(rx_id: int, *, by: User, action: str = "prescription.read", audit_read: bool = True) -> Prescription:
    """:raises NotFound: unknown id or no access (same answer, audited)."""
    rx = db.session.get(Prescription, rx_id)
    if rx is None or not access.can_read(by, rx):
        audit.forbid(action, by=by, patient_id=rx.patient_id if rx else None, resource_type=RT,
                     resource_id=rx_id)
    if audit_read:
        audit.record(action, by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=rx.id)
    return rx


def for_patient(patient: Patient, *, by: User) -> list[Prescription]:
    """A patient's prescriptions visible to ``by`` (drafts only to doctors), newest first."""
    return list(db.read_once(("prescriptions_for_patient", patient.id, by.id), lambda: _read_list(patient, by)))


def _read_list(patient: Patient, by: User) -> list[Prescription]:
    """The list and its one audit row (the chart's prescriptions and visit-history panels share them)."""
    query = sa.select(Prescription).where(Prescription.patient_id == patient.id).order_by(Prescription.id.desc())
    rows = [rx for rx in db.session.scalars(query) if access.can_read(by, rx)]
    audit.record("prescription.list", by=by, patient_id=patient.id, resource_type=RT,
                 detail={"ids": [rx.id for rx in rows]})
    return rows


def signed_by_between(patient_id: int, prescriber_id: int, start: datetime, end: datetime) -> list[Prescription]:
    """What a doctor signed for a patient in a time window (a consult's visit summary lists them)."""
    return list(db.session.scalars(sa.select(Prescription).where(
        Prescription.patient_id == patient_id, Prescription.prescriber_id == prescriber_id,
        Prescription.signed_at >= start, Prescription.signed_at <= end).order_by(Prescription.signed_at)))


def mine(*, by: User) -> tuple[Patient | None, list[Prescription]]:
    """The signed-in patient's prescriptions ("My prescriptions")."""
    patient = patients.get_own_record(by=by, right=access.CAREGIVER_READS, action="prescription.list")
    if patient is None:
        return None, []
    return patient, for_patient(patient, by=by)


def findings(rx: Prescription) -> list[rules.Finding]:
    return rules.check(rx.patient, rx.drug, dose_units=rx.dose_units, frequency_per_day=rx.frequency_per_day,
                       exclude_id=rx.id)


def canonical_document(rx: Prescription, *, kid: str) -> dict[str, Any]:
    """What the signature covers: everything a pharmacist needs to dispense, nothing that changes later."""
    assert rx.signed_at is not None
    p, d = rx.patient, rx.drug
    return {
        "v": 1, "kid": kid, "id": rx.id, "signed_at": rx.signed_at.isoformat(timespec="seconds"),
        "patient": {"id": p.id, "mrn": p.mrn, "name": f"{p.given_name} {p.family_name}",
                    "birth_date": p.birth_date.isoformat()},
        "prescriber": {"id": rx.prescriber_id, "name": rx.prescriber.full_name},
        "drug": {"code": d.code, "name": d.name, "strength": d.strength, "form": d.form, "route": d.route},
        "dose_units": rx.dose_units, "frequency_per_day": rx.frequency_per_day,
        "duration_days": rx.duration_days, "quantity": rx.quantity, "refills": rx.refills,
        "instructions": rx.instructions or "", "dispensing_facility": rx.dispensing_facility.code,
    }


def sign(rx: Prescription, *, by: User, overrides: dict[str, str] | None = None) -> Prescription:
    """Run the safety checks, record overridden warnings, and freeze the prescription with a signature.

    :raises Conflict: already signed, a contraindication, or a warning without an override reason (audited;
        ``findings`` lists them).
    """
    if not access.can_manage(by, rx):
        audit.forbid("prescription.sign", by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=rx.id)
    if rx.status is not RequestStatus.DRAFT:
        raise _fail("prescription.sign", by, rx, Conflict("This prescription is already signed or closed."),
                    {"error": "not-draft"})
    overrides = {k: (v or "").strip() for k, v in (overrides or {}).items()}
    found = findings(rx)
    blocking = [f for f in found if f.level == rules.CONTRAINDICATION]
    unacknowledged = [f for f in found if f.level == rules.WARNING and len(overrides.get(f.code, "")) < 3]
    if blocking or unacknowledged:
        detail = ("A contraindication blocks this prescription." if blocking
                  else "Give a reason for each warning you override.")
        raise _fail("prescription.sign", by, rx,
                    Conflict(detail, findings=[f.as_dict() for f in blocking + unacknowledged]),
                    {"blocked": [f.code for f in blocking], "unacknowledged": [f.code for f in unacknowledged]})
    rx.overrides = [dict(f.as_dict(), reason=overrides[f.code][:300]) for f in found] or None
    rx.signed_at = db.utcnow()
    key = signing.app_private_key()
    kid = signing.key_id(key.public_key())
    canonical, signature, _payload = signing.sign(canonical_document(rx, kid=kid), key)
    rx.canonical = canonical.decode()
    rx.content_hash = signing.content_hash(canonical)
    rx.signature = signature
    rx.key_id = kid
    rx.status = RequestStatus.ACTIVE
    db.session.flush()
    patients.record_prescribed_medication(rx.patient, by=by, prescription_id=rx.id, name=rx.drug.display,
                                          dosage=rx.sig)
    audit.record("prescription.sign", by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=rx.id,
                 detail={"hash": rx.content_hash, "overridden": [f.code for f in found]})
    return rx


def qr_payload(rx: Prescription) -> str | None:
    if rx.canonical is None or rx.signature is None:
        return None
    return signing.payload_for(rx.canonical.encode(), rx.signature)


def set_status(rx: Prescription, status: RequestStatus | str, *, by: User, reason: str | None = None) -> Prescription:
    """Hold, resume, stop or cancel (a doctor treating the patient). Open dispenses are cancelled on stop/cancel.

    :raises Conflict: a transition MedicationRequest does not allow from the current status (audited).
    """
    if not access.can_manage(by, rx):
        audit.forbid("prescription.status", by=by, patient_id=rx.patient_id, resource_type=RT,
                     resource_id=rx.id)
    try:
        target = RequestStatus(status)
    except ValueError:
        raise _fail("prescription.status", by, rx, ValidationFailed(
            N_("Some fields need attention."), errors={"status": [N_("Choose a status.")]})) from None
    from app.pharmacy import service as pharmacy

    if rx.status is RequestStatus.DRAFT and target is RequestStatus.ACTIVE:  # the safety checks and signature
        raise _fail("prescription.status", by, rx,
                    Conflict("A draft becomes active only by signing it, after its safety checks."),
                    {"from": rx.status.value, "to": target.value})
    if target not in DOCTOR_TARGETS or target not in TRANSITIONS.get(rx.status, set()):
        raise _fail("prescription.status", by, rx,
                    Conflict(gettext("A prescription cannot go from %(old)s to %(new)s.", old=gettext(rx.status.value),
                                     new=gettext(target.value))),
                    {"from": rx.status.value, "to": target.value})
    if target is RequestStatus.CANCELLED and pharmacy.handed_over_quantity(rx) > 0:
        raise _fail("prescription.status", by, rx,
                    Conflict("Medicine was already handed over; stop the prescription instead of cancelling it."),
                    {"from": rx.status.value, "to": target.value})
    previous = rx.status
    rx.status = target
    rx.status_reason = (reason or "").strip()[:300] or None
    if target in (RequestStatus.CANCELLED, RequestStatus.STOPPED):
        pharmacy.cancel_open_dispenses(rx, by=by, reason=f"prescription {target.value}")
        patients.stop_prescribed_medication(rx.patient, by=by, prescription_id=rx.id)
    db.session.flush()
    audit.record("prescription.status", by=by, patient_id=rx.patient_id, resource_type=RT, resource_id=rx.id,
                 detail={"from": previous.value, "to": target.value})
    return rx


def mark_completed(rx: Prescription) -> None:
    """Called by the pharmacy once everything authorised has been handed over."""
    if RequestStatus.COMPLETED in TRANSITIONS.get(rx.status, set()):
        rx.status = RequestStatus.COMPLETED


@dataclass
class Verification:
    valid: bool
    checks: list[dict[str, Any]]
    document: dict[str, Any]
    prescription: Prescription | None


def verify(payload: str, *, by: User) -> Verification:
    """Check a scanned QR payload: signature, unaltered against the record, still dispensable here.

    :raises Forbidden: not a pharmacist. :raises ValidationFailed: damaged or forged payload (audited).
    """
    if by.role is not Role.PHARMACIST:
        audit.forbid("prescription.verify", by=by, resource_type=RT,
                     error=Forbidden("Only pharmacists verify prescription codes."))
    try:
        document = signing.verify_payload(payload[:8000], signing.app_private_key().public_key())
    except signing.InvalidPayload as exc:
        audit.record("prescription.verify", by=by, outcome=Outcome.FAILURE, resource_type=RT,
                     detail={"error": str(exc)})
        raise ValidationFailed(N_("This prescription code is not valid."), errors={"payload": [str(exc)]}) from None
    from app.pharmacy import service as pharmacy

    rx = db.session.get(Prescription, document.get("id")) if isinstance(document.get("id"), int) else None
    # The messages are for the pharmacist at the counter, in their language; "check" names each one for programs.
    checks = [{"check": "signature", "ok": True, "message": gettext("Signed by this hospital's key.")}]
    if rx is None or rx.dispensing_facility_id != by.facility_id:
        checks.append({"check": "record", "ok": False, "message": gettext("Not a prescription for this pharmacy.")})
        rx = None
    else:
        same = rx.content_hash == signing.content_hash(signing.canonical_bytes(document))
        checks.append({"check": "unaltered", "ok": same,
                       "message": gettext("Matches the signed record.") if same
                       else gettext("Differs from the signed record.")})
        dispensable = rx.status is RequestStatus.ACTIVE
        checks.append({"check": "status", "ok": dispensable,
                       "message": gettext("Prescription is %(status)s.", status=gettext(rx.status.value))})
        left = pharmacy.remaining(rx)
        checks.append({"check": "not-dispensed", "ok": left > 0,
                       "message": gettext("%(left)s of %(total)s units left to dispense.", left=left,
                                          total=rx.total_authorised) if left > 0
                       else gettext("Already fully dispensed.")})
    valid = all(c["ok"] for c in checks)
    audit.record("prescription.verify", by=by, outcome=Outcome.SUCCESS if valid else Outcome.FAILURE,
                 patient_id=rx.patient_id if rx else None, resource_type=RT,
                 resource_id=rx.id if rx else document.get("id"), detail={"valid": valid})
    return Verification(valid=valid, checks=checks, document=document, prescription=rx)
