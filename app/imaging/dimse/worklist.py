"""Modality Worklist C-FIND SCP (placeholder until imaging orders are answered)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def respond(event: Any, *, facility_id: int, calling: str) -> Iterator[Any]:
    yield from ()
