"""Cross-worker state in Redis (when ``REDIS_URL`` is set): rate-limit counters and signaling wake-ups.

Signaling messages themselves live in the database, so every gunicorn worker sees them with or without Redis;
Redis only makes waiting event streams wake at once instead of on their next database poll.
"""

from __future__ import annotations

import functools

import redis
from flask import current_app


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def client() -> redis.Redis:
    return _client(current_app.config["REDIS_URL"])


def hit(key: str, *, window: int) -> int:
    """Count one event in a fixed window; returns the count so far."""
    r = client()
    pipe = r.pipeline()
    pipe.incr(f"hospital:{key}")
    pipe.expire(f"hospital:{key}", window, nx=True)
    count, _ = pipe.execute()
    return int(count)


def wake(session_id: int) -> None:
    client().publish(f"hospital:consult:{session_id}", b"1")


def waiter(session_id: int) -> redis.client.PubSub:
    """Subscribe to a consult's wake-ups (caller closes it)."""
    pubsub = client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"hospital:consult:{session_id}")
    return pubsub
