"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6), with the chart's access rules.

Every search is one statement per shape of filters and viewer role, with its audit event (see :func:`_search`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydicom
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Response, request
from flask_login import current_user, login_required

from app import db, read_path
from app.imaging import service
from app.imaging.dicomweb import query
from app.imaging.dicomweb.headers import shared_header
from app.imaging.dicomweb.shared import bp, dicom_json, element, person_name, require_json_accepted, retrieve_url
from app.imaging.models import Instance, Series, Study

# includefield=all at the study and series levels: the attributes of those levels (PS3.18 table 10.6.3-3 and
# -4, plus the Patient module), taken from the header of one instance of the study or series.
STUDY_LEVEL_GROUPS = {0x0010}
STUDY_LEVEL_TAGS = {0x00080020, 0x00080030, 0x00080050, 0x00080080, 0x00080090, 0x00081030, 0x00081032,
                    0x00081060, 0x0020000D, 0x00200010, 0x00101010, 0x00101020, 0x00101030}
SERIES_LEVEL_TAGS = {0x00080021, 0x00080031, 0x00080060, 0x00080070, 0x0008103E, 0x00081090, 0x00180015,
                     0x00181030, 0x00185100, 0x0020000E, 0x00200011, 0x00200060, 0x00200052, 0x00400244,
                     0x00400245, 0x00400254}


def _add_included(q: query.Query, items: list[dict[str, Any]], headers_of: list[Instance | None],
                  level: str) -> None:
    """Add the ``includefield`` attributes to each result from the header of its representative instance.

    Attributes the index already answers keep the indexed value; the header is read only when asked for.
    """
    everything, tags = q.everything, q.included
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


def _search(level: str, q: query.Query, build: Callable[[], sa.Select[Any]],
            resource_type: str) -> tuple[list[sa.Row[Any]], list[str]]:
    """Run a search at ``level`` (``build()`` gives its base query) with its audit event, as the one statement
    of this shape and viewer role, built the first time (building and hashing it costs more than running it).

    One row more than the limit is read to tell whether the results were cut; the answer's warnings say so.
    """
    f = q.filters
    params = f.params | {"limit": q.limit + 1, "offset": q.offset}

    def run() -> list[sa.Row[Any]]:
        search = read_path.audited_search(
            (level, tuple(f.shape)), current_user.role,
            lambda: build().where(service.visible_to_viewer(current_user.role),
                                  *(query.clause(*item) for item in f.shape))
            .limit(sa.bindparam("limit")).offset(sa.bindparam("offset")),
            resource_type=resource_type)
        return search.run(params, f"imaging.{level}.search", by=current_user)

    rows = read_path.as_viewer(current_user, run)
    warnings = list(q.warnings)
    if len(rows) > q.limit:
        rows = rows[:q.limit]
        warnings.append(query.MAX_LIMIT_WARNING if q.limit_capped else query.LIMIT_WARNING)
    return rows, warnings


def _parse(level: str) -> query.Query:
    """The request's query, once its Accept allows a DICOM JSON answer.

    :raises NotAcceptable: the client accepts neither DICOM JSON nor JSON.
    :raises InvalidQuery: see :func:`query.parse`.
    """
    require_json_accepted()
    return query.parse(level, request.args)


def _study_attributes(study: Study) -> dict[str, Any]:
    """The study's attributes; a series or instance search that names no study returns them too (PS3.18
    table 10.6.3-3 and its notes)."""
    return {
        "00080020": element("DA", study.study_date.strftime("%Y%m%d") if study.study_date else None),
        "00080030": element("TM", study.study_time),
        "00080050": element("SH", study.accession_number),
        "00080056": element("CS", "ONLINE"),
        "00080061": element("CS", *study.modality_list),
        "00080090": person_name(study.referring_physician_name),
        "00081030": element("LO", study.study_description),
        "00100010": person_name(study.patient_name),
        "00100020": element("LO", study.dicom_patient_id),
        "00100030": element("DA", study.patient_birth_date),
        "00100040": element("CS", study.patient_sex),
        "0020000D": element("UI", study.study_instance_uid),
        "00200010": element("SH", study.study_id),
    }


def _study_json(study: Study, counts: tuple[int, int]) -> dict[str, Any]:
    return _study_attributes(study) | {"00081190": element("UR", retrieve_url(study.study_instance_uid)),
                                       "00201206": element("IS", counts[0]), "00201208": element("IS", counts[1])}


def _study_query() -> sa.Select[Any]:
    # The counts come in the same statement (correlated subqueries, evaluated for the returned page only).
    n_series = sa.select(sa.func.count()).where(Series.study_id == Study.id).correlate(Study).scalar_subquery()
    n_instances = (sa.select(sa.func.count()).select_from(Instance).join(Series)
                   .where(Series.study_id == Study.id).correlate(Study).scalar_subquery())
    return sa.select(Study, n_series, n_instances).order_by(Study.study_date.desc().nulls_last(), Study.id.desc())


@bp.get("/studies")
@read_path.checks_session
@login_required
def search_studies() -> Response:
    """Studies matching the query (PS3.18 §10.6)."""
    q = _parse("study")
    rows, warnings = _search("study", q, _study_query, "ImagingStudy")
    studies = [row[0] for row in rows]
    items = [_study_json(study, (ns, ni)) for study, ns, ni in rows]
    if q.everything or q.included:
        firsts = _first_instances(Series.study_id, [s.id for s in studies])
        _add_included(q, items, [firsts.get(s.id) for s in studies], "study")
    db.session.commit()
    return dicom_json(items, warnings=warnings)


def _series_attributes(series: Series) -> dict[str, Any]:
    """The series' attributes; an instance search that names no series returns them too."""
    return {
        "00080056": element("CS", "ONLINE"),
        "00080060": element("CS", series.modality),
        "0008103E": element("LO", series.series_description),
        "0020000D": element("UI", series.study.study_instance_uid),
        "0020000E": element("UI", series.series_instance_uid),
        "00200011": element("IS", series.series_number),
    }


def _series_json(series: Series, count: int, *, with_study: bool) -> dict[str, Any]:
    own = _series_attributes(series) | {
        "00081190": element("UR", retrieve_url(series.study.study_instance_uid, series.series_instance_uid)),
        "00201209": element("IS", count)}
    return _study_attributes(series.study) | own if with_study else own


@bp.get("/series")
@bp.get("/studies/<study_uid>/series")
@read_path.checks_session
@login_required
def search_series(study_uid: str | None = None) -> Response:
    """Series matching the query, of all studies or of one."""
    q = _parse("series")
    if study_uid:
        q.filters.add("study_uid", "eq", study_uid)

    def statement() -> sa.Select[Any]:
        n_instances = (sa.select(sa.func.count()).where(Instance.series_id == Series.id).correlate(Series)
                       .scalar_subquery())
        return (sa.select(Series, n_instances).join(Study).options(so.contains_eager(Series.study))
                .order_by(Series.series_number, Series.id))

    rows, warnings = _search("series", q, statement, "ImagingSeries")
    series = [row[0] for row in rows]
    counts = {row[0].id: row[1] for row in rows}
    items = [_series_json(s, counts.get(s.id, 0), with_study=study_uid is None) for s in series]
    if q.everything or q.included:
        firsts = _first_instances(Instance.series_id, [s.id for s in series])
        _add_included(q, items, [firsts.get(s.id) for s in series], "series")
    db.session.commit()
    return dicom_json(items, warnings=warnings)


def _instance_json(inst: Instance, *, with_series: bool, with_study: bool) -> dict[str, Any]:
    series, study = inst.series, inst.series.study
    own = {
        "00080016": element("UI", inst.sop_class_uid),
        "00080018": element("UI", inst.sop_instance_uid),
        "00080056": element("CS", "ONLINE"),
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
        "00280100": element("US", inst.bits_allocated),
    }
    if with_series:
        own = _series_attributes(series) | own
    return _study_attributes(study) | own if with_study else own


@bp.get("/instances")
@bp.get("/studies/<study_uid>/instances")
@bp.get("/studies/<study_uid>/series/<series_uid>/instances")
@read_path.checks_session
@login_required
def search_instances(study_uid: str | None = None, series_uid: str | None = None) -> Response:
    """Instances matching the query, of all studies, of one study or of one series."""
    q = _parse("instance")
    if study_uid:
        q.filters.add("study_uid", "eq", study_uid)
    if series_uid:
        q.filters.add("series_uid", "eq", series_uid)

    def statement() -> sa.Select[Any]:
        return (sa.select(Instance).join(Series).join(Study)
                .options(so.contains_eager(Instance.series).contains_eager(Series.study))
                .order_by(Series.series_number, Instance.instance_number, Instance.id))

    rows, warnings = _search("instance", q, statement, "ImagingInstance")
    instances = [row[0] for row in rows]
    items = [_instance_json(i, with_series=series_uid is None, with_study=study_uid is None) for i in instances]
    if q.everything or q.included:
        _add_included(q, items, list(instances), "instance")
    db.session.commit()
    return dicom_json(items, warnings=warnings)
