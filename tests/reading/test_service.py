"""The reading loop's rules: each state change and its refusals."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, Outcome
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.imaging import service as imaging
from app.imaging.models import Instance, Series
from app.notify.models import Notification
from app.prescriptions import signing
from app.reading import access, fhir, outputs, service
from app.reading.models import ReadingStatus, VersionKind
from tests.reading.conftest import Loop, next_code


def _events(action: str, outcome: Outcome = Outcome.SUCCESS) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action,
                                                               AuditEvent.outcome == outcome)))


def _notes(user: Any) -> list[Notification]:
    return list(db.session.scalars(sa.select(Notification).where(Notification.recipient_id == user.id)))


@pytest.mark.smoke
def test_request_to_pool_then_claim_records_each_step(loop: Loop) -> None:
    req = loop.request(priority="stat")
    assert req.status is ReadingStatus.REQUESTED and req.assigned_to_id is None and req.requested_at
    assert [r.id for r in service.worklist(by=loop.other_doctor)] == [req.id]  # the whole pool sees it
    service.claim(req, by=loop.doctor)
    assert req.status is ReadingStatus.IN_PROGRESS and req.claimed_by_id == loop.doctor.id and req.claimed_at
    assert service.worklist(by=loop.other_doctor) == []  # gone from the others' lists
    assert _events("reading.request") and _events("reading.claim")


def test_request_refusals_are_audited(loop: Loop, factories: Any) -> None:
    with pytest.raises(ValidationFailed) as exc:
        service.request_reading(loop.study, by=loop.nurse, question="  ", priority="whenever")
    assert set(exc.value.errors or {}) == {"question", "priority"}
    db.rollback()
    assert _events("reading.request", Outcome.FAILURE)
    other_clinic_nurse = factories.nurse(facility=factories.facility())
    with pytest.raises(NotFound):
        service.request_reading(loop.study, by=other_clinic_nurse, question="Mass?", priority="routine")
    db.rollback()
    assert _events("reading.request", Outcome.DENIED)


def test_pharmacist_has_no_worklist(loop: Loop, factories: Any) -> None:
    loop.request()
    with pytest.raises(Forbidden):
        service.worklist(by=factories.pharmacist())
    db.rollback()
    assert _events("reading.worklist", Outcome.DENIED)


def test_worklist_order_filters_and_named_requests(loop: Loop, factories: Any) -> None:
    routine = loop.request(priority="routine")
    urgent_old = loop.request(priority="urgent")
    stat = loop.request(priority="stat")
    urgent_new = loop.request(priority="urgent")
    urgent_old.requested_at = urgent_old.requested_at - timedelta(hours=2)
    named = loop.request(priority="stat", assigned_to_id=loop.other_doctor.id)
    db.session.commit()
    assert [r.id for r in service.worklist(by=loop.doctor)] == [stat.id, urgent_old.id, urgent_new.id, routine.id]
    assert named.id in [r.id for r in service.worklist(by=loop.other_doctor)]  # only its addressee sees it
    assert service.worklist(by=loop.doctor, filters=service.WorklistFilters(modality="MR")) == []
    assert len(service.worklist(by=loop.doctor, filters=service.WorklistFilters(modality="ct"))) == 4
    other = factories.facility()
    assert service.worklist(by=loop.doctor, filters=service.WorklistFilters(facility_id=other.id)) == []
    with pytest.raises(ValidationFailed):
        service.worklist(by=loop.doctor, filters=service.WorklistFilters(status="lost"))
    # the pool shows age and sex, the name only to the people involved
    assert not access.shows_patient(loop.doctor, routine) and access.shows_patient(loop.other_doctor, named)
    with pytest.raises(NotFound):  # addressed to another doctor
        service.claim(named, by=loop.doctor)
    db.rollback()


def test_named_request_gives_the_doctor_the_study(loop: Loop) -> None:
    with pytest.raises(NotFound):
        imaging.get_study(loop.study.study_instance_uid, by=loop.other_doctor)
    db.rollback()
    loop.request(assigned_to_id=loop.other_doctor.id)
    assert imaging.get_study(loop.study.study_instance_uid, by=loop.other_doctor).id == loop.study.id
    assert _notes(loop.other_doctor)


@pytest.mark.smoke
def test_preliminary_then_signed_final_is_frozen(loop: Loop) -> None:
    req = loop.claimed()
    key = {"series": loop.study.series[0].series_instance_uid,
           "instance": loop.study.series[0].instances[1].sop_instance_uid, "frame": 1}
    report = service.save_preliminary(req, service.ReportInput(findings="Nodule.", impression="1. Nodule.",
                                                               key_images=[key]), by=loop.doctor)
    db.session.commit()
    assert req.status is ReadingStatus.PRELIMINARY and req.preliminary_at and report.key_images == [key]
    with pytest.raises(ValidationFailed):
        service.save_preliminary(req, service.ReportInput(key_images=[{"series": "1.2", "instance": "1.2.3"}]),
                                 by=loop.doctor)
    db.rollback()
    with pytest.raises(ValidationFailed) as wrong:
        service.sign(req, by=loop.doctor, code="000000")
    assert "code" in (wrong.value.errors or {})
    db.rollback()
    assert req.report is not None and not req.report.is_signed
    with pytest.raises(NotFound):  # only the doctor who has the request writes the report
        service.sign(req, by=loop.other_doctor, code=None)
    db.rollback()
    service.sign(req, by=loop.doctor, code=next_code(loop.totp))
    db.session.commit()
    assert req.status is ReadingStatus.FINAL and req.final_at and report.signature
    document = signing.verify_payload(service.qr_payload(report) or "", signing.app_private_key().public_key())
    assert document["type"] == "DiagnosticReport" and document["impression"] == "1. Nodule."
    assert document["key_images"] == [key]
    with pytest.raises(Conflict):
        service.save_preliminary(req, service.ReportInput(findings="changed"), by=loop.doctor)
    db.rollback()
    assert req.report.findings == "Nodule."
    assert [v.kind for v in req.report.versions] == [VersionKind.PRELIMINARY, VersionKind.FINAL]


def test_addendum_by_another_doctor_is_attributed_and_signed(loop: Loop, factories: Any) -> None:
    from tests.reading.conftest import enrol

    req = loop.signed()
    with pytest.raises(NotFound):  # no care relationship yet
        service.add_addendum(req, by=loop.other_doctor, body="Compare with old film.", code=None)
    db.rollback()
    from app.patients import service as patients

    patients.ensure_care_relationship(loop.patient, loop.other_doctor, by=loop.nurse)
    totp = enrol(loop.other_doctor)
    version = service.add_addendum(req, by=loop.other_doctor, body="Compare with old film.", code=next_code(totp))
    db.session.commit()
    assert version.author_id == loop.other_doctor.id and req.status is ReadingStatus.AMENDED and req.amended_at
    assert req.report is not None and req.report.findings == "2 cm nodule, right upper lobe."  # never edited
    doc = signing.verify_payload(service.qr_payload(version) or "", signing.app_private_key().public_key())
    assert doc["author"]["name"] == "Dr Ben Second" and doc["report_hash"] == req.report.content_hash
    assert [v.kind for v in req.report.versions][-1] is VersionKind.ADDENDUM


@pytest.mark.smoke
def test_critical_result_notifies_until_a_named_person_acknowledges(loop: Loop, factories: Any, app: Any) -> None:
    second_nurse = factories.nurse(facility=loop.nurse.facility)
    req = loop.signed(critical=True)
    report = req.report
    assert report is not None and report.critical_open
    assert any("CRITICAL" in n.subject for n in _notes(second_nurse))
    later = report.critical_notified_at + timedelta(minutes=app.config["READING_CRITICAL_ESCALATE_MINUTES"] + 1)
    assert service.escalate_unacknowledged(now=report.critical_notified_at) == []  # not due yet
    assert service.escalate_unacknowledged(now=later) == [report.id]
    assert any("ESCALATED" in n.subject for n in _notes(loop.doctor))
    assert service.escalate_unacknowledged(now=later) == []  # once
    outsider = factories.nurse(facility=factories.facility())
    with pytest.raises(NotFound):
        service.acknowledge_critical(req, by=outsider)
    db.rollback()
    service.acknowledge_critical(req, by=second_nurse)
    db.session.commit()
    assert report.critical_acked_by_id == second_nurse.id and report.critical_acked_at and not report.critical_open
    with pytest.raises(Conflict):
        service.acknowledge_critical(req, by=loop.nurse)
    db.rollback()


def test_patient_sees_released_report_but_not_a_held_one(loop: Loop, factories: Any) -> None:
    from app.consults import service as consults

    patient_user = loop.patient.user
    assert patient_user is not None
    now = db.utcnow()
    start = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    consults.publish_availability(by=loop.doctor, weekday=start.weekday(), start_time=start.time(),
                                  end_time=(start + timedelta(hours=1)).time())
    appointment = consults.book(patient=loop.patient, doctor_id=loop.doctor.id, start=start, by=loop.nurse)
    db.session.commit()
    req = loop.claimed()
    service.sign(req, by=loop.doctor, code=next_code(loop.totp), release="after-consult",
                 release_appointment_id=appointment.id,
                 data=service.ReportInput(findings="Normal.", impression="1. Normal.", patient_summary="All fine."))
    db.session.commit()
    assert service.my_results(by=patient_user) == []
    with pytest.raises(NotFound):
        service.get_request(req.id, by=patient_user)
    db.rollback()
    assert not [n for n in _notes(patient_user) if "report" in n.subject]
    service.release_after_consult(appointment, loop.doctor)
    db.session.commit()
    assert [r.id for r in service.my_results(by=patient_user)] == [req.report.id]  # type: ignore[union-attr]
    assert any("report is ready" in n.subject for n in _notes(patient_user))


def test_held_report_is_released_at_the_deadline(loop: Loop, app: Any) -> None:
    req = loop.signed()
    report = req.report
    assert report is not None
    report.released_at, report.release_due_at = None, db.utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert service.release_due() == [report.id] and report.released_at is not None


@pytest.mark.smoke
def test_signed_report_is_written_back_into_the_study_as_encapsulated_pdf(loop: Loop) -> None:
    req = loop.signed()
    report = req.report
    assert report is not None
    assert outputs.write_back(report, by=loop.doctor) is True
    instance = db.session.scalar(sa.select(Instance).where(Instance.sop_instance_uid == report.dicom_sop_instance_uid))
    assert instance is not None and instance.series.study_id == loop.study.id
    ds = pydicom.dcmread(io.BytesIO(imaging.object_store().read(instance.object_key)))
    assert ds.SOPClassUID == outputs.ENCAPSULATED_PDF and ds.EncapsulatedDocument.startswith(b"%PDF")
    assert ds.PatientID == loop.patient.mrn
    assert outputs.write_back(report, by=loop.doctor) is True  # not twice
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Instance).join(Instance.series).where(
        Instance.sop_class_uid == outputs.ENCAPSULATED_PDF, Series.study_id == loop.study.id)) == 1


def test_fhir_shapes_link_study_request_and_report(loop: Loop) -> None:
    req = loop.signed(critical=True)
    body = fhir.diagnostic_report(req.report, qr_payload=service.qr_payload(req.report))  # type: ignore[arg-type]
    assert body["status"] == "final" and body["basedOn"] == [{"reference": f"ServiceRequest/{req.id}"}]
    assert body["imagingStudy"][0]["reference"] == f"ImagingStudy/{loop.study.id}"
    assert body["conclusion"] == "1. Nodule."
    sr = fhir.service_request(req)
    assert sr["priority"] == "urgent" and sr["status"] == "completed" and sr["reasonCode"][0]["text"]


def test_cancel_only_before_a_report(loop: Loop) -> None:
    req = loop.claimed()
    with pytest.raises(NotFound):
        service.cancel(req, by=loop.doctor)
    db.rollback()
    service.cancel(req, by=loop.nurse, reason="Wrong patient")
    db.session.commit()
    assert req.status is ReadingStatus.CANCELLED and req.cancelled_at
    signed = loop.signed()
    with pytest.raises(Conflict):
        service.cancel(signed, by=loop.nurse)
    db.rollback()


def test_priors_are_one_click_away(loop: Loop) -> None:
    from tests.reading.conftest import store_study

    first = loop.signed()
    older_report = first.report
    loop.study = store_study(loop.nurse, loop.patient, study_date="20250301")
    req = loop.claimed()
    priors = service.priors(req, by=loop.doctor)
    assert [p["study"].id for p in priors] == [first.study_id]
    assert priors[0]["report"].id == older_report.id  # type: ignore[union-attr]


def test_a_failed_write_back_is_retried(loop: Loop, monkeypatch: Any) -> None:
    req = loop.signed()
    report = req.report
    assert report is not None

    def store_down(*_a: Any, **_k: Any) -> Any:
        raise OSError("object store unreachable")

    monkeypatch.setattr(outputs, "store_one", store_down)
    assert outputs.write_back(report, by=loop.doctor) is False
    assert report.is_signed and report.dicom_sop_instance_uid is None  # still signed, nothing half-written
    monkeypatch.undo()
    assert outputs.write_back_pending() == [report.id]
    assert report.dicom_sop_instance_uid is not None


def test_reports_by_id_and_per_patient_follow_the_request_rules(loop: Loop, factories: Any) -> None:
    req = loop.signed()
    report = req.report
    assert report is not None
    assert service.get_report(report.id, by=loop.nurse).id == report.id
    assert [r.id for r in service.reports_for_patient(loop.patient, by=loop.doctor)] == [report.id]
    with pytest.raises(NotFound):
        service.get_report(report.id, by=factories.pharmacist())
    db.rollback()
    held = loop.claimed()
    service.save_preliminary(held, service.ReportInput(findings="Draft."), by=loop.doctor)
    db.session.commit()
    patient_user = loop.patient.user
    assert [r.id for r in service.reports_for_patient(loop.patient, by=patient_user)] == [report.id]
    with pytest.raises(NotFound):
        service.get_report(held.report.id, by=patient_user)  # type: ignore[union-attr]
    db.rollback()


def test_report_held_for_a_consult_is_released_when_that_consult_ends(app_ctx: Any, factories: Any, app: Any) -> None:
    from app.auth.models import User
    from app.consults import service as consults
    from app.consults.models import Appointment
    from app.patients.models import Patient
    from tests.consults.helpers import admitted_consult
    from tests.reading.conftest import enrol, store_study

    ids = [x.id for x in admitted_consult(factories, app)]  # its own app context: load the rows again here
    doctor, patient, appt = db.session.get(User, ids[0]), db.session.get(Patient, ids[1]), db.session.get(
        Appointment, ids[2])
    assert doctor is not None and patient is not None and appt is not None and patient.user is not None
    nurse = factories.nurse(facility=patient.facility)
    req = service.request_reading(store_study(nurse, patient), by=nurse, question="Mass?", priority="routine",
                                  assigned_to_id=doctor.id)
    service.claim(req, by=doctor)
    service.sign(req, by=doctor, code=next_code(enrol(doctor)), release="after-consult",
                 release_appointment_id=appt.id,
                 data=service.ReportInput(findings="Mass.", impression="1. Mass.", patient_summary="We will talk."))
    db.session.commit()
    assert service.my_results(by=patient.user) == []
    consults.end_consult(appt, by=doctor)
    db.session.commit()
    assert [r.request_id for r in service.my_results(by=patient.user)] == [req.id]
