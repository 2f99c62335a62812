"""The slot picker shared by booking and rescheduling: a day, then that day's free times in two groups.

A long list of every free time in two weeks is unusable on a phone; one day at a time, split at noon, is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from app.consults.service import Slot

NOON = 12


@dataclass(frozen=True)
class DayChoice:
    days: list[date]  # days that have at least one free time, for the date field's bounds
    day: date | None  # the day shown (the one asked for, else the first with free times)
    morning: list[Slot]
    afternoon: list[Slot]


def choose_day(slots: list[Slot], wanted: date | None) -> DayChoice:
    days = sorted({s.start.date() for s in slots})
    day = wanted if wanted is not None else (days[0] if days else None)
    of_day = [s for s in slots if s.start.date() == day]
    return DayChoice(days=days, day=day, morning=[s for s in of_day if s.start.hour < NOON],
                     afternoon=[s for s in of_day if s.start.hour >= NOON])


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
