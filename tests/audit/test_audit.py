"""The audit trail is append-only in the app and in the database, and admins can filter it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.audit.service import AuditImmutable


def _an_event(client, login, factories) -> AuditEvent:
    login(client, factories.nurse())
    db.session.expire_all()
    return db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id.desc())).first()


def test_orm_refuses_to_change_or_delete_an_event(client, login, factories):
    event = _an_event(client, login, factories)
    event.action = "tampered"
    with pytest.raises(AuditImmutable):
        db.session.flush()
    db.session.rollback()
    db.session.delete(db.session.get(AuditEvent, event.id))
    with pytest.raises(AuditImmutable):
        db.session.flush()
    db.session.rollback()


@pytest.mark.smoke
def test_database_trigger_refuses_raw_update_and_delete(client, login, factories):
    event = _an_event(client, login, factories)
    for statement in (sa.update(AuditEvent).where(AuditEvent.id == event.id).values(action="tampered"),
                      sa.delete(AuditEvent).where(AuditEvent.id == event.id)):
        nested = db.session.begin_nested()
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            db.session.execute(statement)
        nested.rollback()
    assert db.session.get(AuditEvent, event.id).action == "auth.sign_in"


def test_denied_access_is_recorded_even_though_the_request_failed(client, login, factories):
    other_clinic_patient = factories.patient(facility=factories.facility())
    nurse = factories.nurse()
    login(client, nurse)
    assert client.post(f"/api/v1/patients/{other_clinic_patient.id}/allergies",
                       json={"substance": "Iodine", "severity": "mild"}).status_code == 404
    db.session.expire_all()
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.actor_id == nurse.id,
                                                           AuditEvent.outcome == Outcome.DENIED)).one()
    assert event.patient_id == other_clinic_patient.id and event.ip == "127.0.0.1"


def test_admin_filters_the_trail_and_others_cannot(make_client, login, factories):
    admin, nurse = factories.admin(), factories.nurse()
    patient = factories.patient()
    staff = make_client()
    login(staff, nurse)
    staff.get(f"/api/v1/patients/{patient.id}")
    staff.get("/api/v1/audit/events")
    browser = make_client()
    login(browser, admin)
    reads = browser.get("/api/v1/audit/events", query_string={"patient_id": patient.id, "action": "patient.read"})
    assert reads.status_code == 200
    assert [(e["actor_id"], e["outcome"]) for e in reads.json["items"]] == [(nurse.id, "success")]
    denied = browser.get("/api/v1/audit/events", query_string={"actor_id": nurse.id, "outcome": "denied"}).json
    assert [e["action"] for e in denied["items"]] == ["audit.search"]
    page = browser.get(f"/admin/audit?patient_id={patient.id}")
    assert page.status_code == 200 and b"patient.read" in page.data
    assert browser.get("/admin/audit?since=not-a-date").status_code == 200


def test_every_chart_read_and_write_is_audited(client, login, factories):
    nurse = factories.nurse()
    patient = factories.patient()
    login(client, nurse)
    client.get(f"/patients/{patient.id}")
    client.post(f"/api/v1/patients/{patient.id}/conditions", json={"description": "Migraine"})
    client.get(f"/api/v1/patients/{patient.id}/conditions")
    db.session.expire_all()
    actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.actor_id == nurse.id,
                                                                    AuditEvent.patient_id == patient.id)
                                 .order_by(AuditEvent.id)).all()
    # The chart's panels (visit history, prescriptions) read while the page renders: their reads are kept too.
    assert actions == ["patient.read", "encounter.list", "prescription.list", "condition.create", "patient.read"]
