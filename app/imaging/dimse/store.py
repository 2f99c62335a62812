"""C-STORE SCP: what a clinic's scanner sends is stored, committed, then answered.

Success only once the instance's object is stored and its row committed; when either fails, or its outcome is
unknown, the answer is a failure (with an Error Comment) so that the sender sends it again.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from app.imaging.dimse.status import CANNOT_UNDERSTAND, CONFLICT, OUT_OF_RESOURCES, SUCCESS, failure
from app.imaging.ingest import index_and_commit, stage_one
from app.imaging.service import TRY_AGAIN

logger = logging.getLogger(__name__)


def respond(event: Any, *, facility_id: int | None, calling: str) -> Any:
    """Store one instance (inside an app context); the status to answer."""
    try:
        # The bytes as received (meta + dataset), never decoded; the header is parsed up to pixel data.
        data = event.encoded_dataset()
        result = stage_one(io.BytesIO(data), filename=f"c-store from {calling}", by=None, source="c-store",
                           size=len(data))
        del data
        index_and_commit([result], by=None, facility_id=facility_id, actor_name=f"DICOM AE {calling}")
    except Exception:
        logger.exception("C-STORE from %s failed", calling)
        return failure(OUT_OF_RESOURCES, TRY_AGAIN)
    if result.ok:
        return SUCCESS
    logger.info("C-STORE from %s rejected: %s", calling, result.reason)
    if result.status == "conflict":
        return failure(CONFLICT, result.reason)
    if result.transient:
        return failure(OUT_OF_RESOURCES, result.reason)
    return failure(CANNOT_UNDERSTAND, result.reason)
