"""Clinic staff end a doctor's care relationship from the chart: the button asks to confirm, the doctor loses the
chart, the end is audited, and staff of another clinic cannot do it."""

from __future__ import annotations

import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.patients.models import CareAssignment


def _assignment(patient_id: int, doctor_id: int) -> CareAssignment:
    row = db.session.scalar(sa.select(CareAssignment).where(CareAssignment.patient_id == patient_id,
                                                            CareAssignment.practitioner_id == doctor_id))
    assert row is not None
    return row


def test_clinic_staff_end_a_care_relationship_and_the_doctor_loses_the_chart(make_client, login, factories):
    nurse, doctor = factories.nurse(), factories.doctor(name="Dr Ended Care")
    patient = factories.patient(doctor=doctor)
    assignment_id = _assignment(patient.id, doctor.id).id
    doc, staff = make_client(), make_client()
    login(doc, doctor)
    login(staff, nurse)
    assert doc.get(f"/patients/{patient.id}").status_code == 200
    chart = staff.get(f"/patients/{patient.id}").data.decode()
    assert f"/patients/{patient.id}/care-team/{assignment_id}/end" in chart
    assert "The doctor will no longer see this chart." in chart  # the confirm step's question

    page = staff.post(f"/patients/{patient.id}/care-team/{assignment_id}/end", follow_redirects=True)
    assert page.status_code == 200
    assert "Care relationship ended" in page.data.decode()
    assert "No doctor assigned yet." in page.data.decode().split('id="care-team"')[1].split("</section>")[0]
    assert doc.get(f"/patients/{patient.id}").status_code == 404
    ended = db.session.get(CareAssignment, assignment_id)
    db.session.refresh(ended)
    assert ended.ended_at is not None
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "care_team.end",
                                                          AuditEvent.resource_id == str(assignment_id)))
    assert event is not None and event.actor_id == nurse.id and event.outcome == Outcome.SUCCESS
    # ending it again is a clear message, not an error page
    again = staff.post(f"/patients/{patient.id}/care-team/{assignment_id}/end", follow_redirects=True)
    assert "not on the patient" in again.data.decode()


def test_staff_of_another_clinic_cannot_end_it_and_the_refusal_is_audited(make_client, login, factories):
    doctor = factories.doctor()
    patient = factories.patient(doctor=doctor)
    assignment_id = _assignment(patient.id, doctor.id).id
    outsider = factories.nurse(facility=factories.facility(name="Other clinic"))
    staff = make_client()
    login(staff, outsider)
    assert staff.post(f"/patients/{patient.id}/care-team/{assignment_id}/end").status_code == 404
    db.session.expire_all()
    assert db.session.get(CareAssignment, assignment_id).ended_at is None
    denied = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == outsider.id,
                                                            AuditEvent.outcome == Outcome.DENIED)).all()
    assert denied
