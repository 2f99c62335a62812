"""The platform's clock: one place that says what time it is, so tests move time instead of waiting for it.

Everything that stamps or compares times asks :func:`now` (``app.db.utcnow`` does); tests call :func:`advance`
or :func:`set_to`, and :func:`reset` when done (the ``clock`` fixture does that).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_fixed: datetime | None = None
_shift = timedelta(0)


def now() -> datetime:
    """Timezone-aware UTC now (or the moment a test set)."""
    return (_fixed if _fixed is not None else datetime.now(UTC)) + _shift


def timestamp() -> float:
    """:func:`now` as seconds since the epoch (for signers and tokens that count in seconds)."""
    return now().timestamp()


def advance(delta: timedelta) -> None:
    """Move the clock forward (tests)."""
    global _shift
    _shift += delta


def set_to(moment: datetime) -> None:
    """Stop the clock at ``moment`` (tests)."""
    global _fixed, _shift
    _fixed, _shift = moment, timedelta(0)


def reset() -> None:
    """Back to the real clock."""
    global _fixed, _shift
    _fixed, _shift = None, timedelta(0)
