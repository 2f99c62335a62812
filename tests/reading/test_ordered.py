"""A study that arrives already ordered: the order asked for a reading, so the request is made on arrival."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from app import db
from app.errors import ValidationFailed
from app.imaging import orders
from app.imaging import service as imaging
from app.imaging.models import ImagingOrder, Study
from app.reading import service
from app.reading.models import Priority, ReadingRequest
from tests.imaging.dicomgen import ct_slice, stow_body

WHEN = datetime(2031, 3, 4, 14, 15, tzinfo=UTC)


def _stow(client: Any, patient: Any, *, accession: str, study_uid: str, number: int = 1) -> None:
    """STOW one slice (its SOP Instance UID fixed by ``number``, so the same number is a re-send)."""
    body, ctype = stow_body([ct_slice(patient_id=patient.mrn, study_uid=study_uid, series_uid=f"{study_uid[:50]}.1",
                                      sop_uid=f"{study_uid[:50]}.1.{number}", number=number, accession=accession)])
    resp = client.post("/dicomweb/studies", data=body, content_type=ctype)
    assert resp.status_code == 200, resp.data[:500]


def _requests(study_uid: str) -> list[ReadingRequest]:
    return list(db.session.scalars(sa.select(ReadingRequest).join(Study, Study.id == ReadingRequest.study_id)
                                   .where(Study.study_instance_uid == study_uid)))


@pytest.mark.smoke
def test_an_ordered_study_reaches_the_worklist_on_arrival(client: Any, factories: Any, login: Any,
                                                          engine: Any) -> None:
    nurse = factories.nurse()
    doctor = factories.doctor(name="Dr Ada Reader")
    patient = factories.patient(facility=nurse.facility)
    login(client, nurse)
    page = client.post(f"/patients/{patient.id}/imaging-orders", follow_redirects=True, data={
        "modality": "CT", "description": "CT chest", "scheduled_at": "2031-03-04T14:15", "read": "y",
        "read_priority": "stat", "read_question": "Sudden breathlessness; embolism?",
        "read_assigned_to_id": str(doctor.id)}).get_data(as_text=True)
    assert "sent to be read when the scan arrives" in page
    order = db.session.scalar(sa.select(ImagingOrder).where(ImagingOrder.patient_id == patient.id))
    assert order is not None and order.read_priority == "stat" and order.read_assigned_to_id == doctor.id
    study_uid = generate_uid()
    _stow(client, patient, accession=order.accession_number, study_uid=study_uid)
    worklist = [r for r in service.worklist(by=doctor) if r.study.study_instance_uid == study_uid]
    assert [(r.priority, r.clinical_question, r.requested_by_id, r.assigned_to_id) for r in worklist] \
        == [(Priority.STAT, "Sudden breathlessness; embolism?", nurse.id, doctor.id)]
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", note := lambda _c, _cur, statement, *_a: seen.append(statement))
    try:
        _stow(client, patient, accession=order.accession_number, study_uid=study_uid, number=2)  # a second slice
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    # already sent to be read: the order is neither read nor locked again for each further slice
    assert not [s for s in seen if "imaging_order" in s], seen
    _stow(client, patient, accession=order.accession_number, study_uid=study_uid, number=2)  # and a re-send
    assert len(_requests(study_uid)) == 1


def test_a_study_no_order_asked_to_read_creates_nothing(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    plain = orders.create_order(patient, by=nurse, modality="CT", description="CT head", scheduled_at=WHEN)
    other_patient = factories.patient(facility=nurse.facility)
    asked = orders.create_order(other_patient, by=nurse, modality="CT", description="CT chest", scheduled_at=WHEN,
                                read=orders.ReadingAsk(priority="urgent", question="Mass?"))
    db.session.commit()
    login(client, nurse)
    uids = [generate_uid() for _ in range(3)]
    _stow(client, patient, accession=plain.accession_number, study_uid=uids[0])  # order not asking to be read
    _stow(client, patient, accession="NOSUCHORDER", study_uid=uids[1])  # matches no order
    _stow(client, patient, accession=asked.accession_number, study_uid=uids[2])  # another patient's order
    assert [_requests(uid) for uid in uids] == [[], [], []]


def test_an_order_asks_only_what_send_to_be_read_accepts(app_ctx: Any, factories: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    pharmacist = factories.pharmacist()
    with pytest.raises(ValidationFailed) as exc:
        orders.create_order(patient, by=nurse, modality="CT", description="CT chest", scheduled_at=WHEN,
                            read=orders.ReadingAsk(priority="whenever", question=" ", assigned_to_id=pharmacist.id))
    assert set(exc.value.errors or {}) == {"priority", "question", "assigned_to_id"}
    db.rollback()
    assert db.session.scalar(sa.select(ImagingOrder).where(ImagingOrder.patient_id == patient.id)) is None


def test_a_failing_arrival_listener_never_fails_the_ingest(client: Any, factories: Any, login: Any) -> None:
    nurse = factories.nurse()
    patient = factories.patient(facility=nurse.facility)
    order = orders.create_order(patient, by=nurse, modality="CT", description="CT chest", scheduled_at=WHEN,
                                read=orders.ReadingAsk(priority="routine", question="Nodule follow-up?"))
    db.session.commit()

    def broken(study_ids: list[int]) -> None:
        db.session.add(ImagingOrder(accession_number=order.accession_number))  # a half-written row, then a crash
        raise RuntimeError("listener down")

    remove = imaging.on_studies_arrived(broken)
    try:
        login(client, nurse)
        study_uid = generate_uid()
        _stow(client, patient, accession=order.accession_number, study_uid=study_uid)
    finally:
        remove()
    study = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study_uid))
    assert study is not None and study.patient_id == patient.id
    assert len(_requests(study_uid)) == 1  # the reading listener still did its part
