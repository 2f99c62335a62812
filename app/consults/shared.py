"""Cross-worker state in Redis (when ``REDIS_URL`` is set): signaling wake-ups.

Signaling messages themselves live in the database, so every gunicorn worker sees them with or without Redis;
Redis only makes waiting event streams wake at once instead of on their next database poll. So Redis going away
costs speed, never a message: a wake-up that cannot be published is dropped (streams on other servers read the
database on their safety poll). Rate limits are Flask-Limiter's (app.extensions.limiter), in the same Redis.
"""

from __future__ import annotations

import functools
import logging

import redis
from flask import current_app

logger = logging.getLogger(__name__)


@functools.cache
def _client(url: str) -> redis.Redis:
    # Short timeouts: a request must not hang on a Redis that is gone; the callers fall back.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)


def client() -> redis.Redis:
    return _client(current_app.config["REDIS_URL"])


def wake(session_id: int) -> None:
    """Wake the consult's streams on every server; without Redis they find the news on their next poll."""
    try:
        client().publish(f"hospital:consult:{session_id}", b"1")
    except redis.RedisError as exc:
        logger.warning("Redis unreachable, consult %s wake-up left to the streams' database poll: %s",
                       session_id, exc)


def waiter(session_id: int) -> redis.client.PubSub:
    """Subscribe to a consult's wake-ups (caller closes it)."""
    pubsub = client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"hospital:consult:{session_id}")
    return pubsub
