"""Imaging rules: ingest (validate, deduplicate, store, index, audit), who sees which study, reconciliation.

Object first, row second: an instance row is flushed only after its bytes are in the object store, and the
caller deletes the object again if the row does not commit (see :mod:`app.imaging.ingest`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import BinaryIO

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app

import storage
from app import db
from app.audit import service as audit
from app.audit.models import Outcome
from app.auth.models import Role, User
from app.errors import Forbidden, ValidationFailed
from app.imaging.dicomfile import Header, Rejected, read_header
from app.imaging.models import Instance, Series, Study
from app.patients import access as patient_access
from app.patients.models import Patient
from storage.keys import new_key

INGEST_ROLES = (Role.CLINIC_STAFF,)
VIEW_ROLES = (Role.CLINIC_STAFF, Role.DOCTOR, Role.PATIENT)


def object_store() -> storage.ObjectStore:
    """The app's object store, built once per process from its config."""
    ext = current_app.extensions
    if "object_store" not in ext:
        ext["object_store"] = storage.from_config(dict(current_app.config))
    return ext["object_store"]


@dataclass
class IngestResult:
    filename: str
    status: str  # stored | duplicate | conflict | rejected
    reason: str = ""
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None
    study_id: int | None = None
    object_key: str | None = None
    patient_id: int | None = None
    size: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("stored", "duplicate")


def _sha256_of(fh: BinaryIO) -> str:
    fh.seek(0)
    digest = hashlib.sha256()
    while chunk := fh.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def can_ingest(user: User | None) -> bool:
    return user is None or user.role in INGEST_ROLES


def ingest(fh: BinaryIO, *, filename: str, by: User | None, facility_id: int | None, source: str = "upload",
           actor_name: str | None = None) -> IngestResult:
    """Validate one DICOM file (open, seekable, at 0), store it unchanged and index it.

    ``by`` is None for the DICOM listener, which names the sending AE in ``actor_name``. Returns a result
    instead of raising for per-file problems, so a batch goes on.
    """
    if by is not None and by.role not in INGEST_ROLES:
        audit.record("imaging.instance.store", by=by, outcome=Outcome.DENIED, resource_type="ImagingInstance")
        raise Forbidden("Only clinic staff can send scans.")
    try:
        header = read_header(fh)
    except Rejected as exc:
        return IngestResult(filename, "rejected", exc.reason)
    sop_uid = str(header.dataset.SOPInstanceUID)
    result = IngestResult(filename, "stored", sop_instance_uid=sop_uid, study_instance_uid=str(
        header.dataset.StudyInstanceUID), sop_class_uid=str(header.dataset.SOPClassUID), size=header.size)
    existing = db.session.scalar(sa.select(Instance).where(Instance.sop_instance_uid == sop_uid))
    if existing is not None:
        sha = _sha256_of(fh)
        result.study_id = existing.series.study_id
        if sha == existing.sha256:
            result.status, result.reason = "duplicate", "already stored"
        else:
            result.status = "conflict"
            result.reason = "a different file with this SOP Instance UID is stored; kept the original"
        return result
    fh.seek(0)
    key = new_key("dicom")
    stored = object_store().put(key, fh, content_type="application/dicom", length=header.size)
    result.object_key = key
    try:
        with db.session.begin_nested():
            instance = _index(header, stored, by=by, facility_id=facility_id, source=source)
    except sa.exc.IntegrityError:
        object_store().delete(key)
        result.object_key = None
        result.status, result.reason = "duplicate", "already stored (received twice at once)"
        return result
    except BaseException:
        object_store().delete(key)
        raise
    study = instance.series.study
    result.study_id, result.patient_id = study.id, study.patient_id
    audit.record("imaging.instance.store", by=by, actor_name=actor_name, patient_id=study.patient_id,
                 resource_type="ImagingInstance", resource_id=instance.id, detail={"source": source})
    return result


def _index(header: Header, stored: storage.StoredObject, *, by: User | None, facility_id: int | None,
           source: str) -> Instance:
    ds = header.dataset
    study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    study = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        dicom_pid = header.get("PatientID", 64)
        patient_id = None
        if dicom_pid:
            patient_id = db.session.scalar(sa.select(Patient.id).where(Patient.mrn == dicom_pid))
        name = header.get("PatientName", 200)
        study = Study(study_instance_uid=study_uid, patient_id=patient_id, facility_id=facility_id,
                      dicom_patient_id=dicom_pid, patient_name=name,
                      patient_name_search=name.lower() if name else None,
                      patient_birth_date=header.get("PatientBirthDate", 8), patient_sex=header.get("PatientSex", 16),
                      study_date=header.study_date, study_time=header.get("StudyTime", 16),
                      accession_number=header.get("AccessionNumber", 16), study_id=header.get("StudyID", 16),
                      study_description=header.get("StudyDescription", 64),
                      referring_physician_name=header.get("ReferringPhysicianName", 200), modalities="")
        db.session.add(study)
        db.session.flush()
    series = db.session.scalar(sa.select(Series).where(Series.series_instance_uid == series_uid))
    if series is None:
        series = Series(series_instance_uid=series_uid, study=study, modality=header.get("Modality", 16),
                        series_number=header.get_int("SeriesNumber"),
                        series_description=header.get("SeriesDescription", 64),
                        body_part_examined=header.get("BodyPartExamined", 16))
        db.session.add(series)
        if series.modality and series.modality not in study.modality_list:
            study.modalities = "\\".join([*study.modality_list, series.modality])[:64]
        db.session.flush()
    instance = Instance(sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                        series=series, instance_number=header.get_int("InstanceNumber"),
                        transfer_syntax_uid=header.transfer_syntax_uid, rows=header.get_int("Rows"),
                        columns=header.get_int("Columns"), number_of_frames=header.get_int("NumberOfFrames") or 1,
                        object_key=stored.key, size=stored.size, sha256=stored.sha256,
                        pixel_data_offset=header.pixel_data_offset, received_by_id=by.id if by else None,
                        source=source)
    db.session.add(instance)
    db.session.flush()
    return instance


# ---------------------------------------------------------------- who sees what


def visible_clause(user: User) -> sa.ColumnElement[bool]:
    """Studies ``user`` may read: doctors their patients', a patient their own, clinic staff their clinic's."""
    if user.role not in VIEW_ROLES:
        return sa.false()
    of_visible_patient = Study.patient_id.in_(sa.select(Patient.id).where(patient_access.visible_clause(user)))
    if user.role is Role.CLINIC_STAFF:
        return sa.or_(of_visible_patient, Study.facility_id == user.facility_id)
    return of_visible_patient


def get_study(study_uid: str, *, by: User, action: str = "imaging.study.read") -> Study:
    """:raises NotFound: unknown or not visible (audited as denied)."""
    study = db.session.scalar(sa.select(Study).where(Study.study_instance_uid == study_uid, visible_clause(by)))
    if study is None:
        raise audit.deny(action, by=by, resource_type="ImagingStudy", resource_id=study_uid[:64])
    audit.record(action, by=by, patient_id=study.patient_id, resource_type="ImagingStudy", resource_id=study.id)
    return study


def get_series(study_uid: str, series_uid: str, *, by: User, action: str = "imaging.series.read") -> Series:
    series = db.session.scalar(sa.select(Series).join(Series.study).options(so.contains_eager(Series.study)).where(
        Study.study_instance_uid == study_uid, Series.series_instance_uid == series_uid, visible_clause(by)))
    if series is None:
        raise audit.deny(action, by=by, resource_type="ImagingSeries", resource_id=series_uid[:64])
    audit.record(action, by=by, patient_id=series.study.patient_id, resource_type="ImagingSeries",
                 resource_id=series.id)
    return series


def get_instance(study_uid: str, series_uid: str | None, sop_uid: str, *, by: User,
                 action: str = "imaging.instance.read", audit_read: bool = True) -> Instance:
    query = (sa.select(Instance).join(Instance.series).join(Series.study)
             .options(so.contains_eager(Instance.series).contains_eager(Series.study))  # no lazy loads for audit
             .where(Study.study_instance_uid == study_uid, Instance.sop_instance_uid == sop_uid, visible_clause(by)))
    if series_uid is not None:
        query = query.where(Series.series_instance_uid == series_uid)
    instance = db.session.scalar(query)
    if instance is None:
        raise audit.deny(action, by=by, resource_type="ImagingInstance", resource_id=sop_uid[:64])
    if audit_read:
        audit.record(action, by=by, patient_id=instance.series.study.patient_id, resource_type="ImagingInstance",
                     resource_id=instance.id)
    return instance


def studies_for_patient(patient: Patient, *, by: User) -> list[Study]:
    """The studies on a chart; the caller opened the patient with ``patients.service.get_patient``."""
    return list(db.session.scalars(sa.select(Study).where(Study.patient_id == patient.id, visible_clause(by))
                                   .order_by(Study.study_date.desc().nulls_last(), Study.id.desc())))


def unmatched_studies(*, by: User) -> list[Study]:
    if by.role is not Role.CLINIC_STAFF:
        raise Forbidden("Only clinic staff reconcile scans.")
    audit.record("imaging.unmatched.list", by=by, resource_type="ImagingStudy")
    return list(db.session.scalars(sa.select(Study).where(Study.patient_id.is_(None),
                                                          Study.facility_id == by.facility_id)
                                   .order_by(Study.id.desc()).limit(200)))


def link_study(study_id: int, *, mrn: str, by: User) -> Study:
    """Attach an unmatched study of the actor's clinic to a patient by MRN.

    :raises NotFound: the study is not an unmatched one of this clinic.
    :raises ValidationFailed: no patient the actor can see has that MRN.
    """
    study = db.session.get(Study, study_id)
    if by.role is not Role.CLINIC_STAFF or study is None or study.facility_id != by.facility_id \
            or study.patient_id is not None:
        raise audit.deny("imaging.study.link", by=by, resource_type="ImagingStudy", resource_id=study_id)
    patient = db.session.scalar(sa.select(Patient).where(Patient.mrn == mrn.strip(),
                                                         patient_access.visible_clause(by)))
    if patient is None:
        raise ValidationFailed("No patient of your clinic has that MRN.", errors={"mrn": ["Unknown MRN."]})
    study.patient_id = patient.id
    db.session.flush()
    audit.record("imaging.study.link", by=by, patient_id=patient.id, resource_type="ImagingStudy",
                 resource_id=study.id)
    return study


def parse_date_range(text: str) -> tuple[date | None, date | None]:
    """DICOM date matching: ``YYYYMMDD``, ``A-B``, ``-B``, ``A-``.

    :raises ValidationFailed: malformed.
    """
    def one(part: str) -> date | None:
        part = part.strip()
        if not part:
            return None
        if len(part) != 8 or not part.isdigit():
            raise ValidationFailed("StudyDate must be YYYYMMDD or a range.", errors={"StudyDate": ["Bad date."]})
        try:
            return date(int(part[:4]), int(part[4:6]), int(part[6:]))
        except ValueError:
            raise ValidationFailed("StudyDate is not a date.", errors={"StudyDate": ["Bad date."]}) from None

    if "-" in text:
        start, _, end = text.partition("-")
        return one(start), one(end)
    d = one(text)
    return d, d
