"""C-GET SCP: a peer retrieves studies over its own association (no address needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.imaging.dimse.retrieve import RetrieveError, requested, send


def respond(event: Any, *, facility_id: int, calling: str) -> Iterator[Any]:
    """Number of sub-operations, then (status, dataset) pairs, as pynetdicom's C-GET expects."""
    try:
        found = requested(event, facility_id=facility_id, calling=calling, action="imaging.dicom.get")
    except RetrieveError as exc:
        yield 1
        yield exc.answer, None
        return
    yield len(found)
    yield from send(event, found)
