"""The FHIR resource registry, search parameters and searchset Bundles, shared by every resource family.

A family module describes each resource type once (:class:`ResourceType`): how to read one (through its
domain's service, which checks access and audits), the base query of what a user may see, its search
parameters, sorts, ``_include`` targets and how to write it. The routes, the CapabilityStatement and the
tests all derive from this registry, so what is advertised is exactly what answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import current_app, request

from app import db
from app.audit import service as audit
from app.auth import bearer
from app.auth import scopes as smart
from app.auth.models import User
from app.fhir.outcome import FhirError, issue

DEFAULT_COUNT = 20
MAX_COUNT = 100
MAX_INCLUDED = 200
# Result parameters every search understands (besides the resource's own search parameters).
CONTROL_PARAMS = {"_count", "_sort", "_include", "_revinclude", "_offset", "_format", "_summary", "_total"}

Query = sa.Select[Any]
Apply = Callable[[Query, list[str], str | None], Query]
"""(query, comma-separated alternatives of one occurrence split into a list, modifier) -> narrowed query."""


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str
    """FHIR search parameter type: token, string, date, reference, number, uri."""
    apply: Apply
    doc: str
    target: tuple[str, ...] = ()
    """Resource types a reference parameter points at (used by ``_revinclude``)."""


@dataclass
class ResourceType:
    name: str
    model: type
    to_fhir: Callable[[Any], dict[str, Any]]
    read: Callable[[str, User], Any]
    """Open one resource for the user (access-checked and audited by the domain); raises NotFound."""
    visible: Callable[[User], Query]
    """The query of everything of this type the user may search (access rules as a WHERE clause)."""
    params: dict[str, SearchParam] = field(default_factory=dict)
    sorts: dict[str, Any] = field(default_factory=dict)
    includes: dict[str, tuple[str, Callable[[Any], list[str]]]] = field(default_factory=dict)
    """``_include`` name -> (target type, function giving the target ids of one resource)."""
    patient_of: Callable[[Any], int | None] = lambda _obj: None
    create: Callable[[dict[str, Any], User], Any] | None = None
    update: Callable[[Any, dict[str, Any], User], Any] | None = None
    profile: str | None = None
    documentation: str = ""
    audited: bool = True
    """Whether a search is patient data (audited per patient); directories such as Practitioner are not."""
    rows: Callable[[Search, User], tuple[list[Any], int]] | None = None
    """For resources computed rather than stored (free Slots): runs the whole search instead of ``visible``."""

    def param(self, name: str) -> SearchParam | None:
        return self.params.get(name)


REGISTRY: dict[str, ResourceType] = {}


def register(resource: ResourceType) -> ResourceType:
    if resource.rows is None:
        id_column = resource.model.id  # type: ignore[attr-defined]
        resource.params.setdefault("_id", SearchParam("_id", "token", _id_filter(id_column), "Logical id"))
        resource.sorts.setdefault("_id", id_column)
    REGISTRY[resource.name] = resource
    smart.RESOURCE_TYPES.setdefault(resource.name, resource.name)  # a token may be scoped for it
    return resource


def numeric_id(text: str) -> int | None:
    """A database id from a FHIR id, or None (not digits, or too large for any row)."""
    return int(text) if text.isdigit() and len(text) < 12 else None


def _id_filter(column: Any) -> Apply:
    def apply(query: Query, values: list[str], _modifier: str | None) -> Query:
        ids = [i for i in map(numeric_id, values) if i is not None]
        return query.where(column.in_(ids or [-1]))

    return apply


# ---------------------------------------------------------------- parameter helpers


def token_values(values: list[str]) -> list[tuple[str | None, str]]:
    """``system|code`` / ``code`` / ``|code`` -> (system or None, code)."""
    out = []
    for value in values:
        system, bar, code = value.rpartition("|")
        out.append((system if bar else None, code))
    return out


def token(column: Any, *, system: str | None = None, transform: Callable[[str], Any] = str) -> Apply:
    """A token parameter on one column; a value with another system matches nothing."""

    def apply(query: Query, values: list[str], modifier: str | None) -> Query:
        codes = []
        for sys_, code in token_values(values):
            if sys_ is not None and system is not None and sys_ != system:
                continue
            try:
                codes.append(transform(code))
            except (ValueError, KeyError):
                continue
        clause = column.in_(codes) if codes else sa.false()
        return query.where(sa.not_(clause) if modifier == "not" else clause)

    return apply


def string(*columns: Any, folded: tuple[Any, ...] = ()) -> Apply:
    """A string parameter: case-insensitive prefix of any of ``columns`` (``:exact``, ``:contains`` as FHIR says).

    ``folded`` are lower-cased copies of ``columns`` (indexed), searched instead of ``lower(column)``.
    """

    def apply(query: Query, values: list[str], modifier: str | None) -> Query:
        alternatives = []
        for value in values:
            text = value.strip()
            if modifier == "exact":
                alternatives += [c == text for c in columns]
                continue
            text = text.lower().replace("\\", "").replace("%", "").replace("_", "")
            for column, copy in zip(columns, folded or (None,) * len(columns), strict=True):
                lowered = copy if copy is not None else sa.func.lower(column)
                alternatives.append(lowered.contains(text) if modifier == "contains" else lowered.startswith(text))
        return query.where(sa.or_(*alternatives) if alternatives else sa.false())

    return apply


def reference(column: Any, *types: str) -> Apply:
    """A reference parameter: ``Type/id`` or a bare id."""

    def apply(query: Query, values: list[str], _modifier: str | None) -> Query:
        ids = []
        for value in values:
            kind, _, rid = value.rpartition("/")
            kind = kind.rsplit("/", 1)[-1]
            if (not kind or kind in types) and numeric_id(rid) is not None:
                ids.append(int(rid))
        return query.where(column.in_(ids) if ids else sa.false())

    return apply


DATE_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                     r"(Z|[+-]\d{2}:\d{2})?)?)?)?)$")


def date_range(value: str) -> tuple[str, datetime, datetime]:
    """``[prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]`` -> (prefix, start, end) of the period it names (UTC)."""
    match = DATE_RE.match(value)
    if not match:
        raise FhirError(f"'{value}' is not a FHIR date (use e.g. 2024, 2024-05, 2024-05-01 or "
                        "2024-05-01T10:00:00Z, optionally after ge, le, gt, lt).", code="value")
    prefix, text = match.group(1) or "eq", match.group(2)
    try:
        if len(text) == 4:
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            end = datetime(int(text) + 1, 1, 1, tzinfo=UTC)
        elif len(text) == 7:
            y, m = int(text[:4]), int(text[5:7])
            start = datetime(y, m, 1, tzinfo=UTC)
            end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
        elif len(text) == 10:
            start = datetime.fromisoformat(text).replace(tzinfo=UTC)
            end = start + timedelta(days=1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            start = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
            end = start + timedelta(seconds=1)
    except ValueError:
        raise FhirError(f"'{value}' is not a valid date.", code="value") from None
    return prefix, start, end


def date_param(column: Any, *, is_date: bool = False) -> Apply:
    """A date parameter on a timestamp column (or a DATE column with ``is_date``); values are ANDed."""

    def bound(moment: datetime) -> Any:
        return moment.date() if is_date else moment

    def apply(query: Query, values: list[str], _modifier: str | None) -> Query:
        alternatives = []
        for value in values:
            prefix, start, end = date_range(value)
            lo, hi = bound(start), bound(end)
            if is_date and hi == lo:
                hi = lo + timedelta(days=1)
            alternatives.append({
                "eq": sa.and_(column >= lo, column < hi), "ne": sa.or_(column < lo, column >= hi),
                "gt": column >= hi, "sa": column >= hi, "ge": column >= lo,
                "lt": column < lo, "eb": column < lo, "le": column < hi,
            }[prefix])
        return query.where(sa.or_(*alternatives))

    return apply


# ---------------------------------------------------------------- scopes


def confine(resource: ResourceType, query: Query) -> Query:
    """Keep a patient-context token (SMART launch ``patient``) inside that patient's compartment, unless its
    other scopes reach the resource anyway (a staff member's ``user/`` scopes)."""
    token = bearer.current_token()
    patient_id = getattr(token, "patient_id", None)
    if token is None or patient_id is None or not resource.audited:
        return query  # directories (practitioners, facilities, the formulary) are not patient data
    if smart.grants([s for s in token.scopes if not s.startswith("patient/")], resource.name, "s"):
        return query
    if resource.name == "Patient":
        return query.where(resource.model.id == patient_id)  # type: ignore[attr-defined]
    param = resource.param("patient")
    return param.apply(query, [f"Patient/{patient_id}"], None) if param else query  # e.g. one's own messages


def token_allows(resource_type: str, permission: str) -> bool:
    """Whether the request's bearer token (if any) has a scope for this; cookie sessions are not scoped."""
    token = bearer.current_token()
    return token is None or smart.grants(token.scopes, resource_type, permission)


# ---------------------------------------------------------------- search


def base_url() -> str:
    return current_app.config.get("FHIR_BASE_URL") or request.url_root.rstrip("/") + "/fhir"


def strict() -> bool:
    """``Prefer: handling=strict`` turns ignored search parameters into errors (FHIR's default is lenient)."""
    prefer = request.headers.get("Prefer", "")
    return any(part.strip() == "handling=strict" for part in prefer.split(","))


@dataclass
class Search:
    resource: ResourceType
    filters: list[tuple[str, str | None, list[str]]]
    count: int
    offset: int
    sort: list[tuple[str, bool]]
    include: list[tuple[str, str]]
    revinclude: list[tuple[str, str]]
    ignored: list[str]
    summary_count: bool = False


def parse(resource: ResourceType, args: Any) -> Search:
    """Read the query string: unknown or unsupported parameters are ignored (and reported) unless strict."""
    ignored: list[str] = []
    filters: list[tuple[str, str | None, list[str]]] = []
    for key in args:
        name, _, modifier = key.partition(":")
        if key in CONTROL_PARAMS:
            continue
        param = resource.param(name)
        supported = {"string": ("exact", "contains"), "token": ("not",)}.get(param.type if param else "", ())
        if param is None or (modifier and modifier not in supported):
            ignored.append(key)
            continue
        for value in args.getlist(key):
            if any(ord(c) < 32 for c in value) or len(value) > 2000:
                raise FhirError(f"The value of {key} is too long or has control characters.", code="value",
                                expression=[key])
            values = [v for v in value.split(",") if v.strip()]
            if not values:
                ignored.append(key)
                continue
            filters.append((name, modifier or None, values))
    if ignored and strict():
        raise FhirError(f"Unknown or unsupported search parameter(s) for {resource.name}: {', '.join(ignored)}. "
                        "See /fhir/metadata for the supported ones.", code="not-supported", expression=ignored)
    count = _int(args.get("_count"), "_count", DEFAULT_COUNT)
    if count > MAX_COUNT:
        if strict():
            raise FhirError(f"_count may be at most {MAX_COUNT}.", code="too-costly")
        count = MAX_COUNT
    offset = _int(args.get("_offset"), "_offset", 0)
    sort = []
    for item in (s.strip() for s in ",".join(args.getlist("_sort")).split(",") if s.strip()):
        desc, key = item.startswith("-"), item.lstrip("-")
        if key not in resource.sorts:
            if strict():
                raise FhirError(f"Sorting {resource.name} by '{key}' is not supported; use one of "
                                f"{', '.join(sorted(resource.sorts))}.", code="not-supported")
            ignored.append(f"_sort={item}")
            continue
        sort.append((key, desc))
    include = _pairs(args.getlist("_include"), "_include", own=resource.name)
    revinclude = _pairs(args.getlist("_revinclude"), "_revinclude")
    for kind, name in include:
        if name not in resource.includes:
            raise FhirError(f"_include={kind}:{name} is not supported for {resource.name}.", code="not-supported")
    for kind, name in revinclude:
        other = REGISTRY.get(kind)
        param = other.param(name) if other else None
        if param is None or resource.name not in param.target:
            raise FhirError(f"_revinclude={kind}:{name} does not point at {resource.name}.", code="not-supported")
    return Search(resource, filters, count, offset, sort, include, revinclude, ignored,
                  summary_count=args.get("_summary") == "count")


def _int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 7:
        raise FhirError(f"{name} must be a whole number below 10,000,000.", code="value", expression=[name])
    return int(value)


def _pairs(values: list[str], name: str, own: str | None = None) -> list[tuple[str, str]]:
    out = []
    for value in values:
        kind, colon, param = value.partition(":")
        if not colon or kind not in REGISTRY or (own is not None and kind != own):
            raise FhirError(f"{name}={value} is not supported; write Type:parameter, e.g. "
                            f"{'MedicationRequest:patient' if name == '_include' else 'Provenance:target'}.",
                            code="not-supported", expression=[name])
        out.append((kind, param.split(":")[0]))
    return out


def run(search: Search, by: User) -> tuple[list[Any], int]:
    """The page of matches and the total; the access rules are part of the query, the read is audited."""
    resource = search.resource
    if resource.rows is not None:
        return resource.rows(search, by)
    query = confine(resource, resource.visible(by))
    for name, modifier, values in search.filters:
        query = resource.params[name].apply(query, values, modifier)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery())) or 0
    if search.summary_count:
        rows: list[Any] = []
    else:
        order = [(resource.sorts[key].desc() if desc else resource.sorts[key].asc()) for key, desc in search.sort]
        order.append(resource.model.id.asc())  # type: ignore[attr-defined]  # a stable order across pages
        rows = list(db.session.scalars(query.order_by(*order).limit(search.count).offset(search.offset)).unique())
    audit_found(resource, rows, by, "search")
    return rows, total


def audit_found(resource: ResourceType, rows: list[Any], by: User, how: str) -> None:
    """One event per patient whose data was returned, so "who viewed my record" shows FHIR reads too."""
    if not resource.audited:
        return
    per_patient: dict[int | None, list[str]] = {}
    for row in rows:
        per_patient.setdefault(resource.patient_of(row), []).append(str(row.id))
    if not rows:
        audit.record(f"fhir.{resource.name.lower()}.{how}", by=by, resource_type=resource.name,
                     detail={"results": 0})
    for patient_id, ids in per_patient.items():
        audit.record(f"fhir.{resource.name.lower()}.{how}", by=by, patient_id=patient_id,
                     resource_type=resource.name, resource_id=ids[0] if len(ids) == 1 else None,
                     detail={"ids": ids[:100]})


def includes(search: Search, rows: list[Any], by: User) -> list[tuple[str, Any]]:
    """The resources ``_include``/``_revinclude`` ask for, each opened with the same access checks."""
    out: list[tuple[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for _kind, name in search.include:
        target_name, targets = search.resource.includes[name]
        target = REGISTRY[target_name]
        if not token_allows(target_name, "r"):
            continue
        wanted = sorted({i for row in rows for i in targets(row) if (target_name, i) not in seen})
        found = confine(target, target.visible(by)).where(target.model.id.in_([int(i) for i in wanted]))  # type: ignore[attr-defined]
        items = list(db.session.scalars(found.limit(MAX_INCLUDED)).unique())
        audit_found(target, items, by, "include")
        for item in items:
            seen.add((target_name, str(item.id)))
            out.append((target_name, item))
    for kind, name in search.revinclude:
        other = REGISTRY[kind]
        if not rows or not token_allows(kind, "s"):
            continue
        refs = [f"{search.resource.name}/{row.id}" for row in rows]
        query = other.params[name].apply(confine(other, other.visible(by)), refs, None)
        items = list(db.session.scalars(query.order_by(other.model.id).limit(MAX_INCLUDED)).unique())  # type: ignore
        audit_found(other, items, by, "revinclude")
        out += [(kind, item) for item in items if (kind, str(item.id)) not in seen]
    return out


def entry(resource_name: str, obj: Any, mode: str) -> dict[str, Any]:
    body = REGISTRY[resource_name].to_fhir(obj)
    return {"fullUrl": f"{base_url()}/{resource_name}/{body['id']}", "resource": body, "search": {"mode": mode}}


def bundle(search: Search, rows: list[Any], total: int, extra: list[tuple[str, Any]]) -> dict[str, Any]:
    """A searchset Bundle with self/next/previous links that repeat the (understood) query."""
    resource = search.resource
    kept = [(k, v) for k, v in request.args.items(multi=True) if k != "_offset" and k not in search.ignored]
    url = f"{base_url()}/{resource.name}"

    def link(relation: str, offset: int) -> dict[str, str]:
        query = urlencode([*kept, ("_offset", str(offset))] if offset else kept)
        return {"relation": relation, "url": f"{url}?{query}" if query else url}

    links = [link("self", search.offset)]
    if not search.summary_count and search.offset + search.count < total:
        links.append(link("next", search.offset + search.count))
    if search.offset > 0:
        links.append(link("previous", max(0, search.offset - search.count)))
    entries = [entry(resource.name, row, "match") for row in rows]
    entries += [entry(kind, item, "include") for kind, item in extra]
    if search.ignored:
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [issue(
            "warning", "not-supported", f"Ignored search parameter(s): {', '.join(search.ignored)}.")]},
            "search": {"mode": "outcome"}})
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        body["entry"] = entries
    return body


def instant(moment: datetime | None) -> str | None:
    """A FHIR instant/dateTime with its zone (stored times are UTC)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat(timespec="seconds")


def day(value: date | None) -> str | None:
    return value.isoformat() if value else None


def compact(body: dict[str, Any]) -> dict[str, Any]:
    """Drop empty elements (FHIR forbids nulls, empty strings and empty lists)."""
    return {k: v for k, v in body.items() if v not in (None, "", [], {})}


def ref_param(name: str, column: Any, target: str, doc: str) -> SearchParam:
    """A reference search parameter to one resource type (which can then ``_revinclude`` it)."""
    return SearchParam(name, "reference", reference(column, target), doc, (target,))


def patient_params(column: Any, *names: str) -> dict[str, SearchParam]:
    """``patient`` (and e.g. ``subject``): the same column, a reference to the Patient."""
    return {name: ref_param(name, column, "Patient", "The patient") for name in names or ("patient",)}
