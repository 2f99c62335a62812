"""Event-stream wake-ups: an open stream sleeps until its consult has news, then reads the database at once.

Signaling messages live in the database, so any worker can serve any stream; this module only decides *when*
a stream looks. Within a process a condition variable wakes the streams the moment a signal is committed.
Across gunicorn workers one listener thread per worker turns the other workers' commits into the same local
wake-ups: Redis pub/sub when ``REDIS_URL`` is set, otherwise PostgreSQL ``NOTIFY`` (sent inside the signal's
transaction, so it is delivered exactly when the rows become visible). On SQLite (one process) the local
wake-up is all there is; a stream also re-reads the database every ``safety_seconds`` in case a wake-up
was lost (a listener reconnecting, say).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

logger = logging.getLogger(__name__)

CHANNEL = "hospital_consult"
REDIS_PATTERN = "hospital:consult:*"
LOCAL_ONLY_POLL_SECONDS = 0.25  # no cross-worker channel: look often (SQLite with several workers)
SAFETY_POLL_SECONDS = 2.0

_cond = threading.Condition()
_versions: dict[int, int] = {}  # consult session id -> wake-up count, only while someone listens
_listeners: dict[int, int] = {}
_channel_started: str | None = None
_channel_lock = threading.Lock()
_stop = threading.Event()
_subscribed = threading.Event()  # the listener thread receives other workers' wake-ups
_thread: threading.Thread | None = None


def notify(session_id: int) -> None:
    """Wake this process's streams of one consult (cheap when nobody listens)."""
    with _cond:
        if session_id in _versions:
            _versions[session_id] += 1
            _cond.notify_all()


class Listener:
    """One stream's place in the queue of wake-ups; created before its first read so no news is missed."""

    def __init__(self, session_id: int, safety_seconds: float) -> None:
        self.session_id = session_id
        self.safety_seconds = safety_seconds
        self._seen = _versions[session_id]

    def wait(self, timeout: float) -> bool:
        """Sleep until there is news or ``timeout`` (capped by the safety poll); True if woken."""
        deadline = time.monotonic() + min(timeout, self.safety_seconds)
        with _cond:
            while _versions[self.session_id] == self._seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                _cond.wait(remaining)
            self._seen = _versions[self.session_id]
            return True


@contextmanager
def listen(session_id: int, *, channel: str | None) -> Iterator[Listener]:
    """Register a stream for wake-ups of one consult. ``channel``: a Redis URL, a PostgreSQL URL, or None."""
    safety = LOCAL_ONLY_POLL_SECONDS
    if channel and _ensure_channel(channel):
        safety = SAFETY_POLL_SECONDS
    with _cond:
        _versions.setdefault(session_id, 0)
        _listeners[session_id] = _listeners.get(session_id, 0) + 1
    try:
        yield Listener(session_id, safety)
    finally:
        with _cond:
            _listeners[session_id] -= 1
            if not _listeners[session_id]:
                del _listeners[session_id], _versions[session_id]


def pg_notify(connection: sa.Connection | sa.orm.Session, session_id: int) -> None:
    """Queue a cross-worker wake-up in the current transaction (PostgreSQL delivers it on commit)."""
    connection.execute(sa.select(sa.func.pg_notify(CHANNEL, str(session_id))))


def _ensure_channel(url: str) -> bool:
    """Start this worker's listener thread once; False if no cross-worker channel exists for ``url``."""
    global _channel_started, _thread
    if _channel_started == url:
        return True
    if not url.startswith(("redis", "postgresql")):
        return False
    with _channel_lock:
        if _channel_started != url:
            target = _redis_loop if url.startswith("redis") else _postgres_loop
            _stop.clear()
            _subscribed.clear()
            _thread = threading.Thread(target=target, args=(url,), name="consult-wake", daemon=True)
            _thread.start()
            _channel_started = url
    return True


def subscribed(timeout: float) -> bool:
    """Wait until this worker's listener thread receives other workers' wake-ups; False after ``timeout``."""
    return _subscribed.wait(timeout)


def stop() -> None:
    """End this process's listener thread (tests, before their database goes away)."""
    global _channel_started, _thread
    with _channel_lock:
        _stop.set()
        if _thread is not None:
            _thread.join(5)
        _thread, _channel_started = None, None
        _subscribed.clear()


def _lost(what: str, failures: int) -> None:
    # Every stream still re-reads the database every SAFETY_POLL_SECONDS, so an outage only slows wake-ups.
    if failures == 1:
        logger.warning("consult wake-up listener lost %s; reconnecting", what)
    _stop.wait(min(30, failures))


def _postgres_loop(url: str) -> None:
    import psycopg

    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    failures = 0
    while not _stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                _subscribed.set()
                failures = 0
                while not _stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        if note.payload.isdigit():
                            notify(int(note.payload))
        except Exception:  # noqa: BLE001  (a database restart must not end the worker's wake-ups)
            _subscribed.clear()
            failures += 1
            _lost("its database connection", failures)


def _redis_loop(url: str) -> None:
    import redis

    failures = 0
    while not _stop.is_set():
        try:
            pubsub = redis.Redis.from_url(url, health_check_interval=30).pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(REDIS_PATTERN)
            _subscribed.set()
            failures = 0
            while not _stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message:
                    tail = message["channel"].rsplit(b":", 1)[-1]
                    if tail.isdigit():
                        notify(int(tail))
            pubsub.close()
        except Exception:  # noqa: BLE001
            _subscribed.clear()
            failures += 1
            _lost("Redis", failures)
