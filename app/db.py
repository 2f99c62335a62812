"""Database plumbing: declarative base, reusable column types, the request-scoped session.

Plain SQLAlchemy 2 (no Flask extension) so the DICOM listener and the CLI share models with the web app.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now; every stored timestamp is UTC."""
    return datetime.now(UTC)


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


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; SQLite gets foreign keys, WAL and a busy timeout so it behaves under two processes."""
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


def import_models() -> None:
    """Import every domain's models so the metadata is complete (Alembic, tests)."""
    import app.audit.models  # noqa: F401
    import app.auth.models  # noqa: F401
    import app.auth.oauth_models  # noqa: F401
    import app.consults.models  # noqa: F401
    import app.facilities.models  # noqa: F401
    import app.imaging.models  # noqa: F401
    import app.notify.models  # noqa: F401
    import app.patients.models  # noqa: F401
    import app.pharmacy.models  # noqa: F401
    import app.prescriptions.models  # noqa: F401


def rollback() -> None:
    """Undo the current unit of work, keeping its denial/failure audit events (see ``app.audit.service``)."""
    from app.audit.service import rollback_keeping_durable

    rollback_keeping_durable(session())


def str_enum(enum_cls: type[enum.Enum], length: int = 16) -> sa.Enum:
    """Store an enum by its *value* ('clinic_staff'), as a checked VARCHAR on every database."""
    return sa.Enum(enum_cls, native_enum=False, length=length, validate_strings=True,
                   values_callable=lambda members: [m.value for m in members])
