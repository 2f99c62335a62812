"""Database plumbing: declarative base, reusable column types, the request-scoped session.

Plain SQLAlchemy 2 (no Flask extension) so the DICOM listener and the CLI share models with the web app.
"""

from __future__ import annotations

import enum
import logging
import select
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from app import clock

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now (from :mod:`app.clock`, which tests can move); every stored timestamp is UTC."""
    return clock.now()


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware, on SQLite too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use app.db.utcnow()")
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


IntPk = Annotated[int, so.mapped_column(primary_key=True)]
UtcTimestamp = Annotated[datetime, so.mapped_column(UtcDateTime(), default=utcnow)]


class Base(so.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}


class TimestampMixin:
    created_at: so.Mapped[UtcTimestamp]
    updated_at: so.Mapped[datetime] = so.mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


session: so.scoped_session[so.Session] = so.scoped_session(so.sessionmaker(expire_on_commit=False))
"""The one session per thread (per request in Flask); removed at app-context teardown."""


IDLE_PING_SECONDS = 30
"""A pooled connection unused for longer than this is pinged before it is handed out (see :func:`make_engine`)."""
RECYCLE_SECONDS = 1800


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; SQLite gets foreign keys, WAL and a busy timeout so it behaves under two processes.

    A server connection is checked at checkout without a round trip while it is in use (see
    :func:`_alive_at_checkout`) instead of with ``pool_pre_ping``, which costs one per request.
    """
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs.update(pool_size=10, max_overflow=10, pool_recycle=RECYCLE_SECONDS)
    engine = sa.create_engine(url, **kwargs)
    if not url.startswith("sqlite"):
        sa.event.listen(engine, "checkout", _alive_at_checkout)
        sa.event.listen(engine, "checkin", _idle_since)
        sa.event.listen(engine, "connect", _idle_since)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


def _idle_since(_dbapi_conn: Any, record: Any, *_args: Any) -> None:
    if record is not None:
        record.info["idle_since"] = time.monotonic()


def _alive_at_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Refuse a pooled connection the server has closed; the pool then opens a new one.

    A connection used in the last :data:`IDLE_PING_SECONDS` is checked by polling its socket, which costs no round
    trip: an idle healthy connection has nothing to read, while one the server ended (restart, terminated backend,
    idle timeout) has its error or end-of-file waiting. One idle for longer is pinged (a silent network drop sends
    nothing), and ``pool_recycle`` bounds any connection's age. Should a dead connection still be handed out, its
    first statement fails, and SQLAlchemy invalidates it and every older connection of the pool.
    """
    idle = time.monotonic() - record.info.get("idle_since", 0.0)
    try:
        if idle > IDLE_PING_SECONDS:
            with dbapi_conn.cursor() as cur:  # autocommit for the ping, as pool_pre_ping does
                was, dbapi_conn.autocommit = dbapi_conn.autocommit, True
                try:
                    cur.execute("SELECT 1")
                finally:
                    dbapi_conn.autocommit = was
            return
        poller = select.poll()  # not select.select, which cannot take descriptors above 1023
        poller.register(dbapi_conn.fileno(), select.POLLIN)
        readable = poller.poll(0)
    except Exception as exc:  # noqa: BLE001 - any failure here means the connection is unusable
        raise sa.exc.DisconnectionError(str(exc)) from exc
    if readable:
        raise sa.exc.DisconnectionError("the server closed the connection")


def hold_row(obj: Any) -> None:
    """Where ``SELECT ... FOR UPDATE`` locked nothing (SQLite ignores it), take the database's write lock now with
    a no-op UPDATE of ``obj``'s row, so two transactions that check-then-write on it run one after the other and
    the second reads what the first committed. On PostgreSQL the row lock was already taken: nothing to do."""
    if session.get_bind().dialect.name != "sqlite":
        return
    table = sa.inspect(obj).mapper.local_table
    key = sa.inspect(obj).mapper.primary_key[0]
    session.execute(sa.update(table).where(key == sa.inspect(obj).identity[0]).values({key.name: key}))


def import_models() -> None:
    """Import every domain's models so the metadata is complete (Alembic, tests)."""
    import app.audit.models  # noqa: F401
    import app.auth.models  # noqa: F401
    import app.auth.oauth_models  # noqa: F401
    import app.auth.service_credentials  # noqa: F401
    import app.consults.models  # noqa: F401
    import app.facilities.models  # noqa: F401
    import app.imaging.models  # noqa: F401
    import app.notify.models  # noqa: F401
    import app.patients.models  # noqa: F401
    import app.pharmacy.models  # noqa: F401
    import app.prescriptions.models  # noqa: F401
    import app.reading.models  # noqa: F401


View = TypeVar("View", bound=Callable[..., Any])
T = TypeVar("T")
_AUTOCOMMIT = "autocommit"


def autocommit_reads(view: View) -> View:
    """Mark a view that only reads (plus the audit rows of what it read): see :func:`begin_autocommit`."""
    view.autocommit_reads = True  # type: ignore[attr-defined]
    return view


def begin_autocommit() -> None:
    """Run this unit of work without BEGIN and COMMIT: each statement is its own transaction.

    This saves two of the few database round trips of a read such as a DICOMweb frame. A read needs no
    transaction around it, and its audit row is still stored before any of the data leaves: the view commits
    (flushes the INSERT, durable at once) before it builds the response. A flush that writes more than one
    row gets a real transaction (see :func:`_transaction_for_larger_flushes`), so nothing is ever half-written.
    A session already joined to an outer transaction (the test rig) keeps it.
    """
    sess = session()
    if isinstance(sess.get_bind(), sa.Engine) and not sess.in_transaction():
        sess.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        sess.info[_AUTOCOMMIT] = True


def autocommitting(sess: so.Session) -> bool:
    """Whether ``sess`` runs without a transaction just now: each statement it sends is stored at once."""
    return bool(sess.info.get(_AUTOCOMMIT))


@sa.event.listens_for(so.Session, "before_flush")
def _transaction_for_larger_flushes(sess: so.Session, _ctx: Any, _instances: Any) -> None:
    if not sess.info.get(_AUTOCOMMIT) or (len(sess.new) <= 1 and not sess.dirty and not sess.deleted):
        return
    conn = sess.connection()
    # Back to the driver's transactional mode: BEGIN goes with the first statement of the flush, and the
    # commit that follows (SQLAlchemy calls the driver's commit in autocommit mode too) sends COMMIT.
    conn.dialect.set_isolation_level(conn.connection.dbapi_connection, conn.default_isolation_level)
    sess.info.pop(_AUTOCOMMIT)


@sa.event.listens_for(so.Session, "after_transaction_end")
def _autocommit_ends(sess: so.Session, transaction: so.SessionTransaction) -> None:
    if transaction.parent is None:
        sess.info.pop(_AUTOCOMMIT, None)


def read_once(key: tuple[Any, ...], load: Callable[[], T], *, keep: Callable[[T], bool] | None = None) -> T:
    """``load()``, kept for the rest of a GET or HEAD request under ``key`` (if ``keep`` says so of the value).

    For lists several panels of one page show (a chart's scans, its prescriptions): the page reads them, and
    writes the audit row of that read, once. A GET changes nothing, so the list cannot go stale within it;
    other methods and code outside a request always load afresh."""
    from flask import g, has_request_context, request

    if not has_request_context() or request.method not in ("GET", "HEAD"):
        return load()
    kept: dict[tuple[Any, ...], Any] = g.setdefault("read_once", {})
    if key in kept:
        return kept[key]
    value = load()
    if keep is None or keep(value):
        kept[key] = value
    return value


def discard_session() -> None:
    """End the request's session. If its connection died meanwhile (a database restart), the rollback on
    close fails; the pool has then dropped that connection, so the session is simply forgotten and the next
    request starts on a fresh one."""
    try:
        session.remove()
    except sa.exc.DBAPIError as exc:
        logger.warning("database connection lost while closing a session: %s", type(exc).__name__)
        session.registry.clear()


def rollback() -> None:
    """Undo the current unit of work, keeping its denial/failure audit events (see ``app.audit.service``)."""
    from app.audit.service import rollback_keeping_durable

    rollback_keeping_durable(session())


def str_enum(enum_cls: type[enum.Enum], length: int = 16) -> sa.Enum:
    """Store an enum by its *value* ('clinic_staff'), as a checked VARCHAR on every database."""
    return sa.Enum(enum_cls, native_enum=False, length=length, validate_strings=True,
                   values_callable=lambda members: [m.value for m in members])
