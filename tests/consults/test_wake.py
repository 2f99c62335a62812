"""Event-stream wake-ups: within the worker at once, and from other workers through PostgreSQL NOTIFY."""

from __future__ import annotations

import threading
import time

import psycopg
import sqlalchemy as sa

from app.consults import wake


def _pg_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_a_notify_from_another_connection_wakes_a_waiting_stream(engine):
    url = _pg_url(engine)
    with wake.listen(987_001, channel=url) as listener:
        assert wake.subscribed(5)  # the listener thread has its LISTEN in place
        assert listener.wait(0.2) is False  # nothing happened: it sleeps the whole time
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        started = time.monotonic()

        def other_worker() -> None:
            time.sleep(0.2)  # a real pause: the notify comes while the stream is already waiting
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (wake.CHANNEL, "987001"))

        threading.Thread(target=other_worker).start()
        assert listener.wait(1.5) is True
        assert time.monotonic() - started < 1.0


def test_local_wake_reaches_only_that_consult_and_is_not_lost_between_reads():
    with wake.listen(987_002, channel=None) as mine, wake.listen(987_003, channel=None) as other:
        wake.notify(987_002)  # arrives while the stream is busy reading: the next wait returns at once
        assert mine.wait(5) is True
        assert other.wait(0.05) is False
        assert mine.wait(0.05) is False
    wake.notify(987_002)  # nobody listens any more: nothing is kept
    assert 987_002 not in wake._versions


def test_with_redis_a_publish_from_another_worker_wakes_a_waiting_stream():
    import redis

    url = "redis://127.0.0.1:6379/13"
    with wake.listen(987_004, channel=url) as listener:
        assert wake.subscribed(5)  # the listener thread has subscribed
        started = time.monotonic()
        redis.Redis.from_url(url).publish("hospital:consult:987004", b"1")
        assert listener.wait(1.5) is True
        assert time.monotonic() - started < 1.0
