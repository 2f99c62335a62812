"""Imaging rules: ingest (validate, deduplicate, store, index, audit), who sees which study, reconciliation.

Object first, row second: :func:`stage` stores a file and keeps its row values; :func:`index` writes the rows of
a whole batch once their objects are in the store, and the caller deletes the objects again if the rows do not
commit (see :mod:`app.imaging.ingest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from types import SimpleNamespace
from typing import Any, BinaryIO, cast

import pydicom
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_babel import gettext
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

import storage
from app import db, read_path
from app.audit import service as audit
from app.auth.models import Role, User
from app.catalogue import N_
from app.db import utcnow
from app.errors import Forbidden, ValidationFailed
from app.imaging import access, orphans
from app.imaging.access import can_ingest  # noqa: F401  (app.imaging.dicomweb asks the service)
from app.imaging.dicomfile import Header, Rejected, parse_da, read_header
from app.imaging.fingerprint import same_instance
from app.imaging.models import Instance, Series, Study
from app.patients import access as patient_access
from app.patients.models import Patient, Sex
from storage.keys import new_key

logger = logging.getLogger(__name__)
# Background uploads (STOW-RS, upload page): a file up to this size is read into memory and put by a worker
# thread while the next one is parsed; at most UPLOAD_THREADS run at once per process, which bounds the memory.
BACKGROUND_MAX_BYTES = 16 * 1024 * 1024
UPLOAD_THREADS = 4
_uploads_lock = threading.Lock()
_upload_slots = threading.BoundedSemaphore(UPLOAD_THREADS)
VIEW_ROLES = (Role.CLINIC_STAFF, Role.DOCTOR, Role.PATIENT)


def object_store() -> storage.ObjectStore:
    """The app's object store, built once per process from its config."""
    ext = current_app.extensions
    if "object_store" not in ext:
        ext["object_store"] = storage.from_config(dict(current_app.config))
    return ext["object_store"]


@dataclass
class Staged:
    """Row values of an object already in the store whose row is not written yet (see :func:`index`)."""

    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]


TRY_AGAIN = "could not be stored; try again"
"""The reason of a rejection that is no fault of the file (store or database failure): the sender should retry."""


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
    staged: Staged | None = None
    upload: Future[storage.StoredObject] | None = None  # a background put still under way
    unchecked: bool = False  # not yet compared with the stored instances (see :func:`index`)

    @property
    def ok(self) -> bool:
        return self.status in ("stored", "duplicate")

    @property
    def transient(self) -> bool:
        """Rejected for a failure on this side, not for the file: sending it again may succeed."""
        return self.status == "rejected" and self.reason == TRY_AGAIN


def _sha256_of(fh: BinaryIO) -> str:
    fh.seek(0)
    digest = hashlib.sha256()
    while chunk := fh.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _uploader() -> ThreadPoolExecutor:
    ext = current_app.extensions
    with _uploads_lock:
        if "imaging_uploads" not in ext:
            ext["imaging_uploads"] = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="imaging-upload")
        return ext["imaging_uploads"]


def _put_in_background(key: str, data: bytes) -> Future[storage.StoredObject]:
    store = object_store()
    _upload_slots.acquire()
    try:
        future = _uploader().submit(store.put, key, io.BytesIO(data), content_type="application/dicom",
                                    length=len(data))
    except BaseException:
        _upload_slots.release()
        raise
    future.add_done_callback(lambda _f: _upload_slots.release())
    return future


def settle(results: list[IngestResult]) -> None:
    """Wait for the background puts of ``results``; a failed one turns its result into a rejection."""
    for r in results:
        if r.upload is None:
            continue
        future, r.upload = r.upload, None
        try:
            stored = future.result()
        except Exception:
            logger.exception("storing an object failed")
            if r.object_key:  # the put may have stored it before failing (only the answer lost)
                orphans.delete_or_remember(r.object_key)
            r.status, r.reason, r.staged, r.object_key = "rejected", TRY_AGAIN, None, None
            continue
        assert r.staged is not None
        r.staged.instance.update(size=stored.size, sha256=stored.sha256)


def stage(fh: BinaryIO, *, filename: str, by: User | None, source: str,
          pending: dict[str, IngestResult] | None = None, size: int | None = None,
          lookup: sa.Connection | None = None, background: bool = False) -> IngestResult:
    """Validate, deduplicate and store one file; its row is written later by :func:`index`.

    ``pending`` maps SOP Instance UIDs staged earlier in the same batch (not yet in the database) to their
    results, so a file sent twice in one batch is a duplicate (or a conflict) there too. ``lookup`` is a
    connection the caller keeps open across a batch for the duplicate check (default: the session's). With
    ``background``, a file up to :data:`BACKGROUND_MAX_BYTES` is put by a worker thread, and the check against
    stored instances is left to :func:`index`, one query for the whole batch (callers that answer per file,
    like the DICOM listener, do not use it).
    """
    if not access.can_ingest(by):
        audit.forbid("imaging.instance.store", by=by, resource_type="ImagingInstance",
                     error=Forbidden("Only clinic staff can send scans."))
    try:
        header = read_header(fh, size)
    except Rejected as exc:
        return IngestResult(filename, "rejected", exc.reason)
    ds = header.dataset
    sop_uid = str(ds.SOPInstanceUID)
    result = IngestResult(filename, "stored", sop_instance_uid=sop_uid, study_instance_uid=str(ds.StudyInstanceUID),
                          sop_class_uid=str(ds.SOPClassUID), size=header.size)
    earlier = pending.get(sop_uid) if pending else None
    if earlier is not None:
        settle([earlier])
    if earlier is not None and earlier.staged is not None:
        known: tuple[str, str | None, int | None] | None = (earlier.staged.instance["sha256"], earlier.object_key,
                                                            None)
    elif background:
        known = None
    else:
        query = sa.select(Instance.sha256, Instance.object_key, Series.study_id).join(Instance.series).where(
            Instance.sop_instance_uid == sop_uid)
        row = (lookup or db.session).execute(query).first()
        known = (row[0], row[1], row[2]) if row is not None else None
    if known is not None:
        result.study_id = known[2]
        _judge_resend(result, fh, stored_sha256=known[0], stored_key=known[1])
        return result
    fh.seek(0)
    key = new_key("dicom")
    staged = _staged(header, key, by=by, source=source)
    if background and header.size <= BACKGROUND_MAX_BYTES:
        result.upload = _put_in_background(key, fh.read())
    else:
        stored = object_store().put(key, fh, content_type="application/dicom", length=header.size)
        staged.instance.update(size=stored.size, sha256=stored.sha256)
    result.object_key, result.staged, result.unchecked = key, staged, background
    if pending is not None:
        pending[sop_uid] = result
    return result


RESEND_REASONS = {"duplicate": "already stored",
                  "conflict": "another object has this SOP Instance UID; kept the original"}


def _judge_resend(result: IngestResult, fh: BinaryIO, *, stored_sha256: str, stored_key: str | None) -> None:
    """A file under a SOP Instance UID already stored: the same instance (equal bytes, or an equal dataset in
    other bytes, see :mod:`app.imaging.fingerprint`) is a duplicate, anything else a conflict."""
    same = _sha256_of(fh) == stored_sha256 or (
        stored_key is not None and same_instance(fh, io.BytesIO(object_store().read(stored_key))))
    result.status = "duplicate" if same else "conflict"
    result.reason = RESEND_REASONS[result.status]


def _staged(header: Header, key: str, *, by: User | None, source: str) -> Staged:
    ds = header.dataset
    name = header.get("PatientName", 200)
    study = {"study_instance_uid": str(ds.StudyInstanceUID), "dicom_patient_id": header.get("PatientID", 64),
             "patient_name": name, "patient_name_search": name.lower() if name else None,
             "patient_birth_date": header.get("PatientBirthDate", 8), "patient_sex": header.get("PatientSex", 16),
             "study_date": header.study_date, "study_time": header.get("StudyTime", 16),
             "accession_number": header.get("AccessionNumber", 16), "study_id": header.get("StudyID", 16),
             "study_description": header.get("StudyDescription", 64),
             "referring_physician_name": header.get("ReferringPhysicianName", 200)}
    series = {"series_instance_uid": str(ds.SeriesInstanceUID), "modality": header.get("Modality", 16),
              "series_number": header.get_int("SeriesNumber"),
              "series_description": header.get("SeriesDescription", 64),
              "body_part_examined": header.get("BodyPartExamined", 16)}
    instance = {"sop_instance_uid": str(ds.SOPInstanceUID), "sop_class_uid": str(ds.SOPClassUID),
                "instance_number": header.get_int("InstanceNumber"), "transfer_syntax_uid": header.transfer_syntax_uid,
                "rows": header.get_int("Rows"), "columns": header.get_int("Columns"),
                "number_of_frames": (header.get_int("NumberOfFrames") or 1) if header.has_pixels else 0,
                "bits_allocated": header.get_int("BitsAllocated"), "object_key": key,
                "size": header.size, "sha256": "", "pixel_data_offset": header.pixel_data_offset,
                "received_by_id": by.id if by else None, "source": source}
    return Staged(study=study, series=series, instance=instance)


def _insert(table: sa.Table) -> Any:
    """INSERT with ON CONFLICT support on the session's database (PostgreSQL or SQLite)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


def _ensure_rows(model: type[Any], key: str, rows: dict[str, dict[str, Any]],
                 complete: Callable[[list[dict[str, Any]]], None] | None = None,
                 known: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rows of ``model`` whose unique column ``key`` takes the given values, created where missing (their
    values first passed to ``complete``, for what only a new row needs). ``known`` holds rows already read in
    this transaction, which are not read again.

    Race-free: several senders may deliver the same new study at once (parallel associations or STOW requests).
    A row another transaction creates meanwhile is not an error: ``ON CONFLICT DO NOTHING`` waits for that
    transaction and then keeps its row, which the second select sees.
    """
    column = getattr(model, key)
    found = {uid: row for uid, row in (known or {}).items() if uid in rows}
    if unread := [uid for uid in rows if uid not in found]:
        found.update({getattr(o, key): o for o in db.session.scalars(sa.select(model).where(column.in_(unread)))})
    missing = [values for uid, values in sorted(rows.items()) if uid not in found]  # one lock order for all
    if missing:
        if complete is not None:
            complete(missing)
        db.session.execute(_insert(model.__table__).on_conflict_do_nothing(index_elements=[key]), missing)
        found.update({getattr(o, key): o for o in db.session.scalars(
            sa.select(model).where(column.in_([v[key] for v in missing])))})
    return found


def _match_patients(new_studies: list[dict[str, Any]]) -> None:
    """A new study is filed to the patient whose MRN is its Patient ID (else it waits under Unmatched scans)."""
    pids = {row["dicom_patient_id"] for row in new_studies if row["dicom_patient_id"]}
    if not pids:
        return
    patients = dict(db.session.execute(sa.select(Patient.mrn, Patient.id).where(Patient.mrn.in_(pids))).all())
    for row in new_studies:
        row["patient_id"] = patients.get(row["dicom_patient_id"] or "")


def _add_modalities(studies: dict[str, Study], staged: list[Staged]) -> None:
    """Add new series' modalities to ModalitiesInStudy; the study row is locked and re-read first, so two
    senders adding different modalities at once both count."""
    wanted: dict[int, list[str]] = {}
    for st in staged:
        study = studies[st.study["study_instance_uid"]]
        modality = st.series["modality"]
        if modality and modality not in study.modality_list and modality not in wanted.setdefault(study.id, []):
            wanted[study.id].append(modality)
    wanted = {k: v for k, v in wanted.items() if v}
    if not wanted:
        return
    locked = db.session.scalars(sa.select(Study).where(Study.id.in_(sorted(wanted))).order_by(Study.id)
                                .with_for_update().execution_options(populate_existing=True))
    for study in locked:
        new = [m for m in wanted[study.id] if m not in study.modality_list]
        if new:
            study.modalities = "\\".join([*study.modality_list, *new])[:64]


def index(results: list[IngestResult], *, by: User | None, facility_id: int | None,
          actor_name: str | None = None) -> None:
    """Write the rows of staged results in a few statements for the whole batch, and one audit row per study.

    Flushes, does not commit: the caller commits, or on failure rolls back and calls :func:`discard_objects`.
    Safe against other transactions writing the same study, series or instance at the same time: a study or
    series row created meanwhile is reused, and an instance stored meanwhile turns this one into a duplicate (or
    a conflict) whose new object is deleted.
    """
    settle(results)  # rows only for objects that are in the store
    _check_stored([r for r in results if r.unchecked and r.staged is not None])
    staged_results = [r for r in results if r.staged is not None]
    stored_series = _stored_series(staged_results)
    _refuse_series_of_other_studies(staged_results, stored_series)
    todo = [r for r in staged_results if r.staged is not None]  # less those just refused
    if not todo:
        return
    staged = [r.staged for r in todo if r.staged is not None]
    study_rows = {st.study["study_instance_uid"]: st.study | {
        "patient_id": None, "facility_id": facility_id, "modalities": "", "created_at": utcnow()}
        for st in reversed(staged)}
    studies = _ensure_rows(Study, "study_instance_uid", study_rows, complete=_match_patients,
                           known={s.study.study_instance_uid: s.study for s in stored_series.values()})
    series_rows = {st.series["series_instance_uid"]: st.series | {
        "study_id": studies[st.study["study_instance_uid"]].id} for st in reversed(staged)}
    known_series = _ensure_rows(Series, "series_instance_uid", series_rows, known=stored_series)
    misfiled = [uid for st in staged if known_series[uid := st.series["series_instance_uid"]].study_id
                != studies[st.study["study_instance_uid"]].id]
    if misfiled:  # created under another study meanwhile: fail the batch; one by one, each is refused
        raise ValidationFailed(gettext("Series %(uid)s belongs to another study.", uid=misfiled[0]))
    _add_modalities(studies, staged)
    rows = sorted((st.instance | {"series_id": known_series[st.series["series_instance_uid"]].id,
                                  "created_at": utcnow()} for st in staged), key=lambda row: row["sop_instance_uid"])
    inserted = dict(db.session.execute(
        _insert(Instance.__table__).on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(Instance.sop_instance_uid, Instance.id), rows).all()) if len(rows) == 1 else {}
    if len(rows) > 1:  # executemany with RETURNING: one statement per row on some drivers, so insert then select
        db.session.execute(_insert(Instance.__table__).on_conflict_do_nothing(index_elements=["sop_instance_uid"]),
                           rows)
        keys = [r["object_key"] for r in rows]
        inserted = dict(db.session.execute(sa.select(Instance.sop_instance_uid, Instance.id)
                                           .where(Instance.object_key.in_(keys))).all())
    lost = [r for r in todo if r.sop_instance_uid not in inserted]
    if lost:  # stored by another sender between our check and our insert
        _check_stored(lost)
    per_study: dict[int, tuple[int | None, list[int]]] = {}
    for result, st in zip(todo, staged, strict=True):
        if result.sop_instance_uid not in inserted:
            continue
        study = studies[st.study["study_instance_uid"]]
        result.study_id, result.patient_id = study.id, study.patient_id
        per_study.setdefault(study.id, (study.patient_id, []))[1].append(inserted[result.sop_instance_uid])
    source = staged[0].instance["source"]
    for study_id, (patient_id, ids) in per_study.items():
        if len(todo) == 1:
            audit.record("imaging.instance.store", by=by, actor_name=actor_name, patient_id=patient_id,
                         resource_type="ImagingInstance", resource_id=ids[0], detail={"source": source})
        else:
            audit.record("imaging.instance.store", by=by, actor_name=actor_name, patient_id=patient_id,
                         resource_type="ImagingStudy", resource_id=study_id,
                         detail={"source": source, "instances": len(ids), "instance_ids": ids})
    db.session.flush()


def _stored_series(results: list[IngestResult]) -> dict[str, Series]:
    """The already stored series that staged results name, each with its study, in one query: in the usual case
    (the second and later instances of a series) the study and series rows need no other read."""
    declared = {r.staged.series["series_instance_uid"] for r in results if r.staged is not None}
    if not declared:
        return {}
    return {s.series_instance_uid: s for s in db.session.scalars(
        sa.select(Series).join(Series.study).options(so.contains_eager(Series.study))
        .where(Series.series_instance_uid.in_(declared)))}


def _refuse_series_of_other_studies(results: list[IngestResult], stored: dict[str, Series]) -> None:
    """An instance whose series is stored under another study would be filed there, out of reach under the study
    it names: it is refused (its new object deleted), the sender told why."""
    for r in results:
        assert r.staged is not None
        series = stored.get(r.staged.series["series_instance_uid"])
        if series is not None and series.study.study_instance_uid != r.staged.study["study_instance_uid"]:
            discard_objects([r])
            r.status, r.reason = "rejected", "its Series Instance UID belongs to another study"


def _check_stored(results: list[IngestResult]) -> None:
    """Duplicates and conflicts among staged results, found with one query; their new objects are deleted."""
    if not results:
        return
    by_uid = {r.sop_instance_uid: r for r in results}
    uids = list(by_uid)
    rows = [row for i in range(0, len(uids), 1000) for row in db.session.execute(
        sa.select(Instance.sop_instance_uid, Instance.sha256, Instance.object_key, Series.study_id)
        .join(Instance.series).where(Instance.sop_instance_uid.in_(uids[i:i + 1000])))]
    for sop_uid, sha, key, study_id in rows:
        r = by_uid[sop_uid]
        assert r.staged is not None and r.object_key is not None
        if r.staged.instance["sha256"] == sha:
            status = "duplicate"
        else:
            new = io.BytesIO(object_store().read(r.object_key))
            status = "duplicate" if same_instance(new, io.BytesIO(object_store().read(key))) else "conflict"
        discard_objects([r])
        r.study_id = study_id
        r.status, r.reason = status, RESEND_REASONS[status]
    for r in results:
        r.unchecked = False


def row_committed(result: IngestResult) -> bool | None:
    """Whether the row of a staged result is in the database, for a commit whose outcome is unknown (None: the
    database cannot say). If it is, the result is stored and no longer holds its object for deletion."""
    if result.staged is None or not result.object_key:
        return False
    try:
        row = db.session.execute(sa.select(Instance.id, Series.study_id).join(Instance.series)
                                 .where(Instance.object_key == result.object_key)).first()
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the database is still out of reach: keep the object, the row may be there
        logger.warning("could not tell whether an instance row was committed", exc_info=True)
        with contextlib.suppress(Exception):
            db.session.rollback()
        return None
    if row is None:
        return False
    result.study_id, result.staged, result.status = row[1], None, "stored"
    return True


def discard_objects(results: list[IngestResult]) -> None:
    """Delete the objects of staged results whose rows will not be committed (no orphans)."""
    for r in results:
        if r.upload is not None:
            with contextlib.suppress(Exception):  # it is being thrown away either way
                r.upload.result()
            r.upload = None
        if r.staged is not None and r.object_key:
            orphans.delete_or_remember(r.object_key)
            r.object_key = None
            r.staged = None


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
    study = read_path.as_viewer(by, lambda: db.session.scalar(sa.select(Study).where(
        Study.study_instance_uid == study_uid, visible_clause(by), read_path.still_signed_in(by))))
    if study is None:
        audit.forbid(action, by=by, resource_type="ImagingStudy", resource_id=study_uid[:64])
    audit.record(action, by=by, patient_id=study.patient_id, resource_type="ImagingStudy", resource_id=study.id)
    return study


def get_series(study_uid: str, series_uid: str, *, by: User, action: str = "imaging.series.read") -> Series:
    series = read_path.as_viewer(by, lambda: db.session.scalar(
        sa.select(Series).join(Series.study).options(so.contains_eager(Series.study))
        .where(Study.study_instance_uid == study_uid, Series.series_instance_uid == series_uid, visible_clause(by),
               read_path.still_signed_in(by))))
    if series is None:
        audit.forbid(action, by=by, resource_type="ImagingSeries", resource_id=series_uid[:64])
    audit.record(action, by=by, patient_id=series.study.patient_id, resource_type="ImagingSeries",
                 resource_id=series.id)
    return series


def visible_to_viewer(role: Role) -> sa.ColumnElement[bool]:
    """:func:`visible_clause` for any viewer of ``role``, with bind parameters for who they are.

    For statements built once and reused (:mod:`app.read_path` binds the viewer with each run). The stand-in
    user has only a role, an id and a clinic: a rule that came to need more would fail here, not bind one
    viewer's value.
    """
    viewer = cast(User, SimpleNamespace(role=role, id=sa.bindparam("viewer_id"),
                                        facility_id=sa.bindparam("viewer_facility_id")))
    return visible_clause(viewer)


def visible_to_facility(facility_id: int) -> sa.ColumnElement[bool]:
    """Studies a DICOM peer of a clinic may query and retrieve: exactly what the clinic's staff see."""
    return visible_clause(cast(User, SimpleNamespace(role=Role.CLINIC_STAFF, id=None, facility_id=facility_id)))


def _instance_query(role: Role, with_series: bool) -> sa.Select[Any]:
    query = (sa.select(Instance).join(Instance.series).join(Series.study)
             .options(so.contains_eager(Instance.series).contains_eager(Series.study))  # no lazy loads
             .where(Study.study_instance_uid == sa.bindparam("study_uid"),
                    Instance.sop_instance_uid == sa.bindparam("sop_uid"), visible_to_viewer(role)))
    if with_series:
        query = query.where(Series.series_instance_uid == sa.bindparam("series_uid"))
    return query


def get_instance(study_uid: str, series_uid: str | None, sop_uid: str, *, by: User,
                 action: str = "imaging.instance.read") -> Instance:
    """The instance with its series and study, its read audited in the same statement (where the database can).

    :raises NotFound: unknown or not visible (audited as denied).
    """
    with_series = series_uid is not None

    def read() -> list[sa.Row[Any]]:
        statement = read_path.audited_read(
            ("instance", with_series), by.role, lambda: _instance_query(by.role, with_series),
            resource_type="ImagingInstance", resource_id=lambda: Instance.id, patient_id=lambda: Study.patient_id)
        return statement.run({"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid}, action, by=by)

    rows = read_path.as_viewer(by, read)
    if not rows:
        audit.forbid(action, by=by, resource_type="ImagingInstance", resource_id=sop_uid[:64])
    return rows[0][0]


def read_document(study_uid: str, sop_uid: str, *, by: User) -> tuple[Instance, pydicom.Dataset]:
    """An object of a visible study, parsed whole, to show its PDF or report text (audited).

    :raises NotFound: unknown or not visible (audited as denied).
    """
    inst = get_instance(study_uid, None, sop_uid, by=by, action="imaging.document.read")
    return inst, pydicom.dcmread(io.BytesIO(object_store().read(inst.object_key)))


def studies_for_patient(patient: Patient, *, by: User) -> list[Study]:
    """The studies on a chart; the caller opened the patient with ``patients.service.get_patient``. Read once
    per page (the chart's scans, reading and visit-history panels all show them)."""
    return list(db.read_once(("studies_for_patient", patient.id, by.id), lambda: list(db.session.scalars(
        sa.select(Study).where(Study.patient_id == patient.id, visible_clause(by))
        .order_by(Study.study_date.desc().nulls_last(), Study.id.desc())))))


def unmatched_studies(*, by: User) -> list[Study]:
    if not access.reconciles_scans(by):
        audit.forbid("imaging.unmatched.list", by=by, resource_type="ImagingStudy",
                     error=Forbidden("Only clinic staff reconcile scans."))
    audit.record("imaging.unmatched.list", by=by, resource_type="ImagingStudy")
    return list(db.session.scalars(sa.select(Study).where(Study.patient_id.is_(None),
                                                          Study.facility_id == by.facility_id)
                                   .order_by(Study.id.desc()).limit(200)))


_DICOM_SEX = {"F": Sex.FEMALE, "M": Sex.MALE, "O": Sex.OTHER}
NOT_IN_SCAN = "not in the scan"


@dataclass(frozen=True)
class IdentityRow:
    """One line of the side-by-side comparison of a scan's identity with a chart's."""

    label: str
    in_scan: str
    on_chart: str
    differs: bool


@dataclass(frozen=True)
class LinkPreview:
    """What the person filing a scan must see before it lands on a chart."""

    study: Study
    patient: Patient
    rows: list[IdentityRow]
    current_patient: Patient | None

    @property
    def mismatches(self) -> list[str]:
        return [r.label for r in self.rows if r.differs]

    @property
    def unchecked(self) -> list[str]:
        """Identity the scan does not carry, so nothing could be compared (not a mismatch, not a match)."""
        return [r.label for r in self.rows if r.in_scan == NOT_IN_SCAN]


def _name_key(text: str) -> str:
    """Names compared without case, accents, spaces or punctuation ("González" is "GONZALEZ")."""
    plain = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in plain if ch.isalnum()).lower()


def _identity_rows(study: Study, patient: Patient) -> list[IdentityRow]:
    family, _, rest = (study.patient_name or "").partition("^")
    given = rest.split("^")[0] if rest else ""
    name_differs = bool(study.patient_name) and (
        _name_key(family) != _name_key(patient.family_name)
        or (bool(given) and _name_key(given) != _name_key(patient.given_name)))
    sex = _DICOM_SEX.get((study.patient_sex or "").strip().upper())
    born = parse_da(study.patient_birth_date)
    missing = NOT_IN_SCAN
    return [
        IdentityRow("Name", study.patient_name_display or missing, patient.display_name, name_differs),
        IdentityRow("Sex", sex.value.capitalize() if sex else missing, patient.sex.value.capitalize(),
                    sex is not None and patient.sex in _DICOM_SEX.values() and sex is not patient.sex),
        IdentityRow("Birth date", born.isoformat() if born else missing, patient.birth_date.isoformat(),
                    born is not None and born != patient.birth_date),
        IdentityRow("Patient ID / MRN", study.dicom_patient_id or missing, patient.mrn, False),
    ]


StudyRefiled = Callable[[Study, "int | None", "int | None", User], None]
_refiled: list[StudyRefiled] = []


def on_study_refiled(listener: StudyRefiled) -> Callable[[], None]:
    """Call ``listener(study, from_patient_id, to_patient_id, by)`` whenever a study is filed, moved or unlinked,
    inside the same transaction: whatever another domain keeps about a study's patient (reading requests,
    reports) must follow the study to the right chart. Returns a function that removes the listener."""
    if listener not in _refiled:
        _refiled.append(listener)
    return lambda: _refiled.remove(listener) if listener in _refiled else None


StudiesArrived = Callable[[list[int]], None]
_arrived: list[StudiesArrived] = []


def on_studies_arrived(listener: StudiesArrived) -> Callable[[], None]:
    """Call ``listener(study_ids)`` after new instances of these studies are committed, whatever the path
    (C-STORE, STOW-RS, upload): what another domain starts when a scan arrives (the reading an order asked
    for). Runs in its own transaction, committed after it; a failure is logged and rolled back and never
    touches the stored scans. Returns a function that removes the listener."""
    if listener not in _arrived:
        _arrived.append(listener)
    return lambda: _arrived.remove(listener) if listener in _arrived else None


def announce_arrivals(results: list[IngestResult]) -> None:
    """Tell the listeners of :func:`on_studies_arrived` which studies just got committed instances."""
    study_ids = sorted({r.study_id for r in results if r.status == "stored" and r.study_id is not None})
    if not study_ids:
        return
    for listener in list(_arrived):
        try:
            listener(study_ids)
            db.session.commit()
        except Exception:
            logger.exception("a listener of arriving studies %s failed; the studies are stored", study_ids)
            with contextlib.suppress(Exception):
                db.rollback()


def _refile(study: Study, to_patient_id: int | None, *, by: User) -> int | None:
    previous, study.patient_id = study.patient_id, to_patient_id
    db.session.flush()
    for listener in _refiled:
        listener(study, previous, to_patient_id, by)
    return previous


def _reconcilable_study(study_id: int, *, by: User, action: str) -> Study:
    """A study sent by the actor's clinic (linked or not). :raises NotFound: otherwise (audited as denied)."""
    study = db.session.get(Study, study_id)
    if study is None or not access.can_reconcile(study, by):
        audit.forbid(action, by=by, resource_type="ImagingStudy", resource_id=study_id)
    return study


def study_to_reconcile(study_id: int, *, by: User) -> Study:
    """A study the actor may file, move or unlink, its opening audited.

    :raises NotFound: the study was not sent by the actor's clinic (audited as denied).
    """
    study = _reconcilable_study(study_id, by=by, action="imaging.study.read")
    audit.record("imaging.study.read", by=by, patient_id=study.patient_id, resource_type="ImagingStudy",
                 resource_id=study.id)
    return study


def preview_link(study_id: int, *, mrn: str, by: User) -> LinkPreview:
    """Both identities side by side, before a study is filed to (or moved to) the chart with ``mrn``.

    :raises NotFound: the study was not sent by the actor's clinic.
    :raises ValidationFailed: no patient the actor can see has that MRN, or it is the study's patient already.
    """
    preview = _preview(study_id, mrn=mrn, by=by)
    audit.record("imaging.study.link.preview", by=by, patient_id=preview.patient.id, resource_type="ImagingStudy",
                 resource_id=preview.study.id)
    return preview


def _preview(study_id: int, *, mrn: str, by: User) -> LinkPreview:
    study = _reconcilable_study(study_id, by=by, action="imaging.study.link")
    patient = db.session.scalar(sa.select(Patient).where(Patient.mrn == mrn.strip(),
                                                         patient_access.visible_clause(by)))
    if patient is None:
        raise ValidationFailed(N_("No patient of your clinic has that MRN."),
                               errors={"mrn": [N_("No patient of your clinic has this MRN.")]})
    if patient.id == study.patient_id:
        raise ValidationFailed("The scan is already on this patient's chart.",
                               errors={"mrn": ["The scan is already on this patient's chart."]})
    current = db.session.get(Patient, study.patient_id) if study.patient_id is not None else None
    return LinkPreview(study, patient, _identity_rows(study, patient), current)


def link_study(study_id: int, *, mrn: str, by: User, accept_mismatches: bool = False) -> Study:
    """File a study of the actor's clinic to the chart with ``mrn``, or move it there from another chart.

    A study whose name, sex or birth date differs from the chart's is linked only with ``accept_mismatches``
    (the person saw the comparison and checked). Moving is audited on both charts.

    :raises NotFound: the study was not sent by the actor's clinic.
    :raises ValidationFailed: unknown MRN, or differences not accepted.
    """
    preview = _preview(study_id, mrn=mrn, by=by)
    study, patient = preview.study, preview.patient
    if preview.mismatches and not accept_mismatches:
        differs = ", ".join(m.lower() for m in preview.mismatches)
        raise ValidationFailed(gettext("The scan's %(fields)s differ from the chart's.", fields=differs),
                               errors={"accept_mismatches": [gettext(
                                   "Check the %(fields)s and tick this box if the scan is this patient's.",
                                   fields=differs)]})
    previous = _refile(study, patient.id, by=by)
    detail: dict[str, Any] = {"differences_accepted": [m.lower() for m in preview.mismatches]}
    if previous is not None:
        detail["from_patient_id"] = previous
        audit.record("imaging.study.unlink", by=by, patient_id=previous, resource_type="ImagingStudy",
                     resource_id=study.id, detail={"to_patient_id": patient.id})
    audit.record("imaging.study.move" if previous is not None else "imaging.study.link", by=by,
                 patient_id=patient.id, resource_type="ImagingStudy", resource_id=study.id, detail=detail)
    return study


def unlink_study(study_id: int, *, by: User) -> Study:
    """Take a study off its chart; it goes back to the clinic's unmatched scans.

    :raises NotFound: the study was not sent by the actor's clinic.
    :raises ValidationFailed: the study is on no chart.
    """
    study = _reconcilable_study(study_id, by=by, action="imaging.study.unlink")
    if study.patient_id is None:
        raise ValidationFailed("The scan is on no patient's chart.")
    previous = _refile(study, None, by=by)
    audit.record("imaging.study.unlink", by=by, patient_id=previous, resource_type="ImagingStudy",
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
            raise ValidationFailed(N_("StudyDate must be YYYYMMDD or a range."),
                                   errors={"StudyDate": [N_("Bad date.")]})
        try:
            return date(int(part[:4]), int(part[4:6]), int(part[6:]))
        except ValueError:
            raise ValidationFailed(N_("StudyDate is not a date."), errors={"StudyDate": [N_("Bad date.")]}) from None

    if "-" in text:
        start, _, end = text.partition("-")
        return one(start), one(end)
    d = one(text)
    return d, d
