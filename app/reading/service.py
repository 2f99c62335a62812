"""Reading rules: requests, the worklist, the race-safe claim, reports (preliminary, signed final, addenda),
critical results, and release to the patient.

Every function takes the acting user (``by=``), checks :mod:`app.reading.access` and writes an audit event;
refusals are audited as durable denials/failures and change nothing. This module is the public interface other
faces (HTML, JSON API, FHIR) map from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext

from app import db, text
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth import mfa
from app.auth.models import Role, User
from app.catalogue import N_
from app.consults import service as consults
from app.errors import AppError, Conflict, Forbidden, Unauthorized, ValidationFailed
from app.facilities.models import Facility
from app.i18n import format_when, zone_of
from app.imaging import orders
from app.imaging import service as imaging
from app.imaging.models import Study
from app.notify import service as notify
from app.patients import service as patients
from app.patients.models import Patient
from app.prescriptions import signing
from app.reading import access
from app.reading.models import (
    OPEN_STATUSES,
    Priority,
    ReadingRequest,
    ReadingStatus,
    ReleaseMode,
    Report,
    ReportVersion,
    VersionKind,
)

logger = logging.getLogger(__name__)
RT = "ServiceRequest"
REPORT_RT = "DiagnosticReport"
QUESTION_MAX = 1000
TEXT_MAX = 20_000
KEY_IMAGES_MAX = 50

TEMPLATES: dict[str, dict[str, str]] = {
    "CT": {"findings": "Technique: CT, with/without contrast.\nLungs and airways: \nMediastinum and heart: \n"
                       "Abdomen and pelvis: \nBones and soft tissues: ",
           "impression": "1. "},
    "MR": {"findings": "Technique: MRI, sequences: \nSignal and structure: \nEnhancement: \nOther: ",
           "impression": "1. "},
    "CR": {"findings": "Projection: \nLungs: \nHeart and mediastinum: \nPleura: \nBones: ", "impression": "1. "},
    "DX": {"findings": "Projection: \nLungs: \nHeart and mediastinum: \nPleura: \nBones: ", "impression": "1. "},
    "US": {"findings": "Organ examined: \nSize and echotexture: \nFocal lesions: \nFluid: ", "impression": "1. "},
}
"""Report skeletons per modality (findings, impression); other modalities start empty."""


def template_for(modality: str) -> dict[str, str]:
    for m in modality.split("\\"):
        if m in TEMPLATES:
            return TEMPLATES[m]
    return {"findings": "", "impression": ""}


def _cfg(name: str) -> Any:
    return current_app.config[name]


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed("Some fields need attention.", errors={field: [message]})


def _fail(action: str, by: User, req: ReadingRequest, exc: AppError, reason: str) -> AppError:
    audit.record(action, by=by, outcome=Outcome.FAILURE, patient_id=req.patient_id, resource_type=RT,
                 resource_id=req.id, detail={"error": reason})
    return exc


def _when(moment: datetime) -> str:
    return format_when(moment)


# ---------------------------------------------------------------- requests


def readers() -> Sequence[User]:
    """Doctors a request can be addressed to by name."""
    return patients.doctors_for_assignment()


def _checked_fields(question: str, priority: str | Priority, assigned_to_id: int | None,
                    ) -> tuple[dict[str, list[str]], Priority | None, str, User | None]:
    """The field errors of a reading request, with its priority, trimmed question and named doctor."""
    errors: dict[str, list[str]] = {}
    question = (question or "").strip()
    if not question:
        errors["question"] = ["Write the clinical question the doctor should answer."]
    elif message := text.problem(question, QUESTION_MAX):
        errors["question"] = [message]
    prio = None
    try:
        prio = Priority(priority)
    except ValueError:
        errors["priority"] = ["Choose routine, urgent or STAT."]
    doctor = None
    if assigned_to_id is not None:
        doctor = db.session.get(User, assigned_to_id)
        if doctor is None or doctor.role is not Role.DOCTOR or not doctor.active:
            errors["assigned_to_id"] = ["Choose an active doctor, or the reading pool."]
    return errors, prio, question, doctor


def request_reading(study: Study, *, by: User, question: str, priority: str | Priority,
                    assigned_to_id: int | None = None) -> ReadingRequest:
    """Send a study of a patient of the actor's clinic to a named doctor, or to the reading pool.

    :raises NotFound: the study is not one of the actor's patients' (audited).
    :raises ValidationFailed: no question, unknown priority or doctor (audited).
    """
    patient = db.session.get(Patient, study.patient_id) if study.patient_id else None
    if patient is None or not access.can_request(by, patient):
        audit.forbid("reading.request", by=by, patient_id=study.patient_id, resource_type="ImagingStudy",
                     resource_id=study.id)
    errors, prio, question, doctor = _checked_fields(question, priority, assigned_to_id)
    if errors:
        audit.record("reading.request", by=by, outcome=Outcome.FAILURE, patient_id=patient.id,
                     resource_type="ImagingStudy", resource_id=study.id, detail={"fields": sorted(errors)})
        raise ValidationFailed("Some fields need attention.", errors=errors)
    assert prio is not None
    req = ReadingRequest(study_id=study.id, patient_id=patient.id, facility_id=by.facility_id, requested_by_id=by.id,
                         assigned_to_id=doctor.id if doctor else None, priority=prio, priority_rank=prio.rank,
                         clinical_question=question, modality=study.modalities or "")
    db.session.add(req)
    db.session.flush()
    if doctor is not None:
        patients.ensure_care_relationship(patient, doctor, by=by, reason="Reading request")
        notify.enqueue(recipient=doctor, subject=notify.Message("%(priority)s scan to read",
                                                                priority=notify.Message(prio.word)),
                       body=notify.Message("A %(modality)s from %(place)s waits on your reading worklist.",
                                           modality=req.modality or notify.Message("scan"), place=req.facility.name))
    audit.record("reading.request", by=by, patient_id=patient.id, resource_type=RT, resource_id=req.id,
                 detail={"priority": prio.value, "pool": doctor is None})
    return req


def get_request(request_id: int, *, by: User, action: str = "reading.request.read",
                audit_read: bool = True) -> ReadingRequest:
    """:raises NotFound: unknown or not visible (same answer, audited)."""
    req = db.session.get(ReadingRequest, request_id)
    if req is None or not access.can_read(by, req):
        access.refuse(action, by, req, request_id)
    if audit_read:
        audit.record(action, by=by, patient_id=req.patient_id, resource_type=RT, resource_id=req.id)
    return req


def get_for_claim(request_id: int, *, by: User) -> ReadingRequest:
    """The request a doctor clicked "Claim" on, even if another doctor was faster (:func:`claim` says who).

    :raises NotFound: unknown, or addressed to another doctor (audited).
    """
    req = db.session.get(ReadingRequest, request_id)
    if req is None or not access.is_addressed_to(by, req):
        access.refuse("reading.claim", by, req, request_id)
    return req


@dataclass
class WorklistFilters:
    modality: str | None = None
    facility_id: int | None = None
    status: str | None = None


ORDER = (ReadingRequest.priority_rank, ReadingRequest.requested_at, ReadingRequest.id)
"""Worklist order: most urgent first, then the longest waiting."""


def _worklist_query(by: User, f: WorklistFilters) -> sa.Select[Any]:
    mine = sa.or_(ReadingRequest.claimed_by_id == by.id,
                  sa.and_(ReadingRequest.claimed_by_id.is_(None),
                          sa.or_(ReadingRequest.assigned_to_id.is_(None), ReadingRequest.assigned_to_id == by.id)))
    query = sa.select(ReadingRequest).where(mine)
    if f.status:
        query = query.where(ReadingRequest.status == ReadingStatus(f.status))
    else:
        query = query.where(ReadingRequest.status.in_(OPEN_STATUSES))
    if f.modality:
        query = query.where(ReadingRequest.modality.contains(f.modality.upper()[:16], autoescape=True))
    if f.facility_id:
        query = query.where(ReadingRequest.facility_id == f.facility_id)
    return query.order_by(*ORDER)


def worklist(*, by: User, filters: WorklistFilters | None = None, limit: int = 200) -> list[ReadingRequest]:
    """The doctor's reading worklist: addressed to them or the pool, or claimed by them; most urgent first, then
    the longest waiting. :raises Forbidden: not a doctor (audited). :raises ValidationFailed: unknown status."""
    if by.role is not Role.DOCTOR:
        audit.forbid("reading.worklist", by=by, resource_type=RT,
                     error=Forbidden("Only doctors have a reading worklist."))
    f = filters or WorklistFilters()
    if f.status and f.status not in {s.value for s in ReadingStatus}:
        raise _invalid("status", "Choose a status from the list.")
    # The page of ids first, then their rows with what is shown (doctor, clinic, study): joining those to every
    # open request before the sort costs a hundred times more with thousands waiting.
    page = _worklist_query(by, f).with_only_columns(ReadingRequest.id).limit(limit).subquery()
    rows = list(db.session.scalars(sa.select(ReadingRequest).join(page, page.c.id == ReadingRequest.id)
                                   .order_by(*ORDER)))
    audit.record("reading.worklist", by=by, resource_type=RT, detail={"results": len(rows)})
    return rows


def for_clinic(*, by: User, limit: int = 200) -> list[ReadingRequest]:
    """Clinic staff: their clinic's requests, open critical results first, then newest."""
    if by.role is not Role.CLINIC_STAFF:
        audit.forbid("reading.clinic_list", by=by, resource_type=RT,
                     error=Forbidden("Only clinic staff follow their clinic's reading requests."))
    critical_open = sa.exists().where(Report.request_id == ReadingRequest.id, Report.critical.is_(True),
                                      Report.signed_at.is_not(None), Report.critical_acked_at.is_(None))
    rows = list(db.session.scalars(sa.select(ReadingRequest).where(ReadingRequest.facility_id == by.facility_id)
                                   .order_by(critical_open.desc(), ReadingRequest.id.desc()).limit(limit)))
    audit.record("reading.clinic_list", by=by, resource_type=RT, detail={"results": len(rows)})
    return rows



def for_patient(patient: Patient, *, by: User) -> list[ReadingRequest]:
    """The requests on a chart the caller already opened (the chart read is audited there)."""
    rows = db.session.scalars(sa.select(ReadingRequest).where(ReadingRequest.patient_id == patient.id)
                              .order_by(ReadingRequest.id.desc()).limit(50))
    return [r for r in rows if access.can_read(by, r)]


def requesting_facilities() -> Sequence[Facility]:
    """Clinics that sent something to be read (the worklist's facility filter)."""
    return db.session.scalars(sa.select(Facility).where(
        sa.exists().where(ReadingRequest.facility_id == Facility.id)).order_by(Facility.name)).all()


def claim(req: ReadingRequest, *, by: User) -> ReadingRequest:
    """Take a request to read it. Two doctors at once: one conditional UPDATE wins, the other is told who has it.

    :raises Conflict: someone else claimed it first, or it is no longer waiting (audited).
    """
    action = "reading.claim"
    if not access.is_addressed_to(by, req):
        access.refuse(action, by, req)
    now = db.utcnow()
    won = db.session.execute(
        sa.update(ReadingRequest)
        .where(ReadingRequest.id == req.id, ReadingRequest.claimed_by_id.is_(None),
               ReadingRequest.status == ReadingStatus.REQUESTED,
               sa.or_(ReadingRequest.assigned_to_id.is_(None), ReadingRequest.assigned_to_id == by.id))
        .values(claimed_by_id=by.id, claimed_at=now, status=ReadingStatus.IN_PROGRESS)
        .execution_options(synchronize_session=False)).rowcount
    db.session.refresh(req)
    if not won:
        if req.claimed_by_id == by.id:
            return req  # a second click of the same doctor
        holder = req.claimed_by
        detail = (f"{holder.full_name} took this request at {_when(req.claimed_at)}." if holder and req.claimed_at
                  else f"This request is {req.status.label.lower()} and cannot be claimed.")
        raise _fail(action, by, req, Conflict(detail, claimed_by=holder.full_name if holder else None),
                    "taken" if holder else req.status.value)
    patients.ensure_care_relationship(req.patient, by, by=by, reason="Reading request")
    audit.record(action, by=by, patient_id=req.patient_id, resource_type=RT, resource_id=req.id)
    return req


def cancel(req: ReadingRequest, *, by: User, reason: str | None = None) -> ReadingRequest:
    """Withdraw a request not reported yet (clinic staff of the requesting clinic).

    :raises Conflict: a report was already saved or signed (audited).
    """
    if not access.can_cancel(by, req):
        access.refuse("reading.cancel", by, req)
    if req.status not in (ReadingStatus.REQUESTED, ReadingStatus.IN_PROGRESS):
        raise _fail("reading.cancel", by, req, Conflict("A request with a report cannot be cancelled."),
                    req.status.value)
    req.status = ReadingStatus.CANCELLED
    req.cancelled_at = db.utcnow()
    reason = (reason or "").strip()
    req.cancel_reason = reason[:300] if reason and not text.problem(reason, 300) else None
    if req.claimed_by is not None:
        notify.enqueue(recipient=req.claimed_by, subject=notify.Message("Reading request cancelled"),
                       body=notify.Message("The clinic cancelled a %(modality)s reading you had claimed.",
                                           modality=req.modality or notify.Message("scan")))
    db.session.flush()
    audit.record("reading.cancel", by=by, patient_id=req.patient_id, resource_type=RT, resource_id=req.id)
    return req


# ---------------------------------------------------------------- reports


@dataclass
class ReportInput:
    findings: str | None = None
    impression: str | None = None
    patient_summary: str | None = None
    key_images: list[dict[str, Any]] | None = None


def _clean_key_images(raw: Any, study: Study) -> list[dict[str, Any]]:
    """Key images are instances of this study: ``{"series": uid, "instance": uid, "frame": n}``."""
    if not raw:
        return []
    if not isinstance(raw, list) or len(raw) > KEY_IMAGES_MAX:
        raise _invalid("key_images", gettext("Pick at most %(limit)d key images.", limit=KEY_IMAGES_MAX))
    known = {(i.series.series_instance_uid, i.sop_instance_uid) for s in study.series for i in s.instances}
    clean = []
    for item in raw:
        if not isinstance(item, dict):
            raise _invalid("key_images", "Each key image names a series and an instance.")
        series, instance, frame = item.get("series"), item.get("instance"), item.get("frame", 1)
        if (series, instance) not in known or not isinstance(frame, int) or isinstance(frame, bool) or frame < 1:
            raise _invalid("key_images", "A key image is not an image of this study.")
        entry = {"series": series, "instance": instance, "frame": frame}
        if entry not in clean:
            clean.append(entry)
    return clean


def _apply(report: Report, data: ReportInput, study: Study) -> None:
    errors: dict[str, list[str]] = {}
    for name in ("findings", "impression", "patient_summary"):
        value = getattr(data, name)
        if value is not None:
            if message := text.problem(value, TEXT_MAX):
                errors[name] = [message]
            else:
                setattr(report, name, value.strip())
    if errors:
        raise ValidationFailed("Some fields need attention.", errors=errors)
    if data.key_images is not None:
        report.key_images = _clean_key_images(data.key_images, study)


def _snapshot(report: Report, kind: VersionKind, by: User, **signed: Any) -> ReportVersion:
    version = ReportVersion(report=report, kind=kind, author_id=by.id, findings=report.findings,
                            impression=report.impression, patient_summary=report.patient_summary, **signed)
    db.session.add(version)
    return version


def save_preliminary(req: ReadingRequest, data: ReportInput, *, by: User) -> Report:
    """Save the report as preliminary (the doctor who claimed the request); each save is kept as a version.

    :raises Conflict: the report is signed (final reports are corrected by addenda). :raises ValidationFailed.
    """
    action = "reading.report.save"
    if not access.can_write_report(by, req):
        access.refuse(action, by, req)
    report = req.report
    if report is not None and report.is_signed or req.status is ReadingStatus.CANCELLED:
        raise _fail(action, by, req, Conflict(N_("A signed report is never edited; add an addendum instead.")
                                              if report is not None and report.is_signed
                                              else N_("This request was cancelled.")), "frozen")
    if report is None:
        report = Report(request=req, author_id=by.id, key_images=[])
        db.session.add(report)
    try:
        _apply(report, data, req.study)
    except ValidationFailed as exc:
        raise _fail(action, by, req, exc, "invalid") from None
    if req.status is ReadingStatus.IN_PROGRESS:
        req.status = ReadingStatus.PRELIMINARY
        req.preliminary_at = db.utcnow()
    _snapshot(report, VersionKind.PRELIMINARY, by)
    db.session.flush()
    audit.record(action, by=by, patient_id=req.patient_id, resource_type=REPORT_RT, resource_id=report.id)
    return report


def _second_factor(by: User, code: str | None, action: str, req: ReadingRequest) -> None:
    """Re-confirm the signer: their authenticator code (or a recovery code), checked like at sign-in.

    A deployment that requires no second factor for doctors (``HOSPITAL_MFA_REQUIRED_ROLES``) signs with the
    session alone for doctors without an authenticator, as prescribing does.
    """
    if mfa.is_enrolled(by):
        try:
            mfa.verify(by, code or "")
        except Unauthorized:
            raise _fail(action, by, req, _invalid("code", "That code is not correct."), "second factor") from None
    elif mfa.is_required(by):
        raise _fail(action, by, req, Conflict("Set up two-step sign-in before you sign reports."), "no factor")


def _study_ref(req: ReadingRequest) -> dict[str, Any]:
    return {"study_instance_uid": req.study.study_instance_uid, "accession_number": req.study.accession_number}


def canonical_document(report: Report, *, kid: str) -> dict[str, Any]:
    """What the signature covers: the report as the clinic and the patient read it."""
    assert report.signed_at is not None
    req, p = report.request, report.request.patient
    return {
        "v": 1, "type": "DiagnosticReport", "kid": kid, "id": report.id, "request": req.id,
        "signed_at": report.signed_at.isoformat(timespec="seconds"),
        "patient": {"id": p.id, "mrn": p.mrn, "name": f"{p.given_name} {p.family_name}",
                    "birth_date": p.birth_date.isoformat()},
        "author": {"id": report.author_id, "name": report.author.full_name},
        "study": _study_ref(req), "question": req.clinical_question,
        "findings": report.findings, "impression": report.impression, "patient_summary": report.patient_summary,
        "critical": report.critical, "key_images": report.key_images,
    }


def _sign_document(document_of: Any) -> dict[str, Any]:
    key = signing.app_private_key()
    kid = signing.key_id(key.public_key())
    canonical, signature, _payload = signing.sign(document_of(kid), key)
    return {"canonical": canonical.decode(), "content_hash": signing.content_hash(canonical),
            "signature": signature, "key_id": kid}


def sign(req: ReadingRequest, *, by: User, code: str | None, critical: bool = False,
         release: str | ReleaseMode = ReleaseMode.NOW, release_appointment_id: int | None = None,
         data: ReportInput | None = None) -> Report:
    """Sign the report as final with an Ed25519 signature, after re-confirming the doctor's second factor.

    A critical result notifies the requesting clinic at once. ``release`` is ``now`` (the patient is told) or
    ``after-consult`` (released when that consult ends, at the latest after ``READING_RELEASE_MAX_DAYS``).

    :raises Conflict: already signed, nothing written, cancelled. :raises ValidationFailed: wrong code, bad
        release choice (all audited).
    """
    action = "reading.report.sign"
    if not access.can_write_report(by, req):
        access.refuse(action, by, req)
    if data is not None and (req.report is None or not req.report.is_signed):
        save_preliminary(req, data, by=by)
    report = req.report
    if report is None or report.is_signed or req.status is ReadingStatus.CANCELLED:
        raise _fail(action, by, req, Conflict(N_("This report is already signed.") if report is not None
                                              else N_("Write the report before signing it.")), "state")
    if not report.findings.strip() or not report.impression.strip():
        raise _fail(action, by, req, ValidationFailed(N_("Some fields need attention."), errors={
            k: ["Required before signing."] for k in ("findings", "impression") if not getattr(report, k).strip()}),
            "empty")
    try:
        mode = ReleaseMode(release)
    except ValueError:
        raise _fail(action, by, req, _invalid("release", "Choose when the patient sees the report."),
                    "release") from None
    if mode is ReleaseMode.AFTER_CONSULT:
        appointment = consults.open_consult_of(req.patient, release_appointment_id)
        if appointment is None:
            raise _fail(action, by, req, _invalid("release_appointment_id",
                                                  "Choose an upcoming video consult of this patient."), "release")
    _second_factor(by, code, action, req)
    now = db.utcnow()
    report.critical = bool(critical)
    report.signed_at = now
    report.author_id = by.id
    db.session.flush()
    db.session.refresh(report, ["author"])
    signed = _sign_document(lambda kid: canonical_document(report, kid=kid))
    for name, value in signed.items():
        setattr(report, name, value)
    _snapshot(report, VersionKind.FINAL, by, **signed)
    req.status = ReadingStatus.FINAL
    req.final_at = now
    report.release_mode = mode
    if mode is ReleaseMode.NOW:
        _release(report, now)
    else:
        report.release_appointment_id = release_appointment_id
        report.release_due_at = now + timedelta(days=_cfg("READING_RELEASE_MAX_DAYS"))
    _tell_clinic(report)
    db.session.flush()
    audit.record(action, by=by, patient_id=req.patient_id, resource_type=REPORT_RT, resource_id=report.id,
                 detail={"hash": report.content_hash, "critical": report.critical, "release": mode.value})
    return report


def _clinic_staff(facility_id: int) -> Sequence[User]:
    return db.session.scalars(sa.select(User).where(User.role == Role.CLINIC_STAFF, User.active.is_(True),
                                                    User.facility_id == facility_id).order_by(User.id)).all()


def _tell_clinic(report: Report) -> None:
    req = report.request
    if report.critical:
        report.critical_notified_at = db.utcnow()
        subject = notify.Message("CRITICAL result: acknowledge now")
        body = notify.Message("%(name)s signed a report with a critical result for a %(modality)s your clinic sent. "
                              "Open Reading requests and acknowledge it.", name=report.author.full_name,
                              modality=req.modality or notify.Message("scan"))
    else:
        subject = notify.Message("Scan report ready")
        body = notify.Message("The report on a %(modality)s your clinic sent is signed.",
                              modality=req.modality or notify.Message("scan"))
    for user in _clinic_staff(req.facility_id):
        notify.enqueue(recipient=user, subject=subject, body=body)


def add_addendum(req: ReadingRequest, *, by: User, body: str, code: str | None) -> ReportVersion:
    """Correct or complete a signed report: a new signed version attributed to its author; the report's
    signed text is never changed. :raises Conflict: not signed yet. :raises ValidationFailed: empty, wrong code."""
    action = "reading.report.addendum"
    if not access.can_addend(by, req):
        access.refuse(action, by, req)
    report = req.report
    if report is None or not report.is_signed:
        raise _fail(action, by, req, Conflict("Only a signed report takes addenda; edit the draft instead."),
                    "not signed")
    body = (body or "").strip()
    if not body or text.problem(body, TEXT_MAX):
        raise _fail(action, by, req, _invalid("text", text.problem(body, TEXT_MAX) or "Write the addendum."),
                    "invalid")
    _second_factor(by, code, action, req)
    now = db.utcnow()
    version = ReportVersion(report=report, kind=VersionKind.ADDENDUM, author_id=by.id, text=body, created_at=now)

    def document(kid: str) -> dict[str, Any]:
        return {"v": 1, "type": "DiagnosticReport.addendum", "kid": kid, "report": report.id,
                "report_hash": report.content_hash, "signed_at": now.isoformat(timespec="seconds"),
                "author": {"id": by.id, "name": by.full_name}, "text": body}

    for name, value in _sign_document(document).items():
        setattr(version, name, value)
    db.session.add(version)
    req.status = ReadingStatus.AMENDED
    req.amended_at = now
    if report.released_at is not None and req.patient.user is not None:
        notify.enqueue(recipient=req.patient.user, subject=notify.Message("Your scan report was updated"),
                       body=notify.Message("The doctor added to your scan report. Read it under My health."))
    db.session.flush()
    audit.record(action, by=by, patient_id=req.patient_id, resource_type=REPORT_RT, resource_id=report.id,
                 detail={"version": version.id, "hash": version.content_hash})
    return version


def qr_payload(signed: Report | ReportVersion) -> str | None:
    if signed.canonical is None or signed.signature is None:
        return None
    return signing.payload_for(signed.canonical.encode(), signed.signature)


# ---------------------------------------------------------------- critical results


def acknowledge_critical(req: ReadingRequest, *, by: User) -> Report:
    """A named person at the requesting clinic confirms they received the critical result.

    :raises Conflict: nothing open to acknowledge (audited).
    """
    action = "reading.critical.ack"
    if not access.can_acknowledge(by, req):
        access.refuse(action, by, req)
    report = req.report
    if report is None or not report.critical_open:
        raise _fail(action, by, req, Conflict("There is no open critical result on this request."), "none open")
    report.critical_acked_at = db.utcnow()
    report.critical_acked_by_id = by.id
    notify.enqueue(recipient=report.author, subject=notify.Message("Critical result acknowledged"),
                   body=notify.Message("%(name)s at %(place)s acknowledged your critical result at %(when)s.",
                                       name=by.full_name, place=req.facility.name,
                                       when=format_when(report.critical_acked_at, tz=zone_of(report.author))))
    db.session.flush()
    audit.record(action, by=by, patient_id=req.patient_id, resource_type=REPORT_RT, resource_id=report.id)
    return report


def escalate_unacknowledged(*, now: datetime | None = None) -> list[int]:
    """Re-alert every critical result still unacknowledged ``READING_CRITICAL_ESCALATE_MINUTES`` after it was
    sent: all staff of the clinic and the reporting doctor, once. Periodic (``hospital reading-tick``).
    Returns the report ids escalated; the caller commits."""
    now = now or db.utcnow()
    cutoff = now - timedelta(minutes=_cfg("READING_CRITICAL_ESCALATE_MINUTES"))
    reports = db.session.scalars(sa.select(Report).where(
        Report.critical.is_(True), Report.critical_acked_at.is_(None), Report.critical_escalated_at.is_(None),
        Report.critical_notified_at <= cutoff).with_for_update(skip_locked=True, of=Report)).all()
    for report in reports:
        req = report.request
        report.critical_escalated_at = now
        minutes = int((now - report.critical_notified_at).total_seconds() // 60) if report.critical_notified_at else 0
        body = notify.Message("A critical result sent to %(place)s %(minutes)s minutes ago is still not "
                              "acknowledged. Call the clinic and acknowledge it under Reading requests.",
                              place=req.facility.name, minutes=minutes)
        for user in [*_clinic_staff(req.facility_id), report.author]:
            notify.enqueue(recipient=user, subject=notify.Message("ESCALATED: critical result not acknowledged"),
                           body=body)
        audit.record("reading.critical.escalate", by=None, actor_name="system", patient_id=req.patient_id,
                     resource_type=REPORT_RT, resource_id=report.id, detail={"minutes": minutes})
    db.session.flush()
    return [r.id for r in reports]


# ---------------------------------------------------------------- release to the patient


def _release(report: Report, now: datetime) -> None:
    report.released_at = now
    user = report.request.patient.user
    if user is not None:
        notify.enqueue(recipient=user, subject=notify.Message("Your scan report is ready"),
                       body=notify.Message("A doctor has reported on your scan. Read it under My health."))


def release_after_consult(appointment: Any, by: User) -> None:
    """Consult-ended hook: reports held for discussion in this consult are released now."""
    held = db.session.scalars(sa.select(Report).where(Report.release_appointment_id == appointment.id,
                                                      Report.released_at.is_(None))).all()
    for report in held:
        _release(report, db.utcnow())
        audit.record("reading.report.release", by=by, patient_id=report.request.patient_id,
                     resource_type=REPORT_RT, resource_id=report.id, detail={"after": "consult"})




def release_due(*, now: datetime | None = None) -> list[int]:
    """Release held reports whose consult did not happen in time (periodic); the caller commits."""
    now = now or db.utcnow()
    due = db.session.scalars(sa.select(Report).where(Report.released_at.is_(None), Report.signed_at.is_not(None),
                                                     Report.release_due_at <= now)).all()
    for report in due:
        _release(report, now)
        audit.record("reading.report.release", by=None, actor_name="system", patient_id=report.request.patient_id,
                     resource_type=REPORT_RT, resource_id=report.id, detail={"after": "deadline"})
    db.session.flush()
    return [r.id for r in due]


def get_report(report_id: int, *, by: User, action: str = "reading.report.read") -> Report:
    """A report by its own id (FHIR DiagnosticReport/<id>), under the same rules as its request.

    :raises NotFound: unknown or not visible (same answer, audited).
    """
    report = db.session.get(Report, report_id)
    if report is None or not access.can_read(by, report.request):
        audit.forbid(action, by=by, patient_id=report.request.patient_id if report else None,
                     resource_type=REPORT_RT, resource_id=report_id)
    audit.record(action, by=by, patient_id=report.request.patient_id, resource_type=REPORT_RT, resource_id=report.id)
    return report


def reports_for_patient(patient: Patient, *, by: User) -> list[Report]:
    """A patient's reports visible to ``by`` (a patient: only released ones), newest first; audited."""
    rows = db.session.scalars(sa.select(Report).join(Report.request).where(ReadingRequest.patient_id == patient.id)
                              .order_by(Report.id.desc()))
    visible = [r for r in rows if access.can_read(by, r.request)
               and (by.role is not Role.PATIENT or r.released_at is not None)]
    audit.record("reading.report.list", by=by, patient_id=patient.id, resource_type=REPORT_RT,
                 detail={"ids": [r.id for r in visible]})
    return visible


def my_results(*, by: User) -> list[Report]:
    """The signed-in patient's released reports, newest first (held ones are not shown)."""
    patient = patients.get_own_record(by=by)
    if patient is None:
        return []
    rows = list(db.session.scalars(sa.select(Report).join(Report.request).where(
        ReadingRequest.patient_id == patient.id, Report.released_at.is_not(None))
        .order_by(Report.released_at.desc())))
    for report in rows:
        audit.record("reading.report.read", by=by, patient_id=patient.id, resource_type=REPORT_RT,
                     resource_id=report.id)
    return rows


def priors(req: ReadingRequest, *, by: User) -> list[dict[str, Any]]:
    """The patient's other studies, each with its reports, for the reader (one click away)."""
    studies = [s for s in imaging.studies_for_patient(req.patient, by=by) if s.id != req.study_id]
    reports = {r.request.study_id: r for r in db.session.scalars(
        sa.select(Report).join(Report.request).where(ReadingRequest.patient_id == req.patient_id,
                                                     Report.signed_at.is_not(None)))}
    return [{"study": s, "report": reports.get(s.id)} for s in studies]


def _follow_study(study: Study, from_patient_id: int | None, to_patient_id: int | None, by: User) -> None:
    """A study filed to the wrong chart takes its reading requests and reports along when it is moved.

    :raises Conflict: the study would be taken off every chart while a request or report hangs on it (a report
        must stay on some patient's chart; move the study to the right patient instead).
    """
    requests = list(db.session.scalars(sa.select(ReadingRequest).where(ReadingRequest.study_id == study.id)))
    if not requests or from_patient_id == to_patient_id:
        return
    if to_patient_id is None:
        audit.record("imaging.study.unlink", by=by, outcome=Outcome.FAILURE, patient_id=from_patient_id,
                     resource_type="ImagingStudy", resource_id=study.id, detail={"error": "reading-requests"})
        raise Conflict("This scan has a reading request or report. Move it to the right patient with "
                       "\u201cMove to another patient\u201d instead of taking it off the chart.")
    patient = db.session.get(Patient, to_patient_id)
    assert patient is not None
    for req in requests:
        req.patient_id = to_patient_id
        for doctor in {d for d in (req.assigned_to, req.claimed_by) if d is not None}:
            patients.ensure_care_relationship(patient, doctor, by=by, reason="Reading request")
        audit.record("reading.request.move", by=by, patient_id=to_patient_id, resource_type=RT, resource_id=req.id,
                     detail={"from_patient_id": from_patient_id})
    db.session.flush()


def _check_order_ask(ask: orders.ReadingAsk) -> dict[str, list[str]]:
    """An order asking to be read is judged as "Send to be read" would judge it."""
    return _checked_fields(ask.question, ask.priority, ask.assigned_to_id)[0]


def _read_ordered_studies(study_ids: list[int]) -> None:
    """Send arriving studies to be read when their order asked for it (and no request exists yet), in the name
    of the order's creator: the request reaches the doctors' worklist with no further click. A study or order
    that no longer qualifies (the creator or the named doctor left, say) is logged and skipped."""
    requested = sa.exists().where(ReadingRequest.study_id == Study.id)
    # A study already sent to be read (after its first instance, usually) is skipped in this one query, with no
    # lock taken: a CT of hundreds of slices arrives one instance per transaction.
    for study in db.session.scalars(sa.select(Study).where(Study.id.in_(study_ids), Study.patient_id.is_not(None),
                                                           Study.accession_number.is_not(None), ~requested)):
        order = orders.order_for_study(accession_number=study.accession_number, facility_id=study.facility_id,
                                       patient_id=study.patient_id, lock=True)
        if order is None or not order.asks_to_be_read:
            continue
        # Asked again under the order's lock: another arrival of this study may have sent it meanwhile.
        if db.session.scalar(sa.select(ReadingRequest.id).where(ReadingRequest.study_id == study.id)) is not None:
            continue
        creator = db.session.get(User, order.created_by_id)
        assert creator is not None and order.read_priority is not None
        try:  # a refusal adds nothing but its audit event
            request_reading(study, by=creator, question=order.read_question or "", priority=order.read_priority,
                            assigned_to_id=order.read_assigned_to_id)
        except AppError as exc:
            logger.warning("order %s asked to read study %s, refused: %s %s", order.id, study.id, exc.detail,
                           sorted(exc.errors or {}))


imaging.on_study_refiled(_follow_study)
imaging.on_studies_arrived(_read_ordered_studies)
orders.on_reading_ask(_check_order_ask)
