"""The audit trail's hash chain: sealing new events into it, and verifying the whole trail.

Each event's link is ``SHA-256(previous link || canonical form of the event)``, in id order, so changing,
deleting or slipping in an event breaks every link after it. Seals record each round's last link (the head),
and the heads go to the outside collector with the events (``app.audit.export``), so even a rewrite of every
link is caught against a copy the database's owner cannot reach.

Why a sealing step and not a hash written with each event: on PostgreSQL many transactions write events at
once (reads write theirs inside the SELECT itself, see ``app.read_path``). Chaining at write time needs the
previous event's hash, that is one lock taken by every request and held until it commits: the whole hospital
would queue behind its slowest transaction. Here requests write events as before, and a sealer (the background
worker, or ``hospital audit-seal``) chains them afterwards in blocks.

The one subtlety is the horizon. Ids come from a sequence, and a transaction that drew id 100 may commit after
the one that drew 101. The sealer reads the sequence's last value S, then waits until every transaction that
was writing audit events at that moment has ended (found by their locks in ``pg_locks``, as CREATE INDEX
CONCURRENTLY does). Every INSERT takes its table lock before it draws an id, so from then on each id up to S is
committed or never will be, and the events up to S are chained once and for all. A long transaction delays a
seal, never a request.
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app import db
from app.audit.models import AuditEvent, AuditLink, AuditSeal

GENESIS = bytes(32)
"""The link before the first event."""
SEAL_LOCK = 0x61756469  # "audi": one sealer at a time, whichever node runs it
BLOCK = 20_000
"""Events per seal at most, so one round's transaction stays short however far behind the sealer is."""

_EVENTS = AuditEvent.__table__
_LINKS = AuditLink.__table__
_COLUMNS = [c.name for c in _EVENTS.columns]
LATER_COLUMNS = frozenset({"on_behalf_of"})
"""Columns added after events were first sealed: hashed only when they hold a value, so every earlier link (and
every event that leaves them empty) keeps its hash, while a value set, changed or removed later breaks the link."""


class SealWaitTimeout(RuntimeError):
    """A transaction that writes audit events has been open for longer than the sealer waits."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, enum.Enum):
        return value.value
    return value


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes an event's link hashes: every column, in table order, as compact JSON with sorted keys.

    A set :data:`LATER_COLUMNS` value is appended as a ``[name, value]`` pair, so it cannot pass for another column.
    """
    values = [_plain(event[name]) for name in _COLUMNS if name not in LATER_COLUMNS]
    values += [[name, _plain(event[name])] for name in _COLUMNS if name in LATER_COLUMNS and event[name] is not None]
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev: bytes, event: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(prev + canonical(event)).digest()


# ---------------------------------------------------------------- sealing


@dataclass(frozen=True)
class SealReport:
    events: int
    seals: int
    sealed_through: int


def _horizon(*, max_wait: float) -> int | None:
    """The highest event id that no running transaction can still commit (see the module's docstring)."""
    session = db.session()
    if session.get_bind().dialect.name != "postgresql":
        # SQLite has one writer at a time: rows it cannot see yet will get higher ids.
        return session.scalar(sa.select(sa.func.max(AuditEvent.id)))
    last = session.scalar(sa.text("SELECT pg_sequence_last_value(pg_get_serial_sequence('audit_event', 'id'))"))
    writers = session.scalars(sa.text(
        "SELECT DISTINCT virtualtransaction FROM pg_locks WHERE locktype = 'relation' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND relation = 'audit_event'::regclass AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()")).all()
    deadline, pause = time.monotonic() + max_wait, 0.005
    while writers:
        writers = session.scalars(sa.text("SELECT DISTINCT virtualtransaction FROM pg_locks "
                                          "WHERE virtualtransaction = ANY(:writers)"), {"writers": writers}).all()
        if writers and time.monotonic() > deadline:
            raise SealWaitTimeout(f"{len(writers)} transaction(s) writing audit events still open after {max_wait} s")
        if writers:
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
    return last


def _may_seal() -> bool:
    session = db.session()
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(SEAL_LOCK))))


def seal(*, max_wait: float = 10.0) -> SealReport:
    """Chain every event that can no longer change order into the trail; the caller commits.

    :raises SealWaitTimeout: when a transaction writing events stays open longer than ``max_wait`` seconds.
    """
    session = db.session()
    events = seals = 0
    last = session.scalars(sa.select(AuditSeal).order_by(AuditSeal.id.desc()).limit(1)).first()
    after, head = (last.last_event_id, last.head_hash) if last else (0, GENESIS)
    if not _may_seal():
        return SealReport(0, 0, after)
    horizon = _horizon(max_wait=max_wait)
    while horizon is not None and horizon > after:
        rows = session.execute(sa.select(_EVENTS).where(_EVENTS.c.id > after, _EVENTS.c.id <= horizon)
                               .order_by(_EVENTS.c.id).limit(BLOCK)).mappings().all()
        if not rows:
            break
        prev, links = head, []
        for row in rows:
            head = link(head, row)
            links.append({"event_id": row["id"], "hash": head})
        through = horizon if len(rows) < BLOCK else rows[-1]["id"]
        session.execute(sa.insert(AuditLink), links)
        session.add(AuditSeal(after_event_id=after, last_event_id=through, event_count=len(rows),
                              prev_hash=prev, head_hash=head))
        session.flush()
        events, seals, after = events + len(rows), seals + 1, through
    return SealReport(events, seals, after)


# ---------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Break:
    """The first place where the trail no longer matches its chain."""

    event_id: int
    reason: str
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class Verification:
    events_checked: int
    seals: int
    sealed_through: int
    last_sealed_at: datetime | None
    unsealed: int
    first_break: Break | None

    @property
    def intact(self) -> bool:
        return self.first_break is None


def _rows_up_to(horizon: int) -> Iterator[Mapping[str, Any]]:
    key = sa.func.coalesce(_EVENTS.c.id, _LINKS.c.event_id)
    query = (sa.select(_EVENTS, _LINKS.c.event_id.label("link_event_id"), _LINKS.c.hash.label("link_hash"))
             .select_from(_EVENTS.join(_LINKS, _LINKS.c.event_id == _EVENTS.c.id, full=True))
             .where(key <= horizon).order_by(key).execution_options(yield_per=5000))
    yield from db.session.execute(query).mappings()


def _seal_chain_break(seals: list[AuditSeal]) -> Break | None:
    head, through = GENESIS, 0
    for number, s in enumerate(seals, start=1):
        if s.prev_hash != head or s.after_event_id != through:
            return Break(s.after_event_id + 1, f"Seal {number} does not follow the seal before it: "
                                               "a seal was removed or replaced.")
        head, through = s.head_hash, s.last_event_id
    return None


def _head_break(seal_row: AuditSeal, head: bytes) -> Break | None:
    if head == seal_row.head_hash:
        return None
    return Break(seal_row.last_event_id, "The hash links were rewritten: they no longer lead to the head recorded "
                                         "when this part of the trail was sealed.")


def verify() -> Verification:
    """Recompute every link of the sealed trail and report the first one that no longer matches."""
    session = db.session()
    seals = list(session.scalars(sa.select(AuditSeal).order_by(AuditSeal.id)))
    through = seals[-1].last_event_id if seals else 0
    unsealed = session.scalar(sa.select(sa.func.count()).where(AuditEvent.id > through)) or 0
    checked, found = 0, _seal_chain_break(seals)
    pending, head = iter(seals), GENESIS
    current = next(pending, None)
    rows = _rows_up_to(through) if found is None else iter(())
    for row in rows:
        event_id = row["id"] if row["id"] is not None else row["link_event_id"]
        while current is not None and event_id > current.last_event_id and found is None:
            found = _head_break(current, head)
            current = next(pending, None)
        if found:
            break
        if row["link_hash"] is None:
            found = Break(event_id, "This event was added after its part of the trail was sealed.",
                          row["occurred_at"])
        elif row["id"] is None:
            found = Break(event_id, "This event was deleted after it was sealed.")
        else:
            head = link(head, row)
            if head != row["link_hash"]:
                found = Break(event_id, "This event (or its hash link) was changed after it was sealed.",
                              row["occurred_at"])
        if found:
            break
        checked += 1
    while current is not None and found is None:  # the seals after the last row
        found = _head_break(current, head)
        current = next(pending, None)
    return Verification(events_checked=checked, seals=len(seals), sealed_through=through,
                        last_sealed_at=seals[-1].sealed_at if seals else None, unsealed=unsealed, first_break=found)
