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
from app.catalogue import N_
from app.errors import Forbidden

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


def event_values(action: str, *, by: User | None, outcome: Outcome = Outcome.SUCCESS, patient_id: object = None,
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


def mark_uncommitted() -> None:
    """Note that success events were written outside the unit of work's objects (by a statement's own INSERT,
    see :mod:`app.read_path`), so the request commits them before its response leaves."""
    db.session().info[_UNCOMMITTED_KEY] = True


def record(action: str, *, by: User | None, outcome: Outcome = Outcome.SUCCESS, patient_id: int | None = None,
           resource_type: str | None = None, resource_id: object = None, detail: dict[str, Any] | None = None,
           actor_name: str | None = None) -> AuditEvent:
    """Add an audit event to the current unit of work; denials and failures also survive a rollback."""
    values = event_values(action, by=by, outcome=outcome, patient_id=patient_id, resource_type=resource_type,
                     resource_id=resource_id, detail=detail, actor_name=actor_name)
    event = AuditEvent(**values)
    session = db.session()
    session.add(event)
    session.info[_UNCOMMITTED_KEY] = True
    if outcome is not Outcome.SUCCESS:
        session.info.setdefault(_DURABLE_KEY, []).append((event, values))
    return event


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
    durable: list[tuple[AuditEvent, dict[str, Any]]] = session.info.pop(_DURABLE_KEY, [])
    session.rollback()
    if durable:
        session.add_all(AuditEvent(**values) for _event, values in durable)
        session.commit()


@sa.event.listens_for(so.Session, "after_commit")
def _durable_events_stored(session: so.Session) -> None:
    session.info.pop(_DURABLE_KEY, None)


@sa.event.listens_for(so.Session, "after_flush")
def _stored_without_transaction(session: so.Session, _ctx: Any) -> None:
    """A denial flushed by a unit of work without a transaction (:func:`app.db.begin_autocommit`) is stored
    already: the rollback that follows must not write it a second time."""
    durable = session.info.get(_DURABLE_KEY)
    if durable and db.autocommitting(session):
        session.info[_DURABLE_KEY] = [(event, values) for event, values in durable if event not in session.new]


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
