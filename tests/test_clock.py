"""One clock for the platform: what is stamped follows ``app.clock``, so tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.audit import service as audit


def test_stamps_follow_the_platform_clock(app_ctx, factories, clock):
    moment = datetime(2031, 3, 1, 8, 30, tzinfo=UTC)
    clock.set_to(moment)
    event = audit.record("test.clock", by=factories.nurse())
    assert event.occurred_at == moment
    clock.advance(timedelta(minutes=5))
    assert audit.record("test.clock", by=None).occurred_at == moment + timedelta(minutes=5)
