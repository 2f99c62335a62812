"""Factories for the rows most tests need: facilities, users of each role, patients, care relationships."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from app import db
from app.auth.models import Role, User
from app.auth.passwords import hash_password
from app.facilities.models import Facility, FacilityKind
from app.patients import service as patients
from app.patients.models import Patient, Sex
from app.patients.service import PatientInput

PASSWORD = "correct horse battery staple"  # noqa: S105
_seq = itertools.count(1)
_hash_cache: dict[str, str] = {}


class Factories:
    """Each call commits (a savepoint release inside the test's outer transaction, rolled back at the end)."""

    def __init__(self) -> None:
        self._hospital: Facility | None = None
        self._clinic: Facility | None = None

    def facility(self, *, kind: FacilityKind = FacilityKind.CLINIC, has_pharmacy: bool = True,
                 name: str | None = None) -> Facility:
        n = next(_seq)
        facility = Facility(code=f"F{n}", name=name or f"Clinic {n}", kind=kind,
                            has_pharmacy=has_pharmacy and kind is FacilityKind.CLINIC)
        db.session.add(facility)
        db.session.commit()
        return facility

    @property
    def hospital(self) -> Facility:
        if self._hospital is None:
            self._hospital = self.facility(kind=FacilityKind.HOSPITAL, name="Test Hospital")
        return self._hospital

    @property
    def clinic(self) -> Facility:
        if self._clinic is None:
            self._clinic = self.facility(name="Test Clinic")
        return self._clinic

    def user(self, role: Role, *, facility: Facility | None = None, email: str | None = None,
             name: str | None = None, password: str = PASSWORD, **extra: Any) -> User:
        n = next(_seq)
        if facility is None and role in (Role.CLINIC_STAFF, Role.PHARMACIST):
            facility = self.clinic
        if facility is None and role is Role.DOCTOR:
            facility = self.hospital
        if password not in _hash_cache:
            _hash_cache[password] = hash_password(password)
        user = User(email=email or f"{role.value}{n}@test.example", full_name=name or f"{role.label} {n}",
                    password_hash=_hash_cache[password], role=role,
                    facility_id=facility.id if facility else None, **extra)
        db.session.add(user)
        db.session.commit()
        return user

    def doctor(self, **kw: Any) -> User:
        return self.user(Role.DOCTOR, **kw)

    def nurse(self, **kw: Any) -> User:
        return self.user(Role.CLINIC_STAFF, **kw)

    def pharmacist(self, **kw: Any) -> User:
        return self.user(Role.PHARMACIST, **kw)

    def admin(self, **kw: Any) -> User:
        return self.user(Role.ADMIN, **kw)

    def patient(self, *, facility: Facility | None = None, with_account: bool = False,
                doctor: User | None = None, **fields: Any) -> Patient:
        """Register a patient through the service (as a nurse of ``facility``), optionally with a login."""
        facility = facility or self.clinic
        nurse = self.nurse(facility=facility)
        n = next(_seq)
        data = dict(given_name=f"Given{n}", family_name=f"Family{n}", birth_date=date(1980, 1, 1 + n % 28),
                    sex=Sex.FEMALE)
        data.update(fields)
        patient = patients.register(PatientInput(**data), by=nurse, allow_possible_duplicate=True)
        if with_account:
            account = self.user(Role.PATIENT, email=f"patient{n}@test.example",
                                name=f"{patient.given_name} {patient.family_name}")
            patient.user_id = account.id
        if doctor is not None:
            patients.ensure_care_relationship(patient, doctor, by=nurse)
        db.session.commit()
        return patient
