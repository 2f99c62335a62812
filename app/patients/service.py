"""Patient-record rules: registration, search, chart reads, clinical lists, care relationships.

Every function takes the acting user (``by=``), checks :mod:`app.patients.access`, and writes an audit
event. Other domains open a patient through :func:`get_patient`, never by querying the model directly.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NoReturn

import sqlalchemy as sa
from flask_babel import gettext as _

from app import db
from app.audit import service as audit
from app.audit import wording
from app.audit.models import AuditEvent
from app.auth.models import Role, User
from app.catalogue import N_
from app.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from app.patients import access, caregivers
from app.patients.models import (
    Allergy,
    AllergySeverity,
    CareAssignment,
    CaregiverRight,
    ClinicalStatus,
    Condition,
    MedicationStatement,
    Patient,
    Sex,
)

MAX_AGE_YEARS = 130


@dataclass
class PatientInput:
    given_name: str
    family_name: str
    birth_date: date
    sex: Sex
    phone: str | None = None
    email: str | None = None
    address: str | None = None
    mrn: str | None = None
    allergies: list[dict[str, Any]] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    medications: list[dict[str, Any]] = field(default_factory=list)
    no_known_allergies: bool = False


@dataclass(frozen=True)
class Page:
    items: Sequence[Patient]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 0:
            n *= 2
            n = n - 9 if n > 9 else n
        total += n
    return str((10 - total % 10) % 10)


def generate_mrn() -> str:
    """Eight digits, the last a Luhn check digit so a mistyped MRN is caught; random so ids don't leak counts."""
    while True:
        body = f"{secrets.randbelow(9_000_000) + 1_000_000}"
        mrn = body + _luhn_digit(body)
        if db.session.scalar(sa.select(Patient.id).where(Patient.mrn == mrn)) is None:
            return mrn


def mrn_is_well_formed(mrn: str) -> bool:
    return len(mrn) == 8 and mrn.isdigit() and _luhn_digit(mrn[:7]) == mrn[7]


def _clean(value: str | None, *, name: str, max_len: int, errors: dict[str, list[str]],
           required: bool = False) -> str | None:
    value = (value or "").strip()
    if not value:
        if required:
            errors.setdefault(name, []).append("This field is required.")
        return None
    if len(value) > max_len:
        errors.setdefault(name, []).append(f"Use at most {max_len} characters.")
    if any(ord(c) < 32 for c in value):
        errors.setdefault(name, []).append("Remove control characters.")
    return value


def _validate(data: PatientInput) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean = {
        "given_name": _clean(data.given_name, name="given_name", max_len=100, errors=errors, required=True),
        "family_name": _clean(data.family_name, name="family_name", max_len=100, errors=errors, required=True),
        "phone": _clean(data.phone, name="phone", max_len=32, errors=errors),
        "email": _clean(data.email, name="email", max_len=254, errors=errors),
        "address": _clean(data.address, name="address", max_len=300, errors=errors),
    }
    today = date.today()
    if data.birth_date > today:
        errors.setdefault("birth_date", []).append("Birth date cannot be in the future.")
    elif today.year - data.birth_date.year > MAX_AGE_YEARS:
        errors.setdefault("birth_date", []).append(f"Birth date is more than {MAX_AGE_YEARS} years ago.")
    if clean["phone"] and not all(c.isdigit() or c in "+-() ." for c in clean["phone"]):
        errors.setdefault("phone", []).append("Use digits, spaces and + - ( ) only.")
    if clean["email"] and ("@" not in clean["email"] or " " in clean["email"]):
        errors.setdefault("email", []).append("Enter a valid email address.")
    if data.mrn is not None and not mrn_is_well_formed(data.mrn.strip()):
        errors.setdefault("mrn", []).append("An MRN is 8 digits with a valid check digit.")
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    clean["birth_date"] = data.birth_date
    clean["sex"] = data.sex
    return clean


def register(data: PatientInput, *, by: User, allow_possible_duplicate: bool = False) -> Patient:
    """Register a patient at the acting clinic-staff member's clinic.

    :raises Forbidden: the actor is not clinic staff.
    :raises ValidationFailed: a field is wrong (named in ``errors``).
    :raises Conflict: the MRN is taken, or a patient with the same name and birth date exists at the clinic
        (pass ``allow_possible_duplicate`` once a person has checked).
    """
    if by.role is not Role.CLINIC_STAFF:
        audit.forbid("patient.create", by=by, resource_type="Patient",
                     error=Forbidden("Only clinic staff can register patients."))
    clean = _validate(data)
    mrn = data.mrn.strip() if data.mrn else None
    if mrn and db.session.scalar(sa.select(Patient.id).where(Patient.mrn == mrn)) is not None:
        raise Conflict(N_("That MRN belongs to another patient."), errors={"mrn": [N_("Already in use.")]})
    if not allow_possible_duplicate:
        twin = db.session.scalar(sa.select(Patient.id).where(
            Patient.facility_id == by.facility_id,
            Patient.family_name_search == clean["family_name"].lower(),
            Patient.given_name_search == clean["given_name"].lower(),
            Patient.birth_date == clean["birth_date"]))
        if twin is not None:
            raise Conflict("A patient with the same name and birth date is already registered here.",
                           possible_duplicate_id=twin)
    patient = Patient(
        mrn=mrn or generate_mrn(),
        given_name_search=clean["given_name"].lower(),
        family_name_search=clean["family_name"].lower(),
        facility_id=by.facility_id,
        registered_by_id=by.id,
        **clean,
    )
    db.session.add(patient)
    db.session.flush()
    if data.no_known_allergies and data.allergies:
        raise ValidationFailed(N_("Some fields need attention."), errors={
            "no_known_allergies": [N_("Untick this, or remove the allergies listed.")]})
    for list_name, add in (("allergies", add_allergy), ("conditions", add_condition),
                           ("medications", add_medication)):
        for n, item in enumerate(getattr(data, list_name), 1):
            try:
                add(patient, by=by, **item)
            except AppError as exc:  # name the list and the line, not a field the form does not have
                messages = [m for msgs in (exc.errors or {}).values() for m in msgs] or [exc.detail]
                raise ValidationFailed("Some fields need attention.", errors={
                    list_name: [f"Line {n}: {m}" for m in messages]}) from None
    if data.no_known_allergies:
        record_no_known_allergies(patient, by=by)
    audit.record("patient.create", by=by, patient_id=patient.id, resource_type="Patient", resource_id=patient.id)
    return patient


def get_patient(patient_id: int, *, by: User, action: str = "patient.read", audit_read: bool = True) -> Patient:
    """Open a patient's record for ``by``.

    :raises NotFound: no such patient, or no access (same answer, audited as denied, so ids leak nothing).
    """
    patient = db.session.get(Patient, patient_id)
    if patient is None or not access.can_read(by, patient):
        access.refuse(action, by, patient_id)
    if audit_read:
        audit.record(action, by=by, patient_id=patient.id, resource_type="Patient", resource_id=patient.id)
    return patient


def get_own_record(*, by: User, right: CaregiverRight | tuple[CaregiverRight, ...] = CaregiverRight.RECORD,
                   action: str = "patient.read") -> Patient | None:
    """The record the patient pages show ("My health", my prescriptions, booking...): the signed-in patient's
    own, or, while they act as a caregiver, the record of the person they act for. None if no record is linked.

    :raises Forbidden: acting for someone who has granted none of ``right`` (audited as ``action``, denied).
    """
    rights = right if isinstance(right, tuple) else (right,)
    if by.role is not Role.PATIENT:
        return None
    acting = access.acting_for_id()
    if acting is not None:
        patient = db.session.get(Patient, acting)
        if patient is None:
            access.refuse(action, by, acting)
        if not any(access.may_act_for(by, patient, r) for r in rights):
            caregivers.refuse(rights[0], patient, by=by, action=action)
    else:
        patient = db.session.scalar(sa.select(Patient).where(Patient.user_id == by.id))
    if patient is not None:
        audit.record("patient.read", by=by, patient_id=patient.id, resource_type="Patient", resource_id=patient.id)
    return patient


def caregiver_refusal(right: CaregiverRight, patient: Patient, *, by: User, action: str) -> NoReturn:
    """The audited, friendly refusal for a caregiver acting beyond the rights the patient gave them."""
    caregivers.refuse(right, patient, by=by, action=action)


def _name_or_mrn(text: str) -> list[sa.ColumnElement[bool]]:
    """Conditions for up to four typed words, each a case-insensitive prefix of either name or the MRN."""
    terms = [t for t in (w.replace("\\", "").replace("%", "").replace("_", "")
                         for w in text.lower().replace(",", " ").split()[:4]) if t]
    return [sa.or_(Patient.family_name_search.startswith(t), Patient.given_name_search.startswith(t),
                   Patient.mrn == t) for t in terms]


def search(*, by: User, q: str | None = None, mrn: str | None = None, birth_date: date | None = None,
           page: int = 1, per_page: int = 20) -> Page:
    """Search the patients ``by`` may see; name matches are case-insensitive prefixes of either name."""
    if by.role in (Role.ADMIN,):
        audit.forbid("patient.search", by=by,
                     error=Forbidden("Administrators do not have access to patient records."))
    page = max(page, 1)
    per_page = min(max(per_page, 1), 100)
    query = sa.select(Patient).where(access.visible_clause(by))
    if q:
        query = query.where(*_name_or_mrn(q))
    if mrn:
        query = query.where(Patient.mrn == mrn.strip())
    if birth_date:
        query = query.where(Patient.birth_date == birth_date)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    items = db.session.scalars(query.order_by(Patient.family_name_search, Patient.given_name_search, Patient.id)
                               .limit(per_page).offset((page - 1) * per_page)).all()
    audit.record("patient.search", by=by, resource_type="Patient",
                 detail={"results": len(items), "page": page, "ids": [p.id for p in items]})
    return Page(items=items, total=total, page=page, per_page=per_page)


def update_demographics(patient: Patient, data: PatientInput, *, by: User) -> Patient:
    """:raises NotFound: no write access (audited)."""
    if not access.can_edit_demographics(by, patient):
        access.refuse("patient.update", by, patient.id)
    clean = _validate(data)
    changed = sorted(k for k, v in clean.items() if getattr(patient, k) != v)
    for key, value in clean.items():
        setattr(patient, key, value)
    patient.given_name_search = patient.given_name.lower()
    patient.family_name_search = patient.family_name.lower()
    audit.record("patient.update", by=by, patient_id=patient.id, resource_type="Patient",
                 resource_id=patient.id, detail={"fields": changed})
    return patient


def _check_clinical_write(patient: Patient, by: User, action: str, resource_type: str) -> None:
    if not access.can_edit_clinical(by, patient):
        access.refuse(action, by, patient.id, resource_type)


def _enum(value: Any, enum_type: type, name: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_type)
        raise ValidationFailed(N_("Some fields need attention."),
                               errors={name: [_("Choose one of: %(choices)s.", choices=allowed)]}) from None


def add_allergy(patient: Patient, *, by: User, substance: str, severity: str | AllergySeverity,
                reaction: str | None = None) -> Allergy:
    _check_clinical_write(patient, by, "allergy.create", "AllergyIntolerance")
    errors: dict[str, list[str]] = {}
    substance_clean = _clean(substance, name="substance", max_len=120, errors=errors, required=True)
    reaction_clean = _clean(reaction, name="reaction", max_len=300, errors=errors)
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    assert substance_clean is not None
    if any(a.substance.lower() == substance_clean.lower() and a.status is ClinicalStatus.ACTIVE
           for a in patient.allergies):
        raise Conflict(N_("This allergy is already recorded."), errors={"substance": [N_("Already recorded.")]})
    allergy = Allergy(patient=patient, substance=substance_clean, reaction=reaction_clean,
                      severity=_enum(severity, AllergySeverity, "severity"), recorded_by_id=by.id)
    patient.no_known_allergies_at = patient.no_known_allergies_by_id = None  # superseded by this allergy
    db.session.add(allergy)
    db.session.flush()
    audit.record("allergy.create", by=by, patient_id=patient.id, resource_type="AllergyIntolerance",
                 resource_id=allergy.id)
    return allergy


def record_no_known_allergies(patient: Patient, *, by: User) -> None:
    """Record that the patient was asked and has no known allergies (an empty list only means "not asked").

    :raises Conflict: an active allergy is recorded.
    """
    _check_clinical_write(patient, by, "allergy.none_known", "AllergyIntolerance")
    if patient.active_allergies:
        raise Conflict("An allergy is recorded: mark it inactive first if it was entered by mistake.")
    patient.no_known_allergies_at = db.utcnow()
    patient.no_known_allergies_by_id = by.id
    db.session.flush()
    audit.record("allergy.none_known", by=by, patient_id=patient.id, resource_type="AllergyIntolerance")


def add_condition(patient: Patient, *, by: User, description: str, code: str | None = None,
                  onset_date: date | None = None) -> Condition:
    _check_clinical_write(patient, by, "condition.create", "Condition")
    errors: dict[str, list[str]] = {}
    desc = _clean(description, name="description", max_len=200, errors=errors, required=True)
    code_clean = _clean(code, name="code", max_len=32, errors=errors)
    if onset_date and onset_date > date.today():
        errors.setdefault("onset_date", []).append("Onset cannot be in the future.")
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    assert desc is not None
    condition = Condition(patient=patient, description=desc, code=code_clean, onset_date=onset_date,
                          recorded_by_id=by.id)
    db.session.add(condition)
    db.session.flush()
    audit.record("condition.create", by=by, patient_id=patient.id, resource_type="Condition",
                 resource_id=condition.id)
    return condition


def add_medication(patient: Patient, *, by: User, name: str, dosage: str | None = None) -> MedicationStatement:
    _check_clinical_write(patient, by, "medication.create", "MedicationStatement")
    errors: dict[str, list[str]] = {}
    name_clean = _clean(name, name="name", max_len=120, errors=errors, required=True)
    dosage_clean = _clean(dosage, name="dosage", max_len=200, errors=errors)
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    assert name_clean is not None
    med = MedicationStatement(patient=patient, name=name_clean, dosage=dosage_clean, recorded_by_id=by.id)
    db.session.add(med)
    db.session.flush()
    audit.record("medication.create", by=by, patient_id=patient.id, resource_type="MedicationStatement",
                 resource_id=med.id)
    return med


def _medicine_key(name: str) -> str:
    """Entries for the same medicine share their first word ("Metformin" and "Metformin 500 mg tablet")."""
    first = name.strip().split()[0] if name.strip() else ""
    return "".join(ch for ch in first.lower() if ch.isalnum())


def record_prescribed_medication(patient: Patient, *, by: User, prescription_id: int, name: str,
                                 dosage: str) -> MedicationStatement:
    """Put a signed prescription on the medication list in place of the entries for the same medicine.

    The replaced entries become inactive (never deleted), so nobody reads the old dose beside the new one.
    """
    _check_clinical_write(patient, by, "medicationstatement.create", "MedicationStatement")
    key = _medicine_key(name)
    for old in patient.medications:
        if old.status is ClinicalStatus.ACTIVE and _medicine_key(old.name) == key:
            _deactivate(old, by=by, because={"replaced_by_prescription": prescription_id})
    med = MedicationStatement(patient=patient, name=name[:120], dosage=dosage[:200], recorded_by_id=by.id,
                              prescription_id=prescription_id)
    db.session.add(med)
    db.session.flush()
    audit.record("medicationstatement.create", by=by, patient_id=patient.id, resource_type="MedicationStatement",
                 resource_id=med.id, detail={"prescription_id": prescription_id})
    return med


def stop_prescribed_medication(patient: Patient, *, by: User, prescription_id: int) -> None:
    """Take a stopped or cancelled prescription off the medication list."""
    _check_clinical_write(patient, by, "medicationstatement.update", "MedicationStatement")
    for med in patient.medications:
        if med.prescription_id == prescription_id and med.status is ClinicalStatus.ACTIVE:
            _deactivate(med, by=by, because={"prescription_ended": prescription_id})


def _deactivate(med: MedicationStatement, *, by: User, because: dict[str, Any]) -> None:
    med.status = ClinicalStatus.INACTIVE
    audit.record("medicationstatement.update", by=by, patient_id=med.patient_id,
                 resource_type="MedicationStatement", resource_id=med.id, detail={"status": "inactive", **because})


def set_clinical_status(item: Allergy | Condition | MedicationStatement, status: str, *, by: User) -> None:
    """Resolve or deactivate a list entry; entries are never deleted, so the history stays readable."""
    resource_type = {Allergy: "AllergyIntolerance", Condition: "Condition",
                     MedicationStatement: "MedicationStatement"}[type(item)]
    _check_clinical_write(item.patient, by, f"{resource_type.lower()}.update", resource_type)
    item.status = _enum(status, ClinicalStatus, "status")
    audit.record(f"{resource_type.lower()}.update", by=by, patient_id=item.patient_id,
                 resource_type=resource_type, resource_id=item.id, detail={"status": item.status.value})


def doctors_for_assignment() -> Sequence[User]:
    """Active doctors offered in assignment and reading pickers; read once per page (a chart has two)."""
    return db.read_once(("doctors_for_assignment",), lambda: db.session.scalars(
        sa.select(User).where(User.role == Role.DOCTOR, User.active.is_(True)).order_by(User.full_name)).all())


def care_team(patient: Patient) -> Sequence[CareAssignment]:
    return db.session.scalars(sa.select(CareAssignment).where(CareAssignment.patient_id == patient.id,
                                                              CareAssignment.ended_at.is_(None))
                              .order_by(CareAssignment.assigned_at)).all()


def assign_doctor(patient: Patient, doctor_id: int, *, by: User, reason: str | None = None) -> CareAssignment:
    """Give a doctor a care relationship with the patient (clinic staff of the patient's clinic).

    :raises ValidationFailed: not an active doctor. :raises Conflict: already assigned.
    """
    if not access.can_edit_demographics(by, patient):
        access.refuse("care_team.assign", by, patient.id, "CareTeam")
    doctor = db.session.get(User, doctor_id)
    if doctor is None or doctor.role is not Role.DOCTOR or not doctor.active:
        raise ValidationFailed("Some fields need attention.", errors={"doctor_id": ["Choose an active doctor."]})
    return ensure_care_relationship(patient, doctor, by=by, reason=reason, conflict_if_exists=True)


def ensure_care_relationship(patient: Patient, doctor: User, *, by: User, reason: str | None = None,
                             conflict_if_exists: bool = False) -> CareAssignment:
    """Create the care relationship if missing (also used by consult booking)."""
    existing = db.session.scalar(sa.select(CareAssignment).where(
        CareAssignment.patient_id == patient.id, CareAssignment.practitioner_id == doctor.id,
        CareAssignment.ended_at.is_(None)))
    if existing is not None:
        if conflict_if_exists:
            raise Conflict("This doctor is already on the patient's care team.")
        return existing
    assignment = CareAssignment(patient_id=patient.id, practitioner_id=doctor.id, assigned_by_id=by.id,
                                reason=(reason or "").strip()[:200] or None)
    db.session.add(assignment)
    db.session.flush()
    audit.record("care_team.assign", by=by, patient_id=patient.id, resource_type="CareTeam",
                 resource_id=assignment.id, detail={"practitioner_id": doctor.id})
    return assignment


def end_care_relationship(patient: Patient, assignment_id: int, *, by: User) -> CareAssignment:
    """End a doctor's care relationship with the patient (clinic staff of the patient's clinic): the doctor no
    longer opens the chart through it. The row is kept, with when it ended.

    :raises NotFound: not clinic staff of the patient's clinic (audited), or no such current relationship.
    """
    if not access.can_edit_demographics(by, patient):
        access.refuse("care_team.end", by, patient.id, "CareTeam", assignment_id)
    assignment = db.session.get(CareAssignment, assignment_id)
    if assignment is None or assignment.patient_id != patient.id or assignment.ended_at is not None:
        raise NotFound(_("This doctor is not on the patient's care team."))
    assignment.ended_at = db.utcnow()
    audit.record("care_team.end", by=by, patient_id=patient.id, resource_type="CareTeam", resource_id=assignment.id,
                 detail={"practitioner_id": assignment.practitioner_id})
    return assignment


def create_portal_account(patient: Patient, *, email: str, password: str, by: User) -> User:
    """Give the patient a sign-in for "My health", linked to this record (clinic staff of the patient's clinic).

    :raises Conflict: the record already has an account, or the email is taken.
    :raises ValidationFailed: bad email or weak temporary password.
    """
    from app.auth import service as auth

    if not access.can_edit_demographics(by, patient):
        access.refuse("patient.portal_account", by, patient.id)
    if patient.user_id is not None:
        raise Conflict("This patient already has a portal account.")
    user = auth.create_user(email=email, full_name=f"{patient.given_name} {patient.family_name}", password=password,
                            role=Role.PATIENT, facility_id=None, by=None, must_change_password=True)
    patient.user_id = user.id
    audit.record("patient.portal_account", by=by, patient_id=patient.id, resource_type="User", resource_id=user.id)
    return user


def access_log(patient: Patient, *, by: User, limit: int = 200) -> Sequence[AuditEvent]:
    """"Who viewed my record": the patient (or their clinic) sees every successful access by others."""
    if not (by.role is Role.PATIENT and (patient.user_id == by.id
                                         or access.may_act_for(by, patient, CaregiverRight.RECORD))) \
            and not access.can_edit_demographics(by, patient):
        access.refuse("patient.access_log", by, patient.id)
    events = [e for e in audit.access_log_for_patient(patient.id, limit=limit) if e.actor_id != by.id]
    audit.record("patient.access_log", by=by, patient_id=patient.id, resource_type="Patient", resource_id=patient.id)
    return events


def ids_for_audit(text: str, *, by: User, limit: int = 50) -> list[int]:
    """Patients an administrator names in the audit trail's filter (an MRN, or name prefixes), as ids.

    Administrators have no chart access; this lookup only turns what they typed into the ids the trail
    records, and is itself audited. :raises Forbidden: for anyone else.
    """
    if by.role is not Role.ADMIN:
        audit.forbid("patient.audit_lookup", by=by,
                     error=Forbidden("Only administrators filter the audit trail."))
    conditions = _name_or_mrn(text)
    if not conditions:
        return []
    ids = list(db.session.scalars(sa.select(Patient.id).where(*conditions).order_by(Patient.id).limit(limit)))
    audit.record("patient.audit_lookup", by=by, resource_type="Patient", detail={"results": len(ids)})
    return ids


def access_visits(patient: Patient, *, by: User) -> list[wording.Visit]:
    """The same accesses for people to read: one line per visit of each person, in plain words."""
    return wording.visits(access_log(patient, by=by, limit=5000))
