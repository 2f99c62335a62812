"""Refusals in the imaging domain leave an audit row: only clinic staff list the scans waiting to be filed, only
administrators manage DICOM peers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.errors import Forbidden
from app.imaging import service
from app.imaging.dimse import peers


def _denied(actor_id: int, action: str) -> int:
    return len(db.session.scalars(sa.select(AuditEvent).where(
        AuditEvent.actor_id == actor_id, AuditEvent.action == action, AuditEvent.outcome == Outcome.DENIED)).all())


def test_only_clinic_staff_see_unmatched_scans_and_the_refusal_is_audited(app_ctx, factories):
    doctor = factories.doctor()
    with pytest.raises(Forbidden):
        service.unmatched_studies(by=doctor)
    assert _denied(doctor.id, "imaging.unmatched.list") == 1


def test_only_administrators_manage_dicom_peers_and_the_refusal_is_audited(app_ctx, factories):
    nurse = factories.nurse()
    with pytest.raises(Forbidden):
        peers.save_peer(None, by=nurse, ae_title="CT1", host="127.0.0.1", port=104, facility_id=nurse.facility_id,
                        description="", permissions={"store"}, active=True)
    assert _denied(nurse.id, "dicom.peer.create") == 1
