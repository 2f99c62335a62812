"""No orphaned objects, even when the object store goes away in the middle of an upload.

A put cut short may still have stored the object (only the answer was lost), and deleting it then fails too:
the store is gone. Such keys are written down in ``object_to_delete``, outside the request's transaction (which
is about to be rolled back), and :func:`purge` deletes them once the store answers: at the next upload and in
the background worker. A key that a committed row names after all is kept.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from app import db
from app.imaging.models import Instance, ObjectToDelete

logger = logging.getLogger(__name__)


def delete_or_remember(key: str) -> None:
    """Delete an object whose row will not be committed; if the store cannot be reached, note it for later."""
    from app.imaging.service import object_store

    try:
        object_store().delete(key)
        return
    except Exception as exc:  # noqa: BLE001 - any failure: the store cannot confirm the delete
        logger.warning("object store unreachable, %s noted for deletion later: %s", key, exc)
    with _own_transaction() as conn:  # the caller's transaction is about to be rolled back
        exists = conn.scalar(sa.select(ObjectToDelete.object_key).where(ObjectToDelete.object_key == key))
        if not exists:
            conn.execute(sa.insert(ObjectToDelete).values(object_key=key, noted_at=db.utcnow()))


def _own_transaction() -> Any:
    bind = db.session.get_bind()
    engine = bind.engine if isinstance(bind, sa.Connection) else bind
    return engine.begin()


def purge(*, limit: int = 200) -> int:
    """Delete the noted objects that no row names; stop at the first failure (the store is still away).

    Works in its own transactions, apart from the caller's; returns how many objects were deleted.
    """
    from app.imaging.service import object_store

    with _own_transaction() as conn:
        keys = list(conn.scalars(sa.select(ObjectToDelete.object_key).order_by(ObjectToDelete.noted_at)
                                 .limit(limit)))
    deleted = 0
    for key in keys:
        with _own_transaction() as conn:
            in_use = conn.scalar(sa.select(Instance.id).where(Instance.object_key == key))
            if not in_use:
                try:
                    object_store().delete(key)
                except Exception as exc:  # noqa: BLE001 - try again next time
                    logger.info("object store still unreachable, %s kept for later: %s", key, exc)
                    break
                deleted += 1
            conn.execute(sa.delete(ObjectToDelete).where(ObjectToDelete.object_key == key))
    return deleted
