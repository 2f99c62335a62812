"""Reading-loop fixtures: a clinic with a nurse, a patient with a portal account and a stored CT study, and
doctors whose second factor is set up (a report is signed with a code, as at sign-in)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.auth import mfa
from app.auth.models import User
from app.imaging.ingest import store_one
from app.imaging.models import Study
from app.patients.models import Patient
from app.reading import service
from tests.imaging.dicomgen import ct_slice


def enrol(user: User) -> pyotp.TOTP:
    """Set up an authenticator for ``user``; returns it (codes come from :func:`next_code`)."""
    seed = mfa.start_enrolment(user)
    totp = pyotp.TOTP(seed)
    mfa.confirm_enrolment(user, totp.now())
    db.session.commit()
    return totp


def next_code(totp: pyotp.TOTP) -> str:
    """A code of a later time step than any used so far (each code is accepted once)."""
    return totp.at(int(time.time()) + 30)


def store_study(nurse: User, patient: Patient, *, slices: int = 2, study_date: str = "20240115") -> Study:
    study_uid, series_uid = generate_uid(), generate_uid()
    for n in range(1, slices + 1):
        store_one(io.BytesIO(ct_slice(patient_id=patient.mrn, study_uid=study_uid, series_uid=series_uid, number=n,
                                      study_date=study_date)),
                  filename=f"{n}.dcm", by=nurse, facility_id=nurse.facility_id, source="upload")
    study = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study_uid))
    assert study is not None and study.patient_id == patient.id
    return study


@dataclass
class Loop:
    nurse: User
    doctor: User
    other_doctor: User
    patient: Patient
    study: Study
    totp: pyotp.TOTP

    def request(self, **kw: Any) -> Any:
        values: dict[str, Any] = {"question": "Cough for 3 weeks; mass?", "priority": "urgent"}
        values.update(kw)
        req = service.request_reading(self.study, by=self.nurse, **values)
        db.session.commit()
        return req

    def claimed(self, **kw: Any) -> Any:
        req = self.request(**kw)
        service.claim(req, by=self.doctor)
        db.session.commit()
        return req

    def signed(self, *, critical: bool = False, **kw: Any) -> Any:
        req = self.claimed(**kw)
        service.sign(req, by=self.doctor, code=next_code(self.totp), critical=critical,
                     data=service.ReportInput(findings="2 cm nodule, right upper lobe.", impression="1. Nodule.",
                                              patient_summary="A small spot on the lung needs a follow-up scan."))
        db.session.commit()
        return req


@pytest.fixture
def loop(app_ctx: Any, factories: Any) -> Loop:
    nurse = factories.nurse()
    doctor = factories.doctor(name="Dr Ada Reader")
    other = factories.doctor(name="Dr Ben Second")
    patient = factories.patient(with_account=True)
    study = store_study(nurse, patient)
    return Loop(nurse=nurse, doctor=doctor, other_doctor=other, patient=patient, study=study, totp=enrol(doctor))
