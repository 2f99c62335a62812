"""Reading resources a client sends: shape checks that name the element at fault, before any service runs.

The domain services then apply the same validation as the web app; these checks only make sure nothing a
client sent is silently dropped and that each element has the type FHIR gives it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from app.errors import NotFound
from app.fhir.outcome import FhirError

IGNORED = {"resourceType", "id", "meta", "text", "language"}
"""Elements every resource may carry that do not change what is stored."""


def only(body: dict[str, Any], allowed: set[str], resource: str) -> None:
    """Refuse elements this server would not store, rather than dropping them silently."""
    extra = sorted(set(body) - allowed - IGNORED)
    if extra:
        raise FhirError(f"{resource} elements this server does not store: {', '.join(extra)}. Remove them "
                        "and send again.", status=422, code="not-supported",
                        expression=[f"{resource}.{e}" for e in extra])


def get(body: Any, path: str, kind: type | tuple[type, ...], *, required: bool = False, resource: str) -> Any:
    """The value at a dotted ``path`` (list steps as ``name[0]``) checked against ``kind``."""
    value = body
    for step in path.split("."):
        name, _, index = step.partition("[")
        value = value.get(name) if isinstance(value, dict) else None
        if index and value is not None:
            if not isinstance(value, list):
                raise FhirError(f"{resource}.{path}: {name} must be a list.", status=422, code="structure",
                                expression=[f"{resource}.{path}"])
            position = int(index.rstrip("]"))  # indexes come from this module's callers, not from clients
            value = value[position] if len(value) > position else None
        if value is None:
            break
    if value is None:
        if required:
            raise FhirError(f"{resource}.{path} is required.", status=422, code="required",
                            expression=[f"{resource}.{path}"])
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        value = object()
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise FhirError(f"{resource}.{path} must be a {names.replace('str', 'string').replace('int', 'integer')}.",
                        status=422, code="value", expression=[f"{resource}.{path}"])
    return value


def fhir_date(value: str | None, path: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FhirError(f"{path} must be a date (YYYY-MM-DD).", status=422, code="value", expression=[path]) from None


def fhir_instant(value: str | None, path: str) -> datetime | None:
    """A dateTime with its zone; a time without a zone is refused (it would be ambiguous)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise FhirError(f"{path} must be a date and time with its zone, e.g. 2026-12-05T09:00:00Z.",
                        status=422, code="value", expression=[path])
    return moment


def reference_id(value: Any, expected: str, path: str, *, required: bool = True) -> int | None:
    """The numeric id of a ``{"reference": "Type/id"}`` of the expected type."""
    ref = value.get("reference") if isinstance(value, dict) else None
    if ref is None and not required:
        return None
    kind, _, rid = str(ref or "").rpartition("/")
    if kind.rsplit("/", 1)[-1] != expected or not rid.isdigit() or len(rid) > 11:
        raise FhirError(f"{path} must reference a {expected} (\"{expected}/<id>\").", status=422, code="value",
                        expression=[path])
    return int(rid)


def referenced(error: NotFound, path: str) -> FhirError:
    """A reference to something missing or out of reach, reported on the element (the denial is audited)."""
    return FhirError(f"{path}: {error.detail}", status=422, code="processing", expression=[path])
