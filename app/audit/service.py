"""Recording and reading audit events.

Success events ride in the caller's transaction (a write that is rolled back was never done). Denials
and failures are *durable*: they survive the rollback that follows the error (see
:func:`rollback_keeping_durable`), so a refused attempt is always on the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_babel import gettext

from app import db
from app.audit import chain
from app.audit.chain import Verification
from app.audit.context import client_ip, on_behalf_of
from app.audit.models import AuditEvent, AuditLink, AuditSeal, Outcome
from app.errors import Forbidden
from app.i18n import N_

if TYPE_CHECKING:
    from app.auth.models import User

_DURABLE_KEY = "audit_durable"
_UNCOMMITTED_KEY = "audit_uncommitted"


class AuditImmutable(RuntimeError):
    """Something tried to change or delete an audit row."""


@sa.event.listens_for(so.Session, "before_flush")
def _refuse_audit_changes(session: so.Session, _ctx: Any, _instances: Any) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEvent | AuditLink | AuditSeal) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditImmutable("audit events are append-only")


@sa.event.listens_for(so.Session, "after_transaction_end")
def _committed_or_undone(session: so.Session, transaction: so.SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_UNCOMMITTED_KEY, None)


def uncommitted() -> bool:
    """Whether this unit of work holds success events not yet committed (e.g. recorded by a page's panels while
    its template renders, after the view's own commit); the app commits them before the response leaves."""
    return bool(db.session().info.get(_UNCOMMITTED_KEY))


def _values(action: str, *, by: User | None, outcome: Outcome = Outcome.SUCCESS, patient_id: object = None,
            resource_type: str | None = None, resource_id: object = None, detail: object = None,
            actor_name: str | None = None) -> dict[str, Any]:
    return {
        "occurred_at": db.utcnow(),
        "actor_id": by.id if by is not None else None,
        "actor_role": by.role.value if by is not None else None,
        "actor_name": by.full_name if by is not None else actor_name,
        "action": action,
        "outcome": outcome,
        "patient_id": patient_id,
        "resource_type": resource_type,
        "resource_id": None if resource_id is None else str(resource_id),
        "ip": client_ip.get(),
        "detail": detail,
        "on_behalf_of": on_behalf_of.get(),
    }


def record(action: str, *, by: User | None, outcome: Outcome = Outcome.SUCCESS, patient_id: int | None = None,
           resource_type: str | None = None, resource_id: object = None, detail: dict[str, Any] | None = None,
           actor_name: str | None = None) -> AuditEvent:
    """Add an audit event to the current unit of work; denials and failures also survive a rollback."""
    values = _values(action, by=by, outcome=outcome, patient_id=patient_id, resource_type=resource_type,
                     resource_id=resource_id, detail=detail, actor_name=actor_name)
    event = AuditEvent(**values)
    session = db.session()
    session.add(event)
    session.info[_UNCOMMITTED_KEY] = True
    if outcome is not Outcome.SUCCESS:
        session.info.setdefault(_DURABLE_KEY, []).append(values)
    return event


def _in_one_statement() -> bool:
    """PostgreSQL runs an INSERT inside a SELECT's WITH clause; SQLite does not."""
    return db.session.get_bind().dialect.name == "postgresql"


def _insert_from(rows: sa.Select[Any], **columns: sa.ColumnElement[Any]) -> sa.CTE:
    """A WITH-clause INSERT of one audit event per row of ``rows``: ``columns`` are taken from it, the rest are
    bind parameters ``audit_<column>`` (see :func:`_event_params`), so the statement is the same every time."""
    table = AuditEvent.__table__
    names = [c.name for c in table.columns if c.name != "id"]
    selected = [columns[n] if n in columns else sa.bindparam(f"audit_{n}", type_=table.c[n].type) for n in names]
    return sa.insert(AuditEvent).from_select(names, rows.with_only_columns(*selected)).cte("audit_insert")


def _event_params(action: str, *, by: User, resource_type: str, given: set[str]) -> dict[str, Any]:
    values = _values(action, by=by, resource_type=resource_type)
    return {f"audit_{name}": value for name, value in values.items() if name not in given}


class AuditedRead:
    """An access-checked read that records an event for every row it returns, built once and run many times.

    ``query`` has a bind parameter for every value that changes from one call to the next (passed to
    :meth:`run`); ``resource_id`` and ``patient_id`` are its columns naming each row's resource and patient.
    On PostgreSQL the events are written by the query itself (an INSERT in its WITH clause, on the same
    snapshot): the read and its audit trail are one statement and one round trip, and there is no way to get
    the rows without the events. Elsewhere they are added to the unit of work like :func:`record`'s. Building
    a statement of this size (and its cache key) costs more than running it, hence once.
    """

    def __init__(self, query: sa.Select[Any], *, resource_type: str, resource_id: sa.ColumnElement[Any],
                 patient_id: sa.ColumnElement[Any]) -> None:
        self.resource_type = resource_type
        self.query = query.add_columns(resource_id, patient_id)
        rows = query.with_only_columns(resource_id, patient_id, maintain_column_froms=True).subquery()
        self._given = {"patient_id", "resource_id", "resource_type"}
        self._combined = self.query.add_cte(_insert_from(
            sa.select(rows), patient_id=rows.c[1], resource_id=sa.cast(rows.c[0], sa.String),
            resource_type=sa.literal(resource_type, AuditEvent.__table__.c.resource_type.type)))

    def run(self, params: dict[str, Any], action: str, *, by: User) -> list[sa.Row[Any]]:
        """The rows, each with its resource id and patient id appended, and their ``action`` events."""
        if _in_one_statement():
            params = params | _event_params(action, by=by, resource_type=self.resource_type, given=self._given)
            db.session().info[_UNCOMMITTED_KEY] = True
            return list(db.session.execute(self._combined, params))
        result = list(db.session.execute(self.query, params))
        for row in result:
            record(action, by=by, patient_id=row[-1], resource_type=self.resource_type, resource_id=row[-2])
        return result


class AuditedSearch:
    """A search that records one event with its number of results (``detail.results``), built once and run many
    times with parameters; on PostgreSQL in the same statement, as :class:`AuditedRead` does."""

    def __init__(self, query: sa.Select[Any], *, resource_type: str) -> None:
        self.query, self.resource_type = query, resource_type
        found = query.with_only_columns(sa.literal(1).label("one"), maintain_column_froms=True).subquery()
        results = sa.select(sa.func.count()).select_from(found).scalar_subquery()
        self._combined = query.add_cte(_insert_from(
            sa.select(), detail=sa.func.json_build_object("results", results),
            resource_type=sa.literal(resource_type, AuditEvent.__table__.c.resource_type.type)))

    def run(self, params: dict[str, Any], action: str, *, by: User) -> list[sa.Row[Any]]:
        if _in_one_statement():
            events = _event_params(action, by=by, resource_type=self.resource_type, given={"detail", "resource_type"})
            db.session().info[_UNCOMMITTED_KEY] = True
            return list(db.session.execute(self._combined, params | events))
        result = list(db.session.execute(self.query, params))
        record(action, by=by, resource_type=self.resource_type, detail={"results": len(result)})
        return result


def forbid(action: str, *, by: User | None, patient_id: int | None = None, resource_type: str | None = None,
           resource_id: object = None, error: Exception | None = None, detail: dict[str, Any] | None = None,
           actor_name: str | None = None) -> NoReturn:
    """Record a refusal (a durable DENIED event) and raise ``error`` (404 by default, so ids leak nothing).

    The one way a domain's access rules refuse: nothing is refused without an audit row.
    """
    from app.errors import NotFound

    record(action, by=by, outcome=Outcome.DENIED, patient_id=patient_id, resource_type=resource_type,
           resource_id=resource_id, detail=detail, actor_name=actor_name)
    raise error or NotFound(gettext("No %(kind)s with that id, or you do not have access to it.",
                                    kind=gettext(resource_type or N_("record"))))


def rollback_keeping_durable(session: so.Session) -> None:
    """Roll back the session, then commit again only the denial/failure events of that unit of work."""
    durable: list[dict[str, Any]] = session.info.pop(_DURABLE_KEY, [])
    session.rollback()
    if durable:
        session.add_all(AuditEvent(**values) for values in durable)
        session.commit()


@sa.event.listens_for(so.Session, "after_commit")
def _durable_events_stored(session: so.Session) -> None:
    session.info.pop(_DURABLE_KEY, None)


def search(*, by: User, actor_id: int | None = None, patient_id: int | None = None, action: str | None = None,
           outcome: Outcome | None = None, since: datetime | None = None, until: datetime | None = None,
           actor_name: str | None = None, patient_ids: Sequence[int] | None = None,
           page: int = 1, per_page: int = 50) -> tuple[Sequence[AuditEvent], int]:
    """Filter the trail for an admin; ``actor_name`` matches part of the name as recorded, any case;
    ``patient_ids`` (e.g. the patients a typed name matched) may be empty, which matches nothing.

    :raises Forbidden: for anyone else.
    """
    from app.auth.models import Role

    if by.role is not Role.ADMIN:
        forbid("audit.search", by=by, error=Forbidden("Only administrators can read the audit trail."))
    query = sa.select(AuditEvent)
    if actor_id is not None:
        query = query.where(AuditEvent.actor_id == actor_id)
    if patient_id is not None:
        query = query.where(AuditEvent.patient_id == patient_id)
    if actor_name:
        pattern = "%" + actor_name.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
        query = query.where(sa.func.lower(AuditEvent.actor_name).like(pattern))
    if patient_ids is not None:
        query = query.where(AuditEvent.patient_id.in_(list(patient_ids)))
    if action:
        query = query.where(AuditEvent.action.startswith(action))
    if outcome is not None:
        query = query.where(AuditEvent.outcome == outcome)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    rows = db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(per_page).offset((page - 1) * per_page))
    record("audit.search", by=by, detail={"page": page})
    return list(rows), total


def access_log_for_patient(patient_id: int, *, limit: int = 200) -> Sequence[AuditEvent]:
    """Who touched this patient's record (successful accesses by others), newest first.

    Callers authorise first: see ``patients.service.access_log``.
    """
    query = (sa.select(AuditEvent)
             .where(AuditEvent.patient_id == patient_id, AuditEvent.outcome == Outcome.SUCCESS)
             .order_by(AuditEvent.id.desc()).limit(limit))
    return list(db.session.scalars(query))


def verify_trail(*, by: User) -> Verification:
    """Check the trail's hash chain for an admin (see ``app.audit.chain``). :raises Forbidden: for anyone else."""
    from app.auth.models import Role

    if by.role is not Role.ADMIN:
        forbid("audit.verify", by=by, error=Forbidden("Only administrators can check the audit trail."))
    result = chain.verify()
    broken = result.first_break
    record("audit.verify", by=by, detail={"intact": result.intact, "sealed_through": result.sealed_through,
                                          "first_break": broken.event_id if broken else None})
    return result
