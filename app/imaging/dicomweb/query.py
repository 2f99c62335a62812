"""QIDO-RS query parameters (PS3.18 §8.3.4): matching keys, ``includefield``, ``fuzzymatching``, paging.

A parameter this server cannot honour answers 400 rather than being ignored: a strict client must never take
an unfiltered answer for a filtered one. The filters become a *shape* (which filters, which operators) plus the
values to bind, so that the statement of a shape is built once (see :mod:`app.imaging.dicomweb.search`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask_babel import gettext
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from sqlalchemy.ext.compiler import compiles
from werkzeug.datastructures import MultiDict

from app.catalogue import N_
from app.errors import AppError, ValidationFailed
from app.imaging import service
from app.imaging.models import Instance, Series, Study

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
LEVELS = ("study", "series", "instance")
FUZZY_WARNING = "The fuzzymatching parameter is not supported. Only literal matching has been performed."
LIMIT_WARNING = "The number of results exceeded the limit. Additional results can be requested with offset."
MAX_LIMIT_WARNING = ("The number of results exceeded the maximum supported by the server. Additional results "
                     "can be requested.")
# One whole sentence per level, so that the level is named in the reader's language too.
LEVEL_MISMATCH = {
    "study": N_("%(keyword)s is not a matching key this server supports in study searches."),
    "series": N_("%(keyword)s is not a matching key this server supports in series searches."),
    "instance": N_("%(keyword)s is not a matching key this server supports in instance searches."),
}
TIME_RE = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")


class InvalidQuery(AppError):
    status, slug, title = 400, "invalid-query", N_("The query is not valid")


class Filters:
    """The filters of one search: their shape and the values to bind."""

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
            self.add(name, "like", _like(value))
        else:
            self.add(name, "eq", value)

    def uids(self, name: str, value: str) -> None:
        """UID list matching: several UIDs separated by ``\\`` or ``,``."""
        self.add(name, "in", [u.strip() for u in value.replace("\\", ",").split(",") if u.strip()])

    def person_name(self, name: str, value: str) -> None:
        """Person names match case-insensitively by prefix. A value without ``=`` matches any component group
        (Alphabetic, Ideographic or Phonetic); ``A=I=P`` matches each given group in its place."""
        groups = value.lower().split("=")
        if len(groups) > 3:
            raise InvalidQuery(N_("A person name has at most three component groups "
                                   "(Alphabetic=Ideographic=Phonetic)."))
        patterns = [_like(g if "*" in g or "?" in g else g + "*") if g else None for g in groups]
        if len(groups) == 1:
            self.add(name, "pn_any", patterns[0])
            return
        for i, pattern in enumerate(patterns):
            if pattern is not None:
                self.add(f"{name}_{i}", f"pn_{i}", pattern)


def _like(value: str) -> str:
    pattern = value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    return pattern.replace("*", "%").replace("?", "_")


COLUMNS: dict[str, Any] = {
    "patient_id": Study.dicom_patient_id, "study_date_from": Study.study_date, "study_date_to": Study.study_date,
    "study_time_from": Study.study_time, "study_time_to": Study.study_time, "accession": Study.accession_number,
    "study_uids": Study.study_instance_uid, "study_description": Study.study_description,
    "study_id": Study.study_id, "birth_date": Study.patient_birth_date, "sex": Study.patient_sex,
    "study_uid": Study.study_instance_uid, "series_uid": Series.series_instance_uid, "modality": Series.modality,
    "series_uids": Series.series_instance_uid, "series_number": Series.series_number,
    "series_description": Series.series_description, "sop_uids": Instance.sop_instance_uid,
    "sop_classes": Instance.sop_class_uid, "instance_number": Instance.instance_number,
}
PERSON_COLUMNS: dict[str, Callable[[], Any]] = {
    "patient_name": lambda: Study.patient_name_search,
    "referring": lambda: sa.func.lower(Study.referring_physician_name),
}


class _Position(sa.sql.functions.FunctionElement[int]):
    """1-based position of a substring, 0 when absent (``strpos`` on PostgreSQL, ``instr`` on SQLite)."""

    type = sa.Integer()
    inherit_cache = True


@compiles(_Position)
def _position_default(element: _Position, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(_Position, "postgresql")
def _position_pg(element: _Position, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def _groups(name: Any) -> list[tuple[Any, Any]]:
    """(text, condition that the group is present) of each component group of a stored ``A=I=P`` name."""
    first = _Position(name, "=")
    rest = sa.func.substr(name, first + 1)
    second = _Position(rest, "=")
    alphabetic = sa.case((first > 0, sa.func.substr(name, 1, first - 1)), else_=name)
    ideographic = sa.case((second > 0, sa.func.substr(rest, 1, second - 1)), else_=rest)
    return [(alphabetic, sa.true()), (ideographic, first > 0),
            (sa.func.substr(rest, second + 1), sa.and_(first > 0, second > 0))]


def clause(name: str, op: str) -> sa.ColumnElement[bool]:
    """The SQL condition of one filter of a shape; values are bind parameters named after the filter."""
    param = sa.bindparam(name, expanding=op in ("in", "modalities"))
    if op == "modalities":
        return sa.exists().where(Series.study_id == Study.id, Series.modality.in_(param))
    base = name.rsplit("_", 1)[0] if name[-1].isdigit() else name
    column = PERSON_COLUMNS[base]() if base in PERSON_COLUMNS else COLUMNS[name]
    if op.startswith("pn_"):
        groups = _groups(column)
        if op == "pn_any":
            return sa.or_(*(sa.and_(present, text.like(param, escape="\\")) for text, present in groups))
        text, present = groups[int(op[3:])]
        return sa.and_(present, text.like(param, escape="\\"))
    clauses = {"eq": lambda: column == param, "like": lambda: column.like(param, escape="\\"),
               "in": lambda: column.in_(param), "from": lambda: column >= param, "to": lambda: column <= param}
    return clauses[op]()


# ---------------------------------------------------------------- matching keys


def _date(f: Filters, value: str) -> None:
    hint = N_("Use YYYYMMDD or a range YYYYMMDD-YYYYMMDD.")  # marked apart: extraction skips it inside the call
    try:
        start, end = service.parse_date_range(value)
    except ValidationFailed as exc:
        raise InvalidQuery(exc.detail, errors={"StudyDate": [hint]}) from None
    if start:
        f.add("study_date_from", "from", start)
    if end:
        f.add("study_date_to", "to", end)


def _time(f: Filters, value: str) -> None:
    """``HH[MM[SS[.F]]]`` or a range of them; a bound covers its whole precision (``1100`` is up to 11:00:59)."""
    start, dash, end = value.partition("-")
    for part in (start, end):
        if part and not TIME_RE.fullmatch(part):
            raise InvalidQuery(N_("StudyTime must be HHMMSS (hours, minutes and seconds are optional from the right) "
                               "or a range of them."), errors={"StudyTime": [N_("Use HHMMSS or HHMM-HHMM.")]})
    if not dash:
        end = start
    if start:
        f.add("study_time_from", "from", start)
    if end:
        f.add("study_time_to", "to", end + "~")  # "~" sorts after digits and ".": the bound's whole minute/second


def _integer(name: str, keyword: str) -> Callable[[Filters, str], None]:
    def match(f: Filters, value: str) -> None:
        if not value.strip().lstrip("+-").isdigit():
            raise InvalidQuery(gettext("%(keyword)s is an integer.", keyword=keyword),
                               errors={keyword: [N_("Give a whole number.")]})
        f.add(name, "eq", int(value))

    return match


def _modalities(f: Filters, value: str) -> None:
    f.add("modalities", "modalities", [m.strip() for m in value.replace("\\", ",").split(",") if m.strip()])


# attribute keyword -> (lowest level that may use it, how it filters)
MATCHING_KEYS: dict[str, tuple[str, Callable[[Filters, str], None]]] = {
    "PatientID": ("study", lambda f, v: f.text("patient_id", v)),
    "PatientName": ("study", lambda f, v: f.person_name("patient_name", v)),
    "PatientBirthDate": ("study", lambda f, v: f.text("birth_date", v)),
    "PatientSex": ("study", lambda f, v: f.text("sex", v)),
    "StudyDate": ("study", _date),
    "StudyTime": ("study", _time),
    "AccessionNumber": ("study", lambda f, v: f.text("accession", v)),
    "StudyInstanceUID": ("study", lambda f, v: f.uids("study_uids", v)),
    "ModalitiesInStudy": ("study", _modalities),
    "StudyDescription": ("study", lambda f, v: f.text("study_description", v)),
    "ReferringPhysicianName": ("study", lambda f, v: f.person_name("referring", v)),
    "StudyID": ("study", lambda f, v: f.text("study_id", v)),
    "Modality": ("series", lambda f, v: f.text("modality", v)),
    "SeriesInstanceUID": ("series", lambda f, v: f.uids("series_uids", v)),
    "SeriesNumber": ("series", _integer("series_number", "SeriesNumber")),
    "SeriesDescription": ("series", lambda f, v: f.text("series_description", v)),
    "SOPInstanceUID": ("instance", lambda f, v: f.uids("sop_uids", v)),
    "SOPClassUID": ("instance", lambda f, v: f.uids("sop_classes", v)),
    "InstanceNumber": ("instance", _integer("instance_number", "InstanceNumber")),
}
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


@dataclass
class Query:
    """One parsed QIDO-RS request."""

    filters: Filters
    limit: int
    offset: int
    everything: bool = False  # includefield=all
    included: set[int] = field(default_factory=set)  # includefield tags
    warnings: list[str] = field(default_factory=list)
    limit_capped: bool = False  # the client asked for more than MAX_LIMIT


def _keyword(attribute: str) -> str | None:
    """The keyword of ``attribute`` given as a keyword or as an 8-digit hex tag; None if it is none."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", attribute):
        return keyword_for_tag(int(attribute, 16)) or None
    return attribute if tag_for_keyword(attribute) is not None else None


def parse(level: str, args: MultiDict[str, str]) -> Query:
    """Check and parse the query parameters of a search at ``level``.

    :raises InvalidQuery: an unknown parameter or attribute, a key not supported at this level, a malformed
        value, or a parameter given twice.
    """
    filters = Filters()
    query = Query(filters, DEFAULT_LIMIT, 0)
    allowed = LEVELS[:LEVELS.index(level) + 1]
    seen: set[str] = set()
    for name, value in args.items(multi=True):
        if name == "includefield":
            _includefield(query, value)
            continue
        keyword = name if name in CONTROL else _keyword(name)
        if keyword is None:
            raise InvalidQuery(gettext("%(name)s is neither a query parameter nor a DICOM attribute.", name=name[:64]),
                               errors={name[:64]: [N_("Use a DICOM keyword, a tag like 00100020, limit, offset, "
                                                   "includefield or fuzzymatching.")]})
        if keyword in seen:
            raise InvalidQuery(gettext("%(keyword)s is given more than once.", keyword=keyword),
                               errors={keyword: [N_("Give it once.")]})
        seen.add(keyword)
        if keyword in CONTROL:
            _control(query, keyword, value)
            continue
        rule = MATCHING_KEYS.get(keyword)
        if rule is None or rule[0] not in allowed:
            supported = ", ".join(k for k, (lvl, _) in MATCHING_KEYS.items() if lvl in allowed)
            raise InvalidQuery(gettext(LEVEL_MISMATCH[level], keyword=keyword),
                               errors={keyword: [gettext("Supported matching keys here: %(keys)s.", keys=supported)]})
        if value:  # an empty value is universal matching: every record matches
            rule[1](filters, value)
    return query


def _control(query: Query, name: str, value: str) -> None:
    if name == "fuzzymatching":
        if value.lower() not in ("true", "false"):
            raise InvalidQuery(N_("fuzzymatching is true or false."), errors={name: [N_("Use true or false.")]})
        if value.lower() == "true":
            query.warnings.append(FUZZY_WARNING)
        return
    try:
        number = int(value)
    except ValueError:
        raise InvalidQuery(gettext("%(name)s is a whole number.", name=name),
                           errors={name: [N_("Give a whole number.")]}) from None
    if name == "offset":
        if number < 0:
            raise InvalidQuery(N_("offset cannot be negative."), errors={name: [N_("Give 0 or more.")]})
        query.offset = number
        return
    if number < 1:
        raise InvalidQuery(N_("limit must be at least 1."), errors={name: [N_("Give 1 or more.")]})
    query.limit, query.limit_capped = min(number, MAX_LIMIT), number > MAX_LIMIT


def _includefield(query: Query, value: str) -> None:
    """``includefield`` values: ``all`` and/or attributes by keyword or 8-digit hex tag (repeated or listed)."""
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        if item.lower() == "all":
            query.everything = True
        elif re.fullmatch(r"[0-9A-Fa-f]{8}", item):
            query.included.add(int(item, 16))
        elif (tag := tag_for_keyword(item)) is not None:
            query.included.add(tag)
        else:
            raise InvalidQuery(gettext("includefield names an unknown attribute: %(name)s.", name=item[:64]),
                               errors={"includefield": [N_("Use a DICOM keyword, a tag like 00180050, or all.")]})
