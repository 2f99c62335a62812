"""The hot read path: one database round trip for a DICOMweb search or frame.

Three things make a read cost one statement, and they live here together because each relies on the others:

- **Statements built once.** Building and hashing a statement of this size costs more than running it, so each
  shape is built once per process (:func:`audited_read`, :func:`audited_search`, a bounded LRU) and run with
  bind parameters: who is asking and what they ask for are never part of the cached text.
- **The audit INSERT inside the read.** On PostgreSQL the audit event is written by the query's WITH clause on
  the same snapshot, so the rows cannot come back without their events (SQLite, which has no INSERT in WITH,
  gets the events through the unit of work instead, as :func:`app.audit.service.record` does).
- **The session's user checked by the read itself.** A view marked :func:`checks_session` gets the signed-in
  user from this process's snapshot instead of a query; every statement built here re-checks that account
  (still active, same session epoch, same role and clinic) in its WHERE clause. A read that comes back empty
  is followed by :func:`stale_viewer`, which looks the account up again: a session that has ended is refused
  as if the snapshot had never existed, and a role or clinic that changed is read again with the fresh account.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import cachetools
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import abort, current_app, g, has_request_context, request
from flask_login import logout_user
from sqlalchemy.orm.attributes import set_committed_value

from app import db
from app.audit import service as audit
from app.audit.models import AuditEvent
from app.auth import service as auth_service
from app.auth.models import Role, User
from app.facilities.models import Facility

View = TypeVar("View", bound=Callable[..., Any])
R = TypeVar("R")

SNAPSHOT_SECONDS = 60
"""How long a process trusts its copy of a session's user for display values (name, language); validity itself
is checked by every statement, so a deactivated account or a reset password ends access at once."""

_statements: cachetools.LRUCache[Hashable, Any] = cachetools.LRUCache(maxsize=512)
_lock = threading.Lock()


# ---------------------------------------------------------------- the session's user


def checks_session(view: View) -> View:
    """Mark a GET view whose every statement comes from this module (and so re-checks the account): its
    session user is taken from the process's snapshot, without a database round trip. Implies autocommit reads."""
    view.checks_session = True  # type: ignore[attr-defined]
    return db.autocommit_reads(view)


def session_user(session_id: str) -> User | None:
    """Flask-Login's user for ``session_id`` (``<id>:<epoch>``): the snapshot when the request's view checks
    the session in its statements, else the account read afresh (and the snapshot refreshed)."""
    view = current_app.view_functions.get(request.endpoint or "")
    if request.method in ("GET", "HEAD") and getattr(view, "checks_session", False):
        with _lock:
            kept = _snapshots().get(session_id)
        if kept is not None:
            user = _attached(*kept)
            g.viewer_from_snapshot = user
            return user
    user = auth_service.load_session_user(session_id)
    if user is not None:
        facility = _columns(user.facility) if user.facility is not None else None
        with _lock:
            _snapshots()[session_id] = (_columns(user), facility)
    return user


def _columns(obj: Any) -> dict[str, Any]:
    return {attr.key: getattr(obj, attr.key) for attr in so.object_mapper(obj).column_attrs}


def _snapshots() -> cachetools.TTLCache[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """This app's kept accounts (one per app: an id means nothing in another app's database)."""
    return current_app.extensions.setdefault(  # type: ignore[no-any-return]
        "read_path_snapshots", cachetools.TTLCache(maxsize=4096, ttl=SNAPSHOT_SECONDS))


def _attached(user_values: dict[str, Any], facility_values: dict[str, Any] | None) -> User:
    """The account (and its clinic, which the page's language and zone come from) in the request's session,
    built from kept column values as if just loaded: no SQL."""
    user: User = _loaded(User, user_values)
    if facility_values is not None and "facility" not in user.__dict__:
        set_committed_value(user, "facility", _loaded(Facility, facility_values))
    return user


def _loaded(cls: type[Any], values: dict[str, Any]) -> Any:
    sess = db.session()
    mapper = so.class_mapper(cls)
    present = sess.identity_map.get(mapper.identity_key_from_primary_key((values["id"],)))
    if present is not None:
        return present
    obj = mapper.class_manager.new_instance()
    for key, value in values.items():
        set_committed_value(obj, key, value)
    so.make_transient_to_detached(obj)
    sess.add(obj)
    return obj


def forget_session(session_id: str) -> None:
    with _lock:
        _snapshots().pop(session_id, None)


def signed_in(role: Role) -> sa.ColumnElement[bool]:
    """The viewer's account is as the request took it: active, same session epoch, role and clinic. Bound by
    :func:`viewer_params`; part of every statement built here."""
    return _account_holds(role, sa.bindparam("viewer_id"), sa.bindparam("viewer_epoch"),
                          sa.bindparam("viewer_facility_id"))


def still_signed_in(user: User) -> sa.ColumnElement[bool]:
    """:func:`signed_in` with ``user``'s values, for a statement built per request."""
    return _account_holds(user.role, user.id, user.session_epoch, user.facility_id)


def _account_holds(role: Role, user_id: Any, epoch: Any, facility_id: Any) -> sa.ColumnElement[bool]:
    return sa.exists().where(User.id == user_id, User.active.is_(True), User.session_epoch == epoch,
                             User.role == role, User.facility_id.is_not_distinct_from(facility_id))


def viewer_params(user: User) -> dict[str, Any]:
    return {"viewer_id": user.id, "viewer_epoch": user.session_epoch, "viewer_facility_id": user.facility_id}


def as_viewer(user: User, read: Callable[[], R]) -> R:
    """``read()``, run again once when it found nothing because ``user`` came from a stale snapshot (see
    :func:`stale_viewer`; ``read`` must look at ``user`` afresh each time it runs)."""
    while True:
        found = read()
        if found or not stale_viewer(user):
            return found


def stale_viewer(user: User) -> bool:
    """After a read found nothing: whether it should run again because ``user`` came from a snapshot whose
    role or clinic has changed since (``user`` now holds the fresh values). A session that has ended (account
    deactivated or gone, password reset) is answered like any signed-out request. False for an account read
    in this request, or a snapshot that was right: the empty answer stands."""
    user = user._get_current_object() if hasattr(user, "_get_current_object") else user  # current_user's proxy
    if not has_request_context() or g.get("viewer_from_snapshot") is not user:
        return False
    g.viewer_from_snapshot = None
    fresh = db.session.execute(sa.select(User.active, User.session_epoch, User.role, User.facility_id)
                               .where(User.id == user.id)).one_or_none()
    forget_session(user.get_id())
    if fresh is None or not fresh.active or fresh.session_epoch != user.session_epoch:
        logout_user()  # what Flask-Login does with a session whose account no longer loads
        abort(current_app.login_manager.unauthorized())  # type: ignore[attr-defined]
    if (fresh.role, fresh.facility_id) == (user.role, user.facility_id):
        return False
    db.session.refresh(user)
    return True


# ---------------------------------------------------------------- audited statements, built once


def _insert_from(rows: sa.Select[Any], **columns: sa.ColumnElement[Any]) -> sa.CTE:
    """A WITH-clause INSERT of one audit event per row of ``rows``: ``columns`` are taken from it, the rest are
    bind parameters ``audit_<column>`` (see :func:`_event_params`), so the statement is the same every time."""
    table = AuditEvent.__table__
    names = [c.name for c in table.columns if c.name != "id"]
    selected = [columns[n] if n in columns else sa.bindparam(f"audit_{n}", type_=table.c[n].type) for n in names]
    return sa.insert(AuditEvent).from_select(names, rows.with_only_columns(*selected)).cte("audit_insert")


def _event_params(action: str, *, by: User, resource_type: str, given: set[str]) -> dict[str, Any]:
    values = audit.event_values(action, by=by, resource_type=resource_type)
    return {f"audit_{name}": value for name, value in values.items() if name not in given}


def _in_one_statement() -> bool:
    """PostgreSQL runs an INSERT inside a SELECT's WITH clause; SQLite does not."""
    return db.session.get_bind().dialect.name == "postgresql"


class AuditedRead:
    """An access-checked read that records an event for every row it returns.

    ``query`` has a bind parameter for every value that changes from one call to the next (passed to
    :meth:`run`) and checks the viewer's session (:func:`signed_in`); ``resource_id`` and ``patient_id`` are its
    columns naming each row's resource and patient.
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
        params = params | viewer_params(by)
        if _in_one_statement():
            params = params | _event_params(action, by=by, resource_type=self.resource_type, given=self._given)
            audit.mark_uncommitted()
            return list(db.session.execute(self._combined, params))
        result = list(db.session.execute(self.query, params))
        for row in result:
            audit.record(action, by=by, patient_id=row[-1], resource_type=self.resource_type, resource_id=row[-2])
        return result


class AuditedSearch:
    """A search that records one event with its number of results (``detail.results``), in the same statement
    on PostgreSQL; the event is written only while the viewer's session holds (:func:`signed_in`)."""

    def __init__(self, query: sa.Select[Any], *, resource_type: str, role: Role) -> None:
        self.query, self.resource_type = query, resource_type
        found = query.with_only_columns(sa.literal(1).label("one"), maintain_column_froms=True).subquery()
        results = sa.select(sa.func.count()).select_from(found).scalar_subquery()
        self._combined = query.add_cte(_insert_from(
            sa.select().where(signed_in(role)), detail=sa.func.json_build_object("results", results),
            resource_type=sa.literal(resource_type, AuditEvent.__table__.c.resource_type.type)))

    def run(self, params: dict[str, Any], action: str, *, by: User) -> list[sa.Row[Any]]:
        params = params | viewer_params(by)
        if _in_one_statement():
            events = _event_params(action, by=by, resource_type=self.resource_type, given={"detail", "resource_type"})
            audit.mark_uncommitted()
            return list(db.session.execute(self._combined, params | events))
        result = list(db.session.execute(self.query, params))
        audit.record(action, by=by, resource_type=self.resource_type, detail={"results": len(result)})
        return result


def _cached(key: Hashable, build: Callable[[], Any]) -> Any:
    with _lock:
        found = _statements.get(key)
    if found is None:
        found = build()  # two threads may both build a new shape once; the last one stays
        with _lock:
            _statements[key] = found
    return found


def audited_read(key: Hashable, role: Role, build: Callable[[], sa.Select[Any]], *, resource_type: str,
                 resource_id: Callable[[], sa.ColumnElement[Any]],
                 patient_id: Callable[[], sa.ColumnElement[Any]]) -> AuditedRead:
    """The :class:`AuditedRead` of shape ``key`` for a viewer of ``role``, built by ``build()`` the first time
    (with the session check added)."""
    return _cached(("read", key, role), lambda: AuditedRead(
        build().where(signed_in(role)), resource_type=resource_type, resource_id=resource_id(),
        patient_id=patient_id()))


def audited_search(key: Hashable, role: Role, build: Callable[[], sa.Select[Any]], *,
                   resource_type: str) -> AuditedSearch:
    """The :class:`AuditedSearch` of shape ``key`` for a viewer of ``role``, built by ``build()`` the first time."""
    return _cached(("search", key, role), lambda: AuditedSearch(
        build().where(signed_in(role)), resource_type=resource_type, role=role))
