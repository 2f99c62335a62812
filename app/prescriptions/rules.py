"""Safety checks run before a prescription is signed: allergy, duplicate therapy, interactions, dose.

A *warning* may be overridden by the prescriber with a recorded reason; a *contraindication* blocks signing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from app import db
from app.patients.models import ClinicalStatus, Patient
from app.prescriptions.models import Drug, DrugInteraction, InteractionSeverity, Prescription, RequestStatus

WARNING = "warning"
CONTRAINDICATION = "contraindication"


@dataclass(frozen=True)
class Finding:
    code: str
    kind: str
    level: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _words(text: str) -> list[str]:
    """Lower-case words without a plural "s", so "Penicillins" and "penicillin" compare equal."""
    return [w[:-1] if w.endswith("s") and len(w) > 4 else w for w in re.findall(r"[a-z0-9]+", text.lower())]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _matches(term: str, drug: Drug) -> bool:
    """An allergy names a drug or its class as whole words, either way round: "ACE inhibitors" matches
    lisinopril's class, "amoxicillin capsules" matches amoxicillin, but "ace" does not match paracetamol."""
    words = _words(term)
    if not words or sum(map(len, words)) < 3:
        return False
    return any(_contains(words, name) or _contains(name, words)
               for name in (_words(drug.name), _words(drug.drug_class)))


def _other_drugs(patient: Patient, *, exclude_id: int | None) -> list[tuple[Drug, str]]:
    """Drugs the patient is on: active prescriptions, and recorded medications that name a formulary drug."""
    found: list[tuple[Drug, str]] = []
    rows = db.session.scalars(sa.select(Prescription).where(
        Prescription.patient_id == patient.id,
        Prescription.status.in_([RequestStatus.ACTIVE, RequestStatus.ON_HOLD]),
        Prescription.id != (exclude_id or 0)))
    counted: set[int] = set()
    for rx in rows:
        found.append((rx.drug, f"prescription #{rx.id}"))
        counted.add(rx.id)
    drugs = list(db.session.scalars(sa.select(Drug).where(Drug.active.is_(True))))
    for med in patient.medications:
        if med.status is not ClinicalStatus.ACTIVE or med.prescription_id in counted:
            continue  # an entry a prescription put on the list is that prescription, already counted
        for drug in drugs:
            if _contains(_words(med.name), _words(drug.name)):
                found.append((drug, f"recorded medication {med.name}"))
                break
    return found


def check(patient: Patient, drug: Drug, *, dose_units: float, frequency_per_day: int,
          exclude_id: int | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for allergy in patient.allergies:
        if allergy.status is ClinicalStatus.ACTIVE and _matches(allergy.substance, drug):
            level = WARNING if allergy.severity.value == "mild" else CONTRAINDICATION
            findings.append(Finding(f"allergy:{allergy.id}", "allergy", level,
                                    f"Recorded {allergy.severity.value} allergy to {allergy.substance} "
                                    f"matches {drug.name} ({drug.drug_class})."))
    others = _other_drugs(patient, exclude_id=exclude_id)
    for other, source in others:
        if other.id == drug.id:
            findings.append(Finding(f"duplicate:{source}", "duplicate", WARNING,
                                    f"{drug.name} is already active ({source})."))
        elif other.drug_class == drug.drug_class:
            findings.append(Finding(f"duplicate-class:{source}", "duplicate", WARNING,
                                    f"Same class ({drug.drug_class}) already active: {other.name} ({source})."))
    keys_new = {drug.code, drug.drug_class}
    interactions = list(db.session.scalars(sa.select(DrugInteraction)))
    for other, source in others:
        if other.id == drug.id:
            continue
        keys_other = {other.code, other.drug_class}
        for ix in interactions:
            if (ix.a in keys_new and ix.b in keys_other) or (ix.b in keys_new and ix.a in keys_other):
                level = CONTRAINDICATION if ix.severity is InteractionSeverity.CONTRAINDICATED else WARNING
                findings.append(Finding(f"interaction:{ix.id}:{source}", "interaction", level,
                                        f"{ix.severity.value.capitalize()} interaction of {drug.name} with "
                                        f"{other.name} ({source}): {ix.description}"))
    daily = dose_units * frequency_per_day * drug.strength_mg
    if daily > 2 * drug.max_daily_mg:
        findings.append(Finding("dose:max", "dose", CONTRAINDICATION,
                                f"Daily dose {daily:g} mg is more than twice the maximum of {drug.max_daily_mg:g} mg."))
    elif daily > drug.max_daily_mg:
        findings.append(Finding("dose:max", "dose", WARNING,
                                f"Daily dose {daily:g} mg exceeds the maximum of {drug.max_daily_mg:g} mg."))
    return findings
