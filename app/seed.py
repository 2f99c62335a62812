"""Demo data for ``make run``: one remote hospital, one town clinic with its pharmacy, and a few people."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa

from app import db
from app.auth import service as auth
from app.auth.models import Role, User
from app.facilities.models import Facility, FacilityKind
from app.patients import service as patients
from app.patients.models import Patient, Sex
from app.patients.service import PatientInput


@dataclass(frozen=True)
class DemoAccount:
    email: str
    name: str
    role: Role
    facility: str | None


DEMO_ACCOUNTS = [
    DemoAccount("admin@hospital.example", "Alex Admin", Role.ADMIN, None),
    DemoAccount("dr.okafor@hospital.example", "Dr. Ngozi Okafor", Role.DOCTOR, "HOSP"),
    DemoAccount("dr.lindqvist@hospital.example", "Dr. Erik Lindqvist", Role.DOCTOR, "HOSP"),
    DemoAccount("nurse.patel@clinic.example", "Priya Patel", Role.CLINIC_STAFF, "TOWN"),
    DemoAccount("pharmacist.moreau@clinic.example", "Luc Moreau", Role.PHARMACIST, "TOWN"),
    DemoAccount("maria.gonzalez@mail.example", "Maria Gonzalez", Role.PATIENT, None),
    DemoAccount("tom.baker@mail.example", "Tom Baker", Role.PATIENT, None),
    DemoAccount("amina.diallo@mail.example", "Amina Diallo", Role.PATIENT, None),
]

DEMO_PATIENTS = {
    "maria.gonzalez@mail.example": dict(
        given_name="Maria", family_name="Gonzalez", birth_date=date(1961, 3, 14), sex=Sex.FEMALE,
        phone="+1 555 0101", address="12 Mill Road",
        allergies=[{"substance": "Penicillin", "severity": "severe", "reaction": "Hives, swelling"}],
        conditions=[{"description": "Type 2 diabetes mellitus", "code": "E11.9"},
                    {"description": "Essential hypertension", "code": "I10"}],
        medications=[{"name": "Metformin", "dosage": "500 mg twice daily"}]),
    "tom.baker@mail.example": dict(
        given_name="Tom", family_name="Baker", birth_date=date(1984, 11, 2), sex=Sex.MALE, phone="+1 555 0102",
        no_known_allergies=True,
        conditions=[{"description": "Asthma", "code": "J45.909"}],
        medications=[{"name": "Salbutamol inhaler", "dosage": "2 puffs as needed"}]),
    "amina.diallo@mail.example": dict(
        given_name="Amina", family_name="Diallo", birth_date=date(2015, 6, 21), sex=Sex.FEMALE,
        phone="+1 555 0103", allergies=[{"substance": "Peanut", "severity": "moderate", "reaction": "Rash"}]),
}


def demo_exists() -> bool:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Facility)) > 0


def seed_demo() -> dict[str, str] | None:
    """Create the demo once; returns the generated passwords, or None if the demo already exists."""
    if demo_exists():
        return None
    hospital = Facility(code="HOSP", name="Riverside Regional Hospital", kind=FacilityKind.HOSPITAL,
                        address="1 Hospital Way, Riverside", timezone="Asia/Shanghai")
    clinic = Facility(code="TOWN", name="Millbrook Town Clinic", kind=FacilityKind.CLINIC, has_pharmacy=True,
                      address="4 Market Square, Millbrook", timezone="Asia/Shanghai")
    db.session.add_all([hospital, clinic])
    db.session.flush()
    facilities = {"HOSP": hospital.id, "TOWN": clinic.id}
    passwords: dict[str, str] = {}
    users: dict[str, User] = {}
    for acct in DEMO_ACCOUNTS:
        password = secrets.token_urlsafe(12)
        passwords[acct.email] = password
        users[acct.email] = auth.create_user(
            email=acct.email, full_name=acct.name, password=password, role=acct.role,
            facility_id=facilities[acct.facility] if acct.facility else None, by=None, must_change_password=False)
    nurse = users["nurse.patel@clinic.example"]
    for email, data in DEMO_PATIENTS.items():
        patient = patients.register(PatientInput(**data), by=nurse)  # type: ignore[arg-type]
        patient.user_id = users[email].id
        if email != "amina.diallo@mail.example":
            patients.assign_doctor(patient, users["dr.okafor@hospital.example"].id, by=nurse,
                                   reason="Regular remote follow-up")
    db.session.flush()
    seed_pharmacy(clinic, doctor=users["dr.okafor@hospital.example"],
                  maria=db.session.scalar(sa.select(Patient).where(Patient.user_id == users[
                      "maria.gonzalez@mail.example"].id)))
    seed_smart_app(users["admin@hospital.example"])
    return passwords


def seed_smart_app(admin: User) -> None:
    """Register the demo SMART app (/smart-demo/) for the address ``hospital run`` serves."""
    from app.auth import oauth_service
    from app.fhir import demo_app

    oauth_service.register_client(oauth_service.ClientInput(
        name=demo_app.APP_NAME, is_public=True,
        redirect_uris=demo_app.redirect_uris(int(os.environ.get("HOSPITAL_PORT", "5000"))),
        scope=demo_app.SCOPE, grants=["authorization_code", "refresh_token"]), by=admin)


DEMO_STOCK = [  # drug code, lot, days to expiry, units; warfarin is deliberately out of stock
    ("AMOX500", "AMX-2411A", 45, 30), ("AMOX500", "AMX-2502C", 400, 200), ("PARA500", "PAR-2409", 300, 500),
    ("IBUP400", "IBU-2501", 250, 120), ("METF500", "MET-2412", 90, 60), ("METF500", "MET-2506", 500, 300),
    ("LISI10", "LIS-2503", 360, 90), ("AMLO5", "AML-2502", 330, 90), ("ATOR20", "ATO-2504", 420, 90),
    ("SALB100", "SAL-2501", 200, 10), ("OMEP20", "OME-2502", 280, 56), ("CLAR500", "CLA-2503", 150, 14),
]


def seed_pharmacy(clinic: Facility, *, doctor: User, maria: Patient | None) -> None:
    """Stock the town pharmacy (two batches of some drugs, to show first-expiring-first picking) and give
    Maria a signed prescription waiting to be dispensed."""
    from datetime import timedelta

    from app.pharmacy.models import StockBatch
    from app.prescriptions import service as prescriptions
    from app.prescriptions.models import Drug

    drugs = {d.code: d for d in db.session.scalars(sa.select(Drug))}
    for code, lot, days, units in DEMO_STOCK:
        db.session.add(StockBatch(facility_id=clinic.id, drug_id=drugs[code].id, lot=lot,
                                  expires_on=date.today() + timedelta(days=days), quantity=units))
    if maria is not None:
        rx = prescriptions.create_draft(maria, prescriptions.PrescriptionInput(
            drug_id=drugs["LISI10"].id, dose_units=1, frequency_per_day=1, duration_days=30, quantity=30, refills=2,
            instructions="Take in the morning; check blood pressure weekly"), by=doctor)
        prescriptions.sign(rx, by=doctor)
    db.session.flush()


def reset_demo_passwords() -> dict[str, str]:
    """Issue fresh passwords for the demo accounts (for someone who missed the first printout)."""
    passwords = {}
    for acct in DEMO_ACCOUNTS:
        user = db.session.scalar(sa.select(User).where(User.email == acct.email))
        if user is not None:
            password = secrets.token_urlsafe(12)
            user.password_hash = auth.hash_password(password)
            user.locked_until = None
            user.failed_sign_ins = 0
            user.session_epoch += 1
            passwords[acct.email] = password
    return passwords


def patient_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Patient)) or 0
