"""The slot picker shared by booking and rescheduling: a day, then that day's free times in two groups.

A long list of every free time in two weeks is unusable on a phone; one day at a time, split at noon, is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from app.consults.service import Slot

NOON = 12


@dataclass(frozen=True)
class DayChoice:
    days: list[date]  # days that have at least one free time, for the date field's bounds
    day: date | None  # the day shown (the one asked for, else the first with free times)
    morning: list[Slot]
    afternoon: list[Slot]


def choose_day(slots: list[Slot], wanted: date | None, zone: tzinfo) -> DayChoice:
    """Days, and morning and afternoon, as the reader lives them: in their zone ``zone``."""
    local = [(s, s.start.astimezone(zone)) for s in slots]
    days = sorted({at.date() for _s, at in local})
    day = wanted if wanted is not None else (days[0] if days else None)
    of_day = [(s, at) for s, at in local if at.date() == day]
    return DayChoice(days=days, day=day, morning=[s for s, at in of_day if at.hour < NOON],
                     afternoon=[s for s, at in of_day if at.hour >= NOON])


def parse_day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw or "")
    except ValueError:
        return None


def parse_start(raw: str | None) -> datetime | None:
    """A slot start as the picker sends it (ISO 8601 with its zone); anything else is no choice."""
    try:
        start = datetime.fromisoformat(raw or "")
    except ValueError:
        return None
    return start if start.tzinfo is not None else None
