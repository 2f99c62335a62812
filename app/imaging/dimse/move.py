"""C-MOVE SCP: a peer asks for studies to be sent to a known AE (by its host and port, never its own word).

The destination must be an active peer of the same clinic with an address: the studies of one clinic are
never sent to another's machines, and no address comes from the request itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.imaging.dimse.peers import Directory
from app.imaging.dimse.retrieve import RetrieveError, requested, send

MAX_CONTEXTS = 128  # presentation contexts in one association (PS3.8)


def respond(event: Any, *, facility_id: int | None, calling: str, peers: Directory,
            refused: Dataset | None = None) -> Iterator[Any]:
    """Destination, number of sub-operations, then (status, dataset) pairs, as pynetdicom's C-MOVE expects.

    pynetdicom asks for the destination first and answers 0xA801 (Move Destination unknown) by itself, without a
    comment; any other failure (``refused``, a bad identifier) is said as the status of one sub-operation.
    """
    title = event.move_destination
    destination = peers.get((title if isinstance(title, str) else title.decode(errors="replace")).strip())
    if facility_id is None or destination is None or destination.facility_id != facility_id \
            or not destination.host or not destination.port:
        yield None, None
        return
    try:
        if refused is not None:
            raise RetrieveError(refused)
        found = requested(event, facility_id=facility_id, calling=calling, action="imaging.dicom.move")
    except RetrieveError as exc:
        yield destination.host, destination.port, {"contexts": [build_context(Verification)]}  # nothing to send
        yield 1
        yield exc.answer, None
        return
    syntaxes: dict[tuple[str, str], None] = {(i.sop_class_uid, i.transfer_syntax_uid): None for i in found}
    contexts = [build_context(sop, [ts]) for sop, ts in list(syntaxes)[:MAX_CONTEXTS]]
    yield destination.host, destination.port, {"contexts": contexts}
    yield len(found)
    yield from send(event, found)
