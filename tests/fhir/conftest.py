"""A small hospital with one of every FHIR resource, bearer tokens for its people, and an R4 validator."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import date, time
from typing import Any

import pytest
import sqlalchemy as sa
from fhirclient.models.fhirelementfactory import FHIRElementFactory

from app import db
from app.auth import oauth2, oauth_service
from app.auth.models import Role, User
from app.auth.oauth_models import OAuthToken, digest
from app.consults import recordings
from app.consults import service as consults
from app.consults.models import Encounter
from app.imaging.models import Series, Study
from app.patients import caregivers
from app.patients import service as patients
from app.patients.models import Patient
from app.pharmacy import service as pharmacy
from app.prescriptions import service as rx_service
from app.reading import service as reading
from tests.prescriptions.conftest import add_stock, rx_input

FHIR = "application/fhir+json"


def validate(resource: dict[str, Any]) -> Any:
    """Parse strictly with the FHIR 4.0.1 models of SMART's ``fhirclient``: unknown elements, wrong types, bad
    dates and missing required elements fail, in nested and contained resources and Bundle entries too."""
    parsed = FHIRElementFactory.instantiate(resource["resourceType"], resource)
    assert type(parsed).__name__ == resource["resourceType"], resource["resourceType"]  # not a generic fallback
    return parsed


@dataclass
class World:
    nurse: User
    doctor: User
    other_doctor: User
    pharmacist: User
    admin: User
    patient_user: User
    other_patient_user: User
    patient: Any
    other_patient: Any
    allergy: Any
    condition: Any
    statement: Any
    rx: Any
    dispense: Any
    appointment: Any
    encounter: Any
    consent: Any
    study: Any
    reading_request: Any
    report: Any


@pytest.fixture
def world(app: Any, factories: Any) -> World:
    """Maria (penicillin allergy, diabetes, metformin) with a signed prescription being dispensed, a booked video
    consult with recording consent, its encounter, a CT study and her son as caregiver; and Tom, another clinic
    patient."""
    with app.test_request_context("/"):
        doctor = factories.doctor(name="Dr Ada Okafor")
        other_doctor = factories.doctor(name="Dr Ben Other")
        nurse = factories.nurse()
        pharmacist = factories.pharmacist()
        admin = factories.admin()
        patient = factories.patient(with_account=True, doctor=doctor, given_name="Maria", family_name="Gonzalez")
        other = factories.patient(with_account=True, given_name="Tom", family_name="Other")
        allergy = patients.add_allergy(patient, by=nurse, substance="Penicillin", severity="severe",
                                       reaction="Hives")
        condition = patients.add_condition(patient, by=nurse, description="Type 2 diabetes mellitus", code="E11.9")
        statement = patients.add_medication(patient, by=nurse, name="Metformin 500 mg", dosage="1 tablet twice a day")
        rx = rx_service.create_draft(patient, rx_input("PARA500", dose_units=1, frequency_per_day=3, quantity=21),
                                     by=doctor)
        rx_service.sign(rx, by=doctor, overrides={})
        add_stock(rx.dispensing_facility_id, "PARA500", 100)
        dispense = pharmacy.start_dispense(rx, by=pharmacist)
        for weekday in range(7):
            consults.publish_availability(by=doctor, weekday=weekday, start_time=time(0, 0), end_time=time(23, 45))
        slot = consults.open_slots(doctor)[0]
        appointment = consults.book(patient=patient, doctor_id=doctor.id, start=slot.start,
                                    by=db.session.get(User, patient.user_id), reason="Sugar levels")
        consent = recordings.give_consent(appointment, by=db.session.get(User, patient.user_id))
        son = factories.user(Role.PATIENT, name="Luis Gonzalez")  # Maria's caregiver (a RelatedPerson)
        caregivers.link(patient, caregivers.LinkInput(caregiver_email=son.email, relationship="child",
                                                      rights=["record", "book"]),
                        by=db.session.get(User, patient.user_id))
        encounter = Encounter(appointment_id=appointment.id, patient_id=patient.id, doctor_id=doctor.id,
                              diagnosis="Diabetes review")
        uid = f"1.2.826.0.1.3680043.8.498.{uuid.uuid4().int % 10**12}"
        study = Study(study_instance_uid=uid, patient_id=patient.id,
                      facility_id=patient.facility_id, modalities="CT", study_description="Chest CT",
                      study_date=date(2026, 11, 2), accession_number="ACC1")
        db.session.add_all([encounter, study])
        db.session.flush()
        db.session.add(Series(series_instance_uid=f"{uid}.1", study_id=study.id, modality="CT",
                              series_number=1, series_description="Axial"))
        reading_request = reading.request_reading(study, by=nurse, question="Nodule?", priority="routine",
                                                  assigned_to_id=doctor.id)
        reading.claim(reading_request, by=doctor)
        report = reading.save_preliminary(reading_request, reading.ReportInput(
            findings="Clear lungs.", impression="No nodule."), by=doctor)
        db.session.commit()
        assert patient.facility.code and rx.drug.code  # loaded now, for the tests that read them later
        return World(nurse=nurse, doctor=doctor, other_doctor=other_doctor, pharmacist=pharmacist, admin=admin,
                     patient_user=db.session.get(User, patient.user_id),
                     other_patient_user=db.session.get(User, other.user_id), patient=patient, other_patient=other,
                     allergy=allergy, condition=condition, statement=statement, rx=rx, dispense=dispense,
                     appointment=appointment, encounter=encounter, consent=consent, study=study,
                     reading_request=reading_request, report=report)


@pytest.fixture
def bearer(app: Any, factories: Any) -> Any:
    """``bearer(user, scope)`` -> request headers with a live access token for a registered test app, issued for
    the JSON API and FHIR; a patient's token carries their record as its launch patient, as the server's does."""
    admin = factories.admin()

    def make(user: User, scope: str, *, patient_id: int | None = None) -> dict[str, str]:
        with app.test_request_context("/"):
            client, _secret = oauth_service.register_client(oauth_service.ClientInput(
                name="FHIR test app", is_public=False, redirect_uris=["https://app.example/callback"],
                scope=f"openid fhirUser {scope}", grants=["authorization_code"]), by=admin)
            token = secrets.token_urlsafe(24)
            if patient_id is None and user.role is Role.PATIENT and "patient/" in scope:
                patient_id = db.session.scalar(sa.select(Patient.id).where(Patient.user_id == user.id))
            db.session.add(OAuthToken(client_id=client.client_id, user_id=user.id, grant_type="authorization_code",
                                      scope=scope, access_token_hash=digest(token), family_id=secrets.token_hex(8),
                                      user_epoch=user.session_epoch, expires_in=3600, patient_id=patient_id,
                                      audience=" ".join(oauth2.resource_servers())))
            db.session.commit()
        return {"Authorization": f"Bearer {token}", "Accept": FHIR}

    return make
