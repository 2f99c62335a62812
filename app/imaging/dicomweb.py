"""DICOMweb under ``/dicomweb``: STOW-RS, QIDO-RS and WADO-RS (incl. metadata, frames, rendered).

Signed-in sessions authenticate; the same access rules as the chart apply (see :func:`service.visible_clause`).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import pydicom
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, Response, current_app, request, stream_with_context, url_for
from flask_login import current_user, login_required

from app import db
from app.audit import service as audit
from app.errors import NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from app.extensions import csrf
from app.imaging import dicomfile, render, service
from app.imaging.ingest import index_and_commit, stage_one
from app.imaging.models import Instance, Series, Study
from app.imaging.multipart import MalformedMultipart, iter_parts

logger = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")
csrf.exempt(bp)  # multipart/related cannot be sent cross-site without a CORS preflight, which we control
DICOM_JSON = "application/dicom+json"


@bp.record_once
def _open_store(state: Any) -> None:
    """Open the S3 store while the process starts (SDK import, bucket check or creation) rather than in the first
    upload. If S3 cannot be reached yet, the app still starts, and the first request that needs it tries again."""
    if state.app.config.get("OBJECT_STORE") != "s3":
        return
    with state.app.app_context():
        try:
            service.object_store()
        except Exception:  # noqa: BLE001 - logged; the store is opened again on first use
            logger.warning("the object store is not reachable at start; it is tried again on first use",
                           exc_info=True)

FAILURE_PROCESSING = 0x0110
FAILURE_DUPLICATE = 0x0111
FAILURE_OUT_OF_RESOURCES = 0xA700  # the sender should retry
FAILURE_CANNOT_UNDERSTAND = 0xC000


def _el(vr: str, *values: Any) -> dict[str, Any]:
    vals = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": vals} if vals else {"vr": vr}


def _pn(value: str | None) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


def _json(body: Any, status: int = 200) -> Response:
    import json

    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype=DICOM_JSON)


# ---------------------------------------------------------------- CORS


@bp.after_request
def _cors(resp: Response) -> Response:
    origins = [o.strip() for o in current_app.config["DICOMWEB_CORS_ORIGINS"].split(",") if o.strip()]
    origin = request.headers.get("Origin")
    if origin and (origin in origins or "*" in origins):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Accept, Content-Type, Authorization, X-CSRFToken"
        resp.headers["Access-Control-Expose-Headers"] = "Content-Type, Content-Length"
        resp.headers["Vary"] = "Origin"
    return resp


@bp.route("/<path:_any>", methods=["OPTIONS"])
@bp.route("/studies", methods=["OPTIONS"])
def _preflight(_any: str = "") -> Response:
    return Response(status=204)


# ---------------------------------------------------------------- STOW-RS


@bp.post("/studies")
@bp.post("/studies/<study_uid>")
@login_required
def stow(study_uid: str | None = None) -> Response:
    """Store instances sent as multipart/related; type="application/dicom"."""
    ctype = request.headers.get("Content-Type", "")
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not ctype.lower().startswith("multipart/related") or not m:
        raise UnsupportedMediaType("Send multipart/related; type=\"application/dicom\".")
    part_type = re.search(r'type="?([^";]+)"?', ctype)
    if part_type and part_type.group(1).lower() != "application/dicom":
        raise UnsupportedMediaType("Only application/dicom parts are accepted.")
    limit = current_app.config["IMAGING_MAX_UPLOAD_BYTES"]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge("The request is larger than the configured limit.")
    if not service.can_ingest(current_user):
        service.stage(None, filename="", by=current_user, source="stow")  # type: ignore[arg-type]  # audits, raises
    max_file = current_app.config["IMAGING_MAX_FILE_BYTES"]
    n = 0
    outcomes: list[service.IngestResult | dict[str, Any]] = []  # per part: a result, or a failure item
    results: list[service.IngestResult] = []
    pending: dict[str, service.IngestResult] = {}
    try:
        body = _LimitedStream(request.stream, limit)  # a chunked body has no Content-Length to check up front
        for headers, fh in iter_parts(body, m.group(1).encode(), max_part=max_file):
            n += 1
            if headers.get("x-too-large"):
                outcomes.append({"00081197": _el("US", FAILURE_PROCESSING),
                                 "00000902": _el("LO", "file is larger than the allowed size")})
                continue
            ptype = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
            if ptype != "application/dicom":
                outcomes.append({"00081197": _el("US", FAILURE_CANNOT_UNDERSTAND),
                                 "00000902": _el("LO", "part is not application/dicom")})
                continue
            result = stage_one(fh, filename=f"part {n}", by=current_user, source="stow", pending=pending,
                               background=True)
            outcomes.append(result)
            results.append(result)
    except MalformedMultipart as exc:
        _discard(results)
        raise ValidationFailed(f"The multipart body is malformed: {exc}.") from None
    except BaseException:
        _discard(results)
        raise
    index_and_commit(results, by=current_user, facility_id=current_user.facility_id)
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, dict):
            failed.append(outcome)
            continue
        item = {"00081150": _el("UI", outcome.sop_class_uid), "00081155": _el("UI", outcome.sop_instance_uid)}
        if outcome.ok:
            item["00081190"] = _el("UR", _instance_url(outcome.study_instance_uid or "", outcome.sop_instance_uid))
            if outcome.status == "duplicate":
                item["00081196"] = _el("US", 0xB007)
            referenced.append(item)
        else:
            code = FAILURE_DUPLICATE if outcome.status == "conflict" else \
                FAILURE_OUT_OF_RESOURCES if outcome.transient else FAILURE_CANNOT_UNDERSTAND
            item["00081197"] = _el("US", code)
            item["00000902"] = _el("LO", outcome.reason)
            failed.append(item)
    body_out: dict[str, Any] = {}
    if referenced:
        body_out["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        body_out["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    return _json(body_out, status)


class _LimitedStream:
    """A request body that raises 413 once more than ``limit`` bytes have been read."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream, self._left = stream, limit

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._left -= len(data)
        if self._left < 0:
            raise PayloadTooLarge("The request is larger than the configured limit.")
        return data


def _discard(results: list[service.IngestResult]) -> None:
    """The request failed part-way: nothing of it is kept, rows or objects."""
    db.rollback()
    service.discard_objects(results)


def _instance_url(study_uid: str, sop_uid: str | None) -> str:
    return url_for("dicomweb.study_retrieve", study_uid=study_uid, _external=True) + f"/instances/{sop_uid}"


# ---------------------------------------------------------------- QIDO-RS

STUDY_FIELDS = {"00080020", "00080030", "00080050", "00080061", "00080090", "00100010", "00100020",
                "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208", "00081030"}


# includefield=all at the study and series levels: the attributes of those levels (PS3.18 table 10.6.3-3 and
# -4, plus the Patient module), taken from the header of one instance of the study or series.
STUDY_LEVEL_GROUPS = {0x0010}
STUDY_LEVEL_TAGS = {0x00080020, 0x00080030, 0x00080050, 0x00080080, 0x00080090, 0x00081030, 0x00081032,
                    0x00081060, 0x0020000D, 0x00200010, 0x00101010, 0x00101020, 0x00101030}
SERIES_LEVEL_TAGS = {0x00080021, 0x00080031, 0x00080060, 0x00080070, 0x0008103E, 0x00081090, 0x00180015,
                     0x00181030, 0x00185100, 0x0020000E, 0x00200011, 0x00200060, 0x00200052, 0x00400244,
                     0x00400245, 0x00400254}


def _includefield() -> tuple[bool, set[int]]:
    """``includefield`` values: ``all`` and/or attributes by keyword or 8-digit hex tag (repeated or comma-listed).

    :raises ValidationFailed: an unknown attribute.
    """
    from pydicom.datadict import tag_for_keyword

    everything, tags = False, set()
    for value in request.args.getlist("includefield"):
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            if item.lower() == "all":
                everything = True
            elif re.fullmatch(r"[0-9A-Fa-f]{8}", item):
                tags.add(int(item, 16))
            elif (tag := tag_for_keyword(item)) is not None:
                tags.add(tag)
            else:
                raise ValidationFailed(f"includefield names an unknown attribute: {item[:64]}.",
                                       errors={"includefield": ["Use a DICOM keyword, a tag like 00180050, or all."]})
    return everything, tags


def _add_included(items: list[dict[str, Any]], headers_of: list[Instance | None], level: str) -> None:
    """Add the ``includefield`` attributes to each result from the header of its representative instance.

    Attributes the index already answers keep the indexed value; the header is read only when asked for.
    """
    everything, tags = _includefield()
    if not everything and not tags:
        return
    for item, inst in zip(items, headers_of, strict=True):
        if inst is None:
            continue
        header = _shared_header(inst)
        picked = pydicom.Dataset()
        for elem in header:
            tag = int(elem.tag)
            if tag in tags:
                wanted = True
            elif not everything or elem.tag.group in (0x0002, 0x7FE0) or elem.tag.is_private:
                wanted = False
            elif level == "study":
                wanted = elem.tag.group in STUDY_LEVEL_GROUPS or tag in STUDY_LEVEL_TAGS
            elif level == "series":
                wanted = tag in SERIES_LEVEL_TAGS
            else:
                wanted = True
            if wanted:
                picked.add(elem)
        extra = picked.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda _el: "")
        for key, value in extra.items():
            if "BulkDataURI" not in value:
                item.setdefault(key, value)


def _first_instances(column: Any, ids: list[int]) -> dict[int, Instance]:
    """One instance per study or series (``column`` is ``Series.study_id`` or ``Instance.series_id``)."""
    if not ids:
        return {}
    firsts = db.session.execute(sa.select(column, sa.func.min(Instance.id)).select_from(Instance).join(Series)
                                .where(column.in_(ids)).group_by(column)).all()
    by_id = {i.id: i for i in db.session.scalars(sa.select(Instance).where(Instance.id.in_([f for _, f in firsts])))}
    return {owner: by_id[first] for owner, first in firsts}


def _paging(params: dict[str, Any]) -> None:
    try:
        params["limit"] = min(max(int(request.args.get("limit", 100)), 1), 1000)
        params["offset"] = max(int(request.args.get("offset", 0)), 0)
    except ValueError:
        raise ValidationFailed("limit and offset must be integers.") from None


def _arg(*names: str) -> str | None:
    for name in names:
        value = request.args.get(name)
        if value:
            return value
    return None


class _Filters:
    """A search's filters as a *shape* (which filters, which operators) plus the values to bind.

    The statement of a shape is built once (see :func:`_search`); values only ever travel as parameters.
    """

    def __init__(self) -> None:
        self.shape: list[tuple[str, str]] = []
        self.params: dict[str, Any] = {}

    def add(self, name: str, op: str, value: Any = None) -> None:
        self.shape.append((name, op))
        self.params[name] = value

    def text(self, name: str, value: str, *, lower: bool = False) -> None:
        """Exact match, or a LIKE pattern when the value has DICOM wildcards (``*``, ``?``)."""
        if lower:
            value = value.lower()
        if "*" in value or "?" in value:
            pattern = value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            self.add(name, "like", pattern.replace("*", "%").replace("?", "_"))
        else:
            self.add(name, "eq", value)

    def uids(self, name: str, value: str) -> None:
        self.add(name, "in", [u.strip() for u in value.replace("\\", ",").split(",") if u.strip()])


FILTER_COLUMNS: dict[str, Any] = {
    "patient_id": Study.dicom_patient_id, "patient_name": Study.patient_name_search,
    "study_date_from": Study.study_date, "study_date_to": Study.study_date, "accession": Study.accession_number,
    "study_uids": Study.study_instance_uid, "study_description": Study.study_description,
    "study_uid": Study.study_instance_uid, "series_uid": Series.series_instance_uid, "modality": Series.modality,
    "series_uids": Series.series_instance_uid, "series_number": Series.series_number,
    "sop_uids": Instance.sop_instance_uid,
}


def _clause(name: str, op: str) -> sa.ColumnElement[bool]:
    param = sa.bindparam(name, expanding=op in ("in", "modalities"))
    if op == "modalities":
        return sa.exists().where(Series.study_id == Study.id, Series.modality.in_(param))
    column = FILTER_COLUMNS[name]
    clauses = {"eq": lambda: column == param, "like": lambda: column.like(param, escape="\\"),
               "in": lambda: column.in_(param), "from": lambda: column >= param, "to": lambda: column <= param,
               "never": sa.false}
    return clauses[op]()


def _study_filters(f: _Filters) -> None:
    if v := _arg("PatientID", "00100020"):
        f.text("patient_id", v)
    if v := _arg("PatientName", "00100010"):
        if "*" not in v and "?" not in v:
            v += "*"  # person names match by prefix, like most archives
        f.text("patient_name", v, lower=True)
    if v := _arg("StudyDate", "00080020"):
        start, end = service.parse_date_range(v)
        if start:
            f.add("study_date_from", "from", start)
        if end:
            f.add("study_date_to", "to", end)
    if v := _arg("AccessionNumber", "00080050"):
        f.text("accession", v)
    if v := _arg("StudyInstanceUID", "0020000D"):
        f.uids("study_uids", v)
    if v := _arg("ModalitiesInStudy", "00080061"):
        f.add("modalities", "modalities", [m.strip() for m in v.replace("\\", ",").split(",") if m.strip()])
    if v := _arg("StudyDescription", "00081030"):
        f.text("study_description", v)


_SEARCHES: dict[tuple[str, Any, tuple[tuple[str, str], ...]], audit.AuditedSearch] = {}
MAX_SEARCH_SHAPES = 256
"""Clients use a handful of shapes; the bound keeps odd combinations of filters from piling up."""


def _search(level: str, f: _Filters, build: Callable[[], sa.Select[Any]], resource_type: str) -> list[sa.Row[Any]]:
    """Run a search at ``level`` (``build()`` gives its base query) with its audit event, as the one statement
    of this shape and viewer role, built the first time (building and hashing it costs more than running it)."""
    _paging(f.params)
    key = (level, current_user.role, tuple(f.shape))
    search = _SEARCHES.get(key)
    if search is None:
        query = (build().where(service.visible_to_viewer(current_user.role), *(_clause(*item) for item in f.shape))
                 .limit(sa.bindparam("limit")).offset(sa.bindparam("offset")))
        if len(_SEARCHES) >= MAX_SEARCH_SHAPES:
            _SEARCHES.clear()
        search = _SEARCHES[key] = audit.AuditedSearch(query, resource_type=resource_type)
    return search.run(f.params | service.viewer_params(current_user), f"imaging.{level}.search", by=current_user)


def _study_json(study: Study, counts: tuple[int, int]) -> dict[str, Any]:
    return {
        "00080020": _el("DA", study.study_date.strftime("%Y%m%d") if study.study_date else None),
        "00080030": _el("TM", study.study_time),
        "00080050": _el("SH", study.accession_number),
        "00080061": _el("CS", *study.modality_list),
        "00080090": _pn(study.referring_physician_name),
        "00081030": _el("LO", study.study_description),
        "00081190": _el("UR", url_for("dicomweb.study_retrieve", study_uid=study.study_instance_uid,
                                      _external=True)),
        "00100010": _pn(study.patient_name),
        "00100020": _el("LO", study.dicom_patient_id),
        "00100030": _el("DA", study.patient_birth_date),
        "00100040": _el("CS", study.patient_sex),
        "0020000D": _el("UI", study.study_instance_uid),
        "00200010": _el("SH", study.study_id),
        "00201206": _el("IS", counts[0]),
        "00201208": _el("IS", counts[1]),
    }


def _study_query() -> sa.Select[Any]:
    # The counts come in the same statement (correlated subqueries, evaluated for the returned page only).
    n_series = sa.select(sa.func.count()).where(Series.study_id == Study.id).correlate(Study).scalar_subquery()
    n_instances = (sa.select(sa.func.count()).select_from(Instance).join(Series)
                   .where(Series.study_id == Study.id).correlate(Study).scalar_subquery())
    return sa.select(Study, n_series, n_instances).order_by(Study.study_date.desc().nulls_last(), Study.id.desc())


@bp.get("/studies")
@db.autocommit_reads
@login_required
def search_studies() -> Response:
    f = _Filters()
    _study_filters(f)
    rows = _search("study", f, _study_query, "ImagingStudy")
    studies = [row[0] for row in rows]
    items = [_study_json(study, (ns, ni)) for study, ns, ni in rows]
    if "includefield" in request.args:
        firsts = _first_instances(Series.study_id, [s.id for s in studies])
        _add_included(items, [firsts.get(s.id) for s in studies], "study")
    db.session.commit()
    return _json(items)


def _series_json(series: Series, count: int) -> dict[str, Any]:
    study_uid = series.study.study_instance_uid
    return {
        "00080060": _el("CS", series.modality),
        "0008103E": _el("LO", series.series_description),
        "00081190": _el("UR", url_for("dicomweb.series_retrieve", study_uid=study_uid,
                                      series_uid=series.series_instance_uid, _external=True)),
        "0020000D": _el("UI", study_uid),
        "0020000E": _el("UI", series.series_instance_uid),
        "00200011": _el("IS", series.series_number),
        "00201209": _el("IS", count),
    }


@bp.get("/series")
@bp.get("/studies/<study_uid>/series")
@db.autocommit_reads
@login_required
def search_series(study_uid: str | None = None) -> Response:
    f = _Filters()
    _study_filters(f)
    if study_uid:
        f.add("study_uid", "eq", study_uid)
    if v := _arg("Modality", "00080060"):
        f.add("modality", "eq", v)
    if v := _arg("SeriesInstanceUID", "0020000E"):
        f.uids("series_uids", v)
    if v := _arg("SeriesNumber", "00200011"):
        f.add("series_number", "eq", int(v)) if v.isdigit() else f.add("series_number", "never")

    def query() -> sa.Select[Any]:
        n_instances = (sa.select(sa.func.count()).where(Instance.series_id == Series.id).correlate(Series)
                       .scalar_subquery())
        return (sa.select(Series, n_instances).join(Study).options(so.contains_eager(Series.study))
                .order_by(Series.series_number, Series.id))

    rows = _search("series", f, query, "ImagingSeries")
    series = [row[0] for row in rows]
    counts = {row[0].id: row[1] for row in rows}
    items = [_series_json(s, counts.get(s.id, 0)) for s in series]
    if "includefield" in request.args:
        firsts = _first_instances(Instance.series_id, [s.id for s in series])
        _add_included(items, [firsts.get(s.id) for s in series], "series")
    db.session.commit()
    return _json(items)


def _instance_json(inst: Instance) -> dict[str, Any]:
    series, study = inst.series, inst.series.study
    return {
        "00080016": _el("UI", inst.sop_class_uid),
        "00080018": _el("UI", inst.sop_instance_uid),
        "00080060": _el("CS", series.modality),
        "00081190": _el("UR", _instance_url(study.study_instance_uid, inst.sop_instance_uid)),
        "00083002": _el("UI", inst.transfer_syntax_uid),
        "0020000D": _el("UI", study.study_instance_uid),
        "0020000E": _el("UI", series.series_instance_uid),
        "00200013": _el("IS", inst.instance_number),
        "00280008": _el("IS", inst.number_of_frames),
        "00280010": _el("US", inst.rows),
        "00280011": _el("US", inst.columns),
    }


@bp.get("/instances")
@bp.get("/studies/<study_uid>/instances")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances")
@db.autocommit_reads
@login_required
def search_instances(study_uid: str | None = None, series_uid: str | None = None) -> Response:
    f = _Filters()
    _study_filters(f)
    if study_uid:
        f.add("study_uid", "eq", study_uid)
    if series_uid:
        f.add("series_uid", "eq", series_uid)
    if v := _arg("SOPInstanceUID", "00080018"):
        f.uids("sop_uids", v)
    if v := _arg("Modality", "00080060"):
        f.add("modality", "eq", v)

    def query() -> sa.Select[Any]:
        return (sa.select(Instance).join(Series).join(Study)
                .options(so.contains_eager(Instance.series).contains_eager(Series.study))
                .order_by(Series.series_number, Instance.instance_number, Instance.id))

    rows = _search("instance", f, query, "ImagingInstance")
    instances = [row[0] for row in rows]
    items = [_instance_json(i) for i in instances]
    if "includefield" in request.args:
        _add_included(items, list(instances), "instance")
    db.session.commit()
    return _json(items)


# ---------------------------------------------------------------- WADO-RS


def _instances_of(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[Instance]:
    if sop_uid is not None:
        return [service.get_instance(study_uid, series_uid, sop_uid, by=current_user)]
    if series_uid is not None:
        series = service.get_series(study_uid, series_uid, by=current_user)
        return list(series.instances)
    study = service.get_study(study_uid, by=current_user)
    return [i for s in study.series for i in s.instances]


def _check_accept_dicom() -> None:
    accept = request.headers.get("Accept", "*/*")
    if "transfer-syntax" in accept:
        wanted = re.findall(r'transfer-syntax="?([0-9.*]+)"?', accept)
        if wanted and "*" not in wanted and not all(w for w in wanted):
            raise NotFound("Requested transfer syntax is not available.")


def _multipart(parts: Iterator[tuple[str, Iterator[bytes]]], part_type: str) -> Response:
    """A multipart/related response streamed from storage (whole instances)."""
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for ctype, chunks in parts:
            yield f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode()
            yield from chunks
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return Response(stream_with_context(body()), mimetype=None,
                    content_type=f'multipart/related; type="{part_type}"; boundary={boundary}')


def _multipart_in_memory(ctype: str, parts: list[bytes]) -> Response:
    """A multipart/related response of parts already read (frames): sent with its length, not chunked, and
    without holding the request context (and its database connection) while it goes out."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode()
    chunks = [piece for part in parts for piece in (head, part, b"\r\n")] + [f"--{boundary}--\r\n".encode()]
    resp = Response(chunks, mimetype=None,
                    content_type=f'multipart/related; type="{ctype.split(";")[0]}"; boundary={boundary}')
    resp.content_length = sum(len(c) for c in chunks)
    return resp


def _retrieve(instances: list[Instance]) -> Response:
    _check_accept_dicom()
    if not instances:
        raise NotFound("No instances.")
    store = service.object_store()
    keys = [(i.object_key, i.transfer_syntax_uid) for i in instances]
    db.session.commit()
    parts = ((f"application/dicom; transfer-syntax={ts}", store.get(key)) for key, ts in keys)
    return _multipart(parts, "application/dicom")


@bp.get("/studies/<study_uid>")
@db.autocommit_reads
@login_required
def study_retrieve(study_uid: str) -> Response:
    return _retrieve(_instances_of(study_uid))


@bp.get("/studies/<study_uid>/series/<series_uid>")
@db.autocommit_reads
@login_required
def series_retrieve(study_uid: str, series_uid: str) -> Response:
    return _retrieve(_instances_of(study_uid, series_uid))


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>")
@bp.get("/studies/<study_uid>/instances/<sop_uid>")
@db.autocommit_reads
@login_required
def instance_retrieve(study_uid: str, sop_uid: str, series_uid: str | None = None) -> Response:
    return _retrieve(_instances_of(study_uid, series_uid, sop_uid))


def _header_of(inst: Instance) -> pydicom.Dataset:
    store = service.object_store()
    if inst.pixel_data_offset:
        import io

        data = store.read(inst.object_key, length=inst.pixel_data_offset)
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return _full(inst)


class _Lru:
    """A small thread-safe LRU bounded by total byte cost; keys include the object's sha256, so a
    re-stored object with different content never hits a stale entry."""

    def __init__(self, max_cost: int) -> None:
        self.max_cost, self.cost = max_cost, 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any, cost: int) -> None:
        if cost > self.max_cost:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.cost -= old[1]
            self._items[key] = (value, cost)
            self.cost += cost
            while self.cost > self.max_cost:
                _, (_, c) = self._items.popitem(last=False)
                self.cost -= c

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.cost = 0


# Parsed headers (read-only users only) and rendered images, per process.
HEADER_CACHE = _Lru(2048)  # cost = 1 per header
RENDERED_CACHE = _Lru(64 * 1024 * 1024)  # cost = bytes


def _shared_header(inst: Instance) -> pydicom.Dataset:
    """Header for frame and render paths, parsed once per object; callers must not modify it."""
    key = (inst.object_key, inst.sha256)
    ds = HEADER_CACHE.get(key)
    if ds is None:
        ds = _header_of(inst)
        if inst.pixel_data_offset:
            HEADER_CACHE.put(key, ds, 1)
    return ds


def _full(inst: Instance) -> pydicom.Dataset:
    import io

    data = service.object_store().read(inst.object_key)
    return pydicom.dcmread(io.BytesIO(data), force=True)


def _metadata(instances: list[Instance]) -> Response:
    out = []
    for inst in instances:
        ds = _header_of(inst)
        ds.pop("PixelData", None)
        item = ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=lambda _el: "")
        for tag, el in list(item.items()):
            if "BulkDataURI" in el:
                del item[tag]
        series, study = inst.series, inst.series.study
        base = url_for("dicomweb.series_retrieve", study_uid=study.study_instance_uid,
                       series_uid=series.series_instance_uid, _external=True)
        item["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{base}/instances/{inst.sop_instance_uid}/frames/1"}
        item["00020010"] = _el("UI", inst.transfer_syntax_uid)
        item["00083002"] = _el("UI", inst.transfer_syntax_uid)
        out.append(item)
    db.session.commit()
    return _json(out)


@bp.get("/studies/<study_uid>/metadata")
@db.autocommit_reads
@login_required
def study_metadata(study_uid: str) -> Response:
    return _metadata(_instances_of(study_uid))


@bp.get("/studies/<study_uid>/series/<series_uid>/metadata")
@db.autocommit_reads
@login_required
def series_metadata(study_uid: str, series_uid: str) -> Response:
    return _metadata(_instances_of(study_uid, series_uid))


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/metadata")
@db.autocommit_reads
@login_required
def instance_metadata(study_uid: str, series_uid: str, sop_uid: str) -> Response:
    return _metadata(_instances_of(study_uid, series_uid, sop_uid))


def _frame_numbers(text: str, total: int) -> list[int]:
    try:
        numbers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValidationFailed("Frame numbers are integers separated by commas.") from None
    if not numbers or any(n < 1 or n > total for n in numbers):
        raise NotFound("No such frame.")
    return numbers


def _native_frames(inst: Instance, numbers: list[int], header: pydicom.Dataset) -> list[bytes]:
    bits = int(header.get("BitsAllocated", 16))
    spp = int(header.get("SamplesPerPixel", 1))
    length = (inst.rows or 0) * (inst.columns or 0) * spp * bits // 8
    store = service.object_store()
    assert inst.pixel_data_offset is not None
    return [store.read(inst.object_key, start=inst.pixel_data_offset + (n - 1) * length, length=length)
            for n in numbers]


def _encapsulated_frames(inst: Instance, numbers: list[int]) -> list[bytes]:
    from pydicom.encaps import generate_frames

    ds = _full(inst)
    frames = list(generate_frames(ds.PixelData, number_of_frames=inst.number_of_frames))
    return [frames[n - 1] for n in numbers]


COMPRESSED_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<frame_list>")
@db.autocommit_reads
@login_required
def frames(study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> Response:
    """Frames in the stored transfer syntax (``transfer-syntax=*``); uncompressed ones are range-read."""
    inst = service.get_instance(study_uid, series_uid, sop_uid, by=current_user, action="imaging.frames.read")
    numbers = _frame_numbers(frame_list, inst.number_of_frames)
    ts = inst.transfer_syntax_uid
    db.session.commit()
    if ts in dicomfile.UNCOMPRESSED and inst.pixel_data_offset:
        data = _native_frames(inst, numbers, _shared_header(inst))
        ctype = f"application/octet-stream; transfer-syntax={ts}"
    elif ts in COMPRESSED_MEDIA:
        data = _encapsulated_frames(inst, numbers)
        ctype = f"{COMPRESSED_MEDIA[ts]}; transfer-syntax={ts}"
    else:
        ds = _full(inst)
        data = [render.decoded_frame(ds, n - 1).tobytes() for n in numbers]
        ctype = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    return _multipart_in_memory(ctype, data)


# ---------------------------------------------------------------- rendered


def _window() -> tuple[float, float] | None:
    value = request.args.get("window")
    if not value:
        return None
    try:
        parts = [float(x) for x in value.split(",")[:2]]
        return parts[0], parts[1]
    except (ValueError, IndexError):
        raise ValidationFailed("window is center,width[,function].") from None


def _viewport() -> tuple[int, int] | None:
    value = request.args.get("viewport")
    if not value:
        return None
    try:
        w, h = (int(x) for x in value.split(",")[:2])
        return max(1, min(w, 4096)), max(1, min(h, 4096))
    except ValueError:
        raise ValidationFailed("viewport is width,height.") from None


def _rendered_type() -> str:
    wanted = (request.args.get("accept") or request.headers.get("Accept") or "image/jpeg").lower()
    if "image/png" in wanted and "image/jpeg" not in wanted.split(",")[0]:
        return "image/png"
    if "image/jpeg" in wanted or "*/*" in wanted or "image/*" in wanted:
        return "image/jpeg"
    if "image/png" in wanted:
        return "image/png"
    raise NotFound("Rendered images are image/jpeg or image/png.")


def render_instance(inst: Instance, frame: int, *, window: tuple[float, float] | None, media_type: str,
                    viewport: tuple[int, int] | None = None) -> bytes:
    """Render one frame (1-based), cached per (object content, frame, window, type, viewport)."""
    if frame < 1 or frame > inst.number_of_frames:
        raise NotFound("No such frame.")
    key = (inst.object_key, inst.sha256, frame, window, media_type, viewport)
    data = RENDERED_CACHE.get(key)
    if data is None:
        data = _render_uncached(inst, frame, window=window, media_type=media_type, viewport=viewport)
        RENDERED_CACHE.put(key, data, len(data))
    return data


def _render_uncached(inst: Instance, frame: int, *, window: tuple[float, float] | None, media_type: str,
                     viewport: tuple[int, int] | None) -> bytes:
    ts = inst.transfer_syntax_uid
    if ts in dicomfile.UNCOMPRESSED and inst.pixel_data_offset:
        header = _shared_header(inst)
        raw = _native_frames(inst, [frame], header)[0]
        arr = render.native_frame(header, raw, big_endian=ts == "1.2.840.10008.1.2.2")
        if arr is not None:
            return render.encode(render.to_image(arr, header, window=window), media_type, viewport=viewport)
    ds = _full(inst)
    try:
        arr = render.decoded_frame(ds, frame - 1)
    except Exception:  # noqa: BLE001 - a decoder may be missing for an exotic syntax
        raise NotFound("This image cannot be rendered here.") from None
    return render.encode(render.to_image(arr, ds, window=window), media_type, viewport=viewport)


@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/rendered")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/frames/<int:frame>/rendered")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances/<sop_uid>/thumbnail")
@db.autocommit_reads
@login_required
def rendered(study_uid: str, series_uid: str, sop_uid: str, frame: int = 1) -> Response:
    media_type = _rendered_type()
    viewport = _viewport() or ((128, 128) if request.path.endswith("/thumbnail") else None)
    inst = service.get_instance(study_uid, series_uid, sop_uid, by=current_user, action="imaging.rendered.read")
    db.session.commit()
    data = render_instance(inst, frame, window=_window(), media_type=media_type, viewport=viewport)
    resp = Response(data, mimetype=media_type)
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp
