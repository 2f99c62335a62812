"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6), with the chart's access rules.

Every search is one statement per shape of filters and viewer role, with its audit event (see :func:`_search`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pydicom
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Response, request
from flask_login import current_user, login_required

from app import db
from app.audit import service as audit
from app.errors import ValidationFailed
from app.imaging import service
from app.imaging.dicomweb.headers import shared_header
from app.imaging.dicomweb.shared import bp, dicom_json, element, person_name, retrieve_url
from app.imaging.models import Instance, Series, Study

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
        header = shared_header(inst)
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
        "00080020": element("DA", study.study_date.strftime("%Y%m%d") if study.study_date else None),
        "00080030": element("TM", study.study_time),
        "00080050": element("SH", study.accession_number),
        "00080061": element("CS", *study.modality_list),
        "00080090": person_name(study.referring_physician_name),
        "00081030": element("LO", study.study_description),
        "00081190": element("UR", retrieve_url(study.study_instance_uid)),
        "00100010": person_name(study.patient_name),
        "00100020": element("LO", study.dicom_patient_id),
        "00100030": element("DA", study.patient_birth_date),
        "00100040": element("CS", study.patient_sex),
        "0020000D": element("UI", study.study_instance_uid),
        "00200010": element("SH", study.study_id),
        "00201206": element("IS", counts[0]),
        "00201208": element("IS", counts[1]),
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
    return dicom_json(items)


def _series_json(series: Series, count: int) -> dict[str, Any]:
    study_uid = series.study.study_instance_uid
    return {
        "00080060": element("CS", series.modality),
        "0008103E": element("LO", series.series_description),
        "00081190": element("UR", retrieve_url(study_uid, series.series_instance_uid)),
        "0020000D": element("UI", study_uid),
        "0020000E": element("UI", series.series_instance_uid),
        "00200011": element("IS", series.series_number),
        "00201209": element("IS", count),
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
    return dicom_json(items)


def _instance_json(inst: Instance) -> dict[str, Any]:
    series, study = inst.series, inst.series.study
    return {
        "00080016": element("UI", inst.sop_class_uid),
        "00080018": element("UI", inst.sop_instance_uid),
        "00080060": element("CS", series.modality),
        "00081190": element("UR", retrieve_url(study.study_instance_uid, series.series_instance_uid,
                                               inst.sop_instance_uid)),
        "00083002": element("UI", inst.transfer_syntax_uid),
        "0020000D": element("UI", study.study_instance_uid),
        "0020000E": element("UI", series.series_instance_uid),
        "00200013": element("IS", inst.instance_number),
        "00280008": element("IS", inst.number_of_frames),
        "00280010": element("US", inst.rows),
        "00280011": element("US", inst.columns),
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
    return dicom_json(items)
