"""A misfiled scan that was already sent to be read takes its request and report to the right chart."""

from __future__ import annotations

from typing import Any

import pytest

from app import db
from app.errors import Conflict
from app.imaging import service as imaging
from app.reading import service


def test_moving_a_study_moves_its_reading_request_and_report(loop: Any, factories: Any) -> None:
    req = loop.signed()
    right = factories.patient(facility=loop.nurse.facility)
    imaging.link_study(loop.study.id, mrn=right.mrn, by=loop.nurse, accept_mismatches=True)
    db.session.commit()
    db.session.expire_all()
    assert req.patient_id == right.id and req.study.patient_id == right.id
    assert [r.id for r in service.for_patient(right, by=loop.doctor)] == [req.id]
    assert service.for_patient(loop.patient, by=loop.doctor) == []


def test_a_study_with_a_report_is_moved_not_taken_off_every_chart(loop: Any) -> None:
    loop.request()
    with pytest.raises(Conflict, match="Move it to the right patient"):
        imaging.unlink_study(loop.study.id, by=loop.nurse)
