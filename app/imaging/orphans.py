"""No orphaned objects, even when the object store goes away in the middle of an upload.

A put cut short may still have stored the object (only the answer was lost), and deleting it then fails too:
the store is gone. Such keys are written down in ``object_to_delete``, outside the request's transaction (which
is about to be rolled back), and :func:`purge` deletes them once the store answers: at the next upload and in
the background worker. A key that a committed row names after all is kept.

A process killed between storing an object and committing its row (a web worker, the DICOM listener) can note
nothing. :func:`sweep` finds such objects: under ``dicom/``, named by no row, and older than any upload takes to
commit its rows (:data:`SWEEP_GRACE`). The worker runs it hourly; ``hospital sweep-objects`` runs it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
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


#: An object younger than this may belong to an upload whose rows are not committed yet: a zip's rows commit in
#: batches of 50 within seconds, so six hours is far beyond any upload still running.
SWEEP_GRACE = timedelta(hours=6)


def _batches(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def sweep(*, older_than: timedelta = SWEEP_GRACE, batch: int = 500) -> int:
    """Delete DICOM objects that no instance row names and that were stored more than ``older_than`` ago.

    One query per ``batch`` keys; each candidate is checked once more just before it goes, so a row committed
    meanwhile keeps its object. Returns how many objects were deleted.
    """
    from app.imaging.service import object_store

    store = object_store()
    cutoff = db.utcnow() - older_than
    deleted = 0
    for keys in _batches(store.list("dicom/"), batch):
        with _own_transaction() as conn:
            named = set(conn.scalars(sa.select(Instance.object_key).where(Instance.object_key.in_(keys))))
        for key in keys:
            if key in named:
                continue
            modified = store.stat(key).modified
            if modified is None or modified > cutoff:
                continue
            with _own_transaction() as conn:
                if conn.scalar(sa.select(Instance.id).where(Instance.object_key == key)):
                    continue
            store.delete(key)
            deleted += 1
            logger.info("deleted %s: stored by an upload that was cut short, named by no row", key)
    return deleted
