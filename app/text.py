"""Checks for free text people type (questions, reports, summaries): what PostgreSQL cannot store (NUL) and
what no keyboard sends (other control characters) is refused with a plain message instead of a failed write."""

from __future__ import annotations

ALLOWED_CONTROLS = "\n\r\t"


def problem(value: str, max_len: int) -> str | None:
    """The message to show for ``value``, or None when it can be stored."""
    if len(value) > max_len:
        return f"Use at most {max_len:,} characters."
    if any(ord(c) < 32 and c not in ALLOWED_CONTROLS for c in value):
        return "Remove control characters."
    return None
