"""Refusals in the consult domain leave an audit row: a wrong role managing availability, asking for the doctor's
day view, or checking a patient in is refused and recorded, like every other denied access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.consults import service
from app.errors import Forbidden
from tests.consults.helpers import current_slot


def _denied(actor_id: int, action: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.actor_id == actor_id, AuditEvent.action == action, AuditEvent.outcome == Outcome.DENIED)))


def test_only_doctors_block_availability_and_the_refusal_is_audited(app_ctx, factories):
    staff = factories.nurse()
    now = datetime.now(UTC)
    with pytest.raises(Forbidden):
        service.add_exception(by=staff, starts_at=now, ends_at=now + timedelta(hours=1))
    assert len(_denied(staff.id, "availability.exception")) == 1


def test_only_doctors_have_a_day_view_and_the_refusal_is_audited(app_ctx, factories):
    patient = factories.patient(with_account=True)
    with pytest.raises(Forbidden):
        service.day_view(patient.user)
    assert len(_denied(patient.user.id, "appointment.list")) == 1


def test_a_doctor_cannot_check_the_patient_in_and_the_refusal_is_audited(app_ctx, factories):
    doctor = factories.doctor()
    patient = factories.patient(with_account=True, doctor=doctor)
    appointment = current_slot(doctor, patient, by=patient.user)
    with pytest.raises(Forbidden):
        service.check_in(appointment, by=doctor)
    rows = _denied(doctor.id, "appointment.check_in")
    assert [(r.patient_id, r.resource_id) for r in rows] == [(patient.id, str(appointment.id))]
