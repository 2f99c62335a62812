"""Query/Retrieve identifiers (Patient Root and Study Root; patient, study, series and image levels) turned
into database queries, limited to what a peer's clinic may see. C-FIND answers with the matches; C-MOVE and
C-GET send the instances under them.

Matching follows PS3.4 C.2.2.2: single values match exactly, ``*`` and ``?`` are wildcards (PatientName
case-insensitively), dates match as ranges (``A-B``, ``-B``, ``A-``), UIDs as backslash-separated lists, and
an empty key only asks for the attribute to be returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset

from app import db
from app.audit import service as audit
from app.errors import ValidationFailed
from app.imaging import service
from app.imaging.dimse.status import IDENTIFIER_MISMATCH, OUT_OF_RESOURCES
from app.imaging.models import Instance, Series, Study

MAX_MATCHES = 1000  # a query matching more is refused (narrow it); retrievals are bounded the same way
MAX_LIST = 1000  # UIDs in one list-of-UIDs key
LEVELS = {"patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"), "study": ("STUDY", "SERIES", "IMAGE")}


class QueryError(Exception):
    """An identifier the listener cannot run; ``status`` and ``comment`` go back to the peer."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


@dataclass
class Query:
    level: str
    clauses: list[sa.ColumnElement[bool]] = field(default_factory=list)


def _text(value: Any) -> str:
    return str(value if value is not None else "").strip()


def like(column: Any, value: str, *, lower: bool = False) -> sa.ColumnElement[bool]:
    """DICOM matching of one value: exact, or a LIKE pattern when it has wildcards (``*``, ``?``)."""
    if lower:
        value = value.lower()
    if "*" in value or "?" in value:
        pattern = value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        return column.like(pattern.replace("*", "%").replace("?", "_"), escape="\\")
    return column == value


def _values(value: Any) -> list[str]:
    """The values of a key: pydicom gives one string or a list (multi-valued)."""
    items = value.split("\\") if isinstance(value, str) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _uids(keyword: str, value: Any) -> list[str]:
    items = _values(value)
    if len(items) > MAX_LIST:
        raise QueryError(OUT_OF_RESOURCES, f"at most {MAX_LIST} UIDs in {keyword}")
    if not all(len(v) <= 64 and all(c.isdigit() or c == "." for c in v) for v in items):
        raise QueryError(IDENTIFIER_MISMATCH, f"{keyword} is not a list of UIDs")
    return items


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - pydicom raises many types for a badly encoded value
        raise QueryError(IDENTIFIER_MISMATCH, f"{keyword} cannot be read") from None


def parse(ds: Dataset, *, model: str) -> Query:
    """The query of an identifier. :raises QueryError: malformed, or asking for what the model lacks."""
    level = _text(_get(ds, "QueryRetrieveLevel")).upper()
    if not level:
        raise QueryError(IDENTIFIER_MISMATCH, "QueryRetrieveLevel is missing")
    if level not in LEVELS[model]:
        raise QueryError(IDENTIFIER_MISMATCH, f"QueryRetrieveLevel {level[:16]} is not supported here")
    q = Query(level)
    if v := _text(_get(ds, "PatientID")):
        q.clauses.append(like(Study.dicom_patient_id, v))
    if v := _text(_get(ds, "PatientName")):
        q.clauses.append(like(Study.patient_name_search, v, lower=True))
    if v := _text(_get(ds, "StudyDate")):
        try:
            start, end = service.parse_date_range(v)
        except ValidationFailed:
            raise QueryError(IDENTIFIER_MISMATCH, "StudyDate must be YYYYMMDD or a range of them") from None
        if start:
            q.clauses.append(Study.study_date >= start)
        if end:
            q.clauses.append(Study.study_date <= end)
    if v := _text(_get(ds, "AccessionNumber")):
        q.clauses.append(like(Study.accession_number, v))
    if v := _text(_get(ds, "StudyID")):
        q.clauses.append(like(Study.study_id, v))
    if (v := _get(ds, "StudyInstanceUID")) and (uids := _uids("StudyInstanceUID", v)):
        q.clauses.append(Study.study_instance_uid.in_(uids))
    if (v := _get(ds, "ModalitiesInStudy")) and (mods := [m.upper()[:16] for m in _values(v)][:MAX_LIST]):
        q.clauses.append(sa.exists().where(Series.study_id == Study.id, Series.modality.in_(mods)))
    if level in ("SERIES", "IMAGE"):
        if (v := _get(ds, "SeriesInstanceUID")) and (uids := _uids("SeriesInstanceUID", v)):
            q.clauses.append(Series.series_instance_uid.in_(uids))
        if v := _text(_get(ds, "Modality")):
            q.clauses.append(like(Series.modality, v))
    if level == "IMAGE":
        if (v := _get(ds, "SOPInstanceUID")) and (uids := _uids("SOPInstanceUID", v)):
            q.clauses.append(Instance.sop_instance_uid.in_(uids))
        if (v := _get(ds, "SOPClassUID")) and (uids := _uids("SOPClassUID", v)):
            q.clauses.append(Instance.sop_class_uid.in_(uids))
    return q


def _base(level: str) -> sa.Select[Any]:
    if level == "IMAGE":
        return sa.select(Instance, Series, Study).join(Instance.series).join(Series.study)
    if level == "SERIES":
        return sa.select(Series, Study).join(Series.study)
    return sa.select(Study)


def matches(q: Query, *, facility_id: int) -> list[sa.Row[Any]]:
    """The rows at the query's level (``PATIENT`` rows are studies, grouped later), visible to the clinic.

    :raises QueryError: more than :data:`MAX_MATCHES`.
    """
    query = (_base(q.level).where(service.visible_to_facility(facility_id), *q.clauses)
             .order_by(Study.id).limit(MAX_MATCHES + 1))
    if q.level == "SERIES":
        query = query.order_by(Series.id)
    if q.level == "IMAGE":
        query = query.order_by(Series.id, Instance.instance_number, Instance.id)
    rows = list(db.session.execute(query).unique())
    if len(rows) > MAX_MATCHES:
        raise QueryError(OUT_OF_RESOURCES, f"more than {MAX_MATCHES} matches; narrow the query")
    return rows


def instances(q: Query, *, facility_id: int) -> list[Instance]:
    """The instances under the matches of a retrieval (C-MOVE, C-GET).

    :raises QueryError: more than :data:`MAX_MATCHES` instances.
    """
    query = (sa.select(Instance).join(Instance.series).join(Series.study)
             .where(service.visible_to_facility(facility_id), *q.clauses)
             .order_by(Study.id, Series.id, Instance.instance_number, Instance.id).limit(MAX_MATCHES + 1))
    found = list(db.session.scalars(query))
    if len(found) > MAX_MATCHES:
        raise QueryError(OUT_OF_RESOURCES, f"more than {MAX_MATCHES} instances; retrieve fewer at once")
    return found


def audit_read(action: str, *, calling: str, studies: list[Study]) -> None:
    """One audit event per patient whose studies a peer found or retrieved (by patient, so the patient's own
    access log shows it), then commit."""
    by_patient: dict[int | None, list[int]] = {}
    for study in studies:
        by_patient.setdefault(study.patient_id, []).append(study.id)
    for patient_id, ids in by_patient.items():
        audit.record(action, by=None, actor_name=f"DICOM AE {calling}", patient_id=patient_id,
                     resource_type="ImagingStudy", resource_id=ids[0], detail={"studies": ids})
    db.session.commit()
