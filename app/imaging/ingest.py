"""Batches of files into the store: objects first, then their rows a batch at a time; one bad file never
sinks the rest.

Zip archives are read entry by entry (an entry up to 16 MiB in memory, larger ones into a temp file, never the
whole archive), with limits against zip bombs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import sqlalchemy as sa
from flask import current_app

from app import db
from app.auth.models import User
from app.errors import AppError
from app.imaging import orphans, service
from app.imaging.service import IngestResult

logger = logging.getLogger(__name__)
MAX_RATIO = 200  # uncompressed / compressed, beyond which an entry is treated as a zip bomb
COPY_CHUNK = 1024 * 1024
SPOOL_BYTES = 16 * 1024 * 1024  # a zip entry up to this size is unpacked in memory, larger ones to a temp file


class TooLarge(Exception):
    pass


def copy_limited(src: BinaryIO, dst: BinaryIO, limit: int) -> int:
    total = 0
    while chunk := src.read(COPY_CHUNK):
        total += len(chunk)
        if total > limit:
            raise TooLarge
        dst.write(chunk)
    return total


BATCH = 50  # instances indexed and committed together


def store_one(fh: BinaryIO, *, filename: str, by: User | None, facility_id: int | None, source: str,
              actor_name: str | None = None) -> IngestResult:
    """Ingest one file and commit; if the commit fails, the stored object is removed again."""
    result = stage_one(fh, filename=filename, by=by, source=source)
    index_and_commit([result], by=by, facility_id=facility_id, actor_name=actor_name)
    return result


def stage_one(fh: BinaryIO, *, filename: str, by: User | None, source: str,
              pending: dict[str, IngestResult] | None = None, size: int | None = None,
              lookup: sa.Connection | None = None, background: bool = False) -> IngestResult:
    """Validate and store one file (its row comes later, see :func:`index_and_commit`); never raises for a
    problem with the file or the store, so the batch goes on."""
    try:
        return service.stage(fh, filename=filename, by=by, source=source, pending=pending, size=size,
                             lookup=lookup, background=background)
    except AppError:
        raise
    except Exception:
        logger.exception("storing one file failed")
        return IngestResult(filename, "rejected", service.TRY_AGAIN)


def index_and_commit(results: list[IngestResult], *, by: User | None, facility_id: int | None,
                     actor_name: str | None = None) -> None:
    """Write the rows of a batch of stored objects and commit, in a handful of statements.

    Rows commit only after their objects are stored, and a result reads as stored only once its row is
    committed. If the batch fails, it is retried one instance at a time so one bad row sinks only itself; an
    object whose row cannot be committed is deleted (no orphans) and its result is a rejection, so the sender
    sends it again. Never is a failure taken for "already stored".
    """
    if not any(r.staged is not None for r in results):
        db.session.commit()  # audit rows of duplicates/denials, if any
        return
    try:
        service.index(results, by=by, facility_id=facility_id, actor_name=actor_name)
        db.session.commit()
        service.announce_arrivals(results)
        return
    except Exception:
        logger.warning("indexing a batch of %d failed; retrying one by one", len(results), exc_info=True)
        with contextlib.suppress(Exception):  # a dead connection is replaced at the next checkout
            db.rollback()
    for r in results:
        _index_alone(r, by=by, facility_id=facility_id, actor_name=actor_name)
    for r in results:
        r.staged = None
    service.announce_arrivals(results)


def _index_alone(r: IngestResult, *, by: User | None, facility_id: int | None, actor_name: str | None) -> None:
    """Index one instance after its batch failed. A failed commit may still have gone through (only its answer
    was lost), so the row is looked for before each try: otherwise the try would take the instance's own row
    for a duplicate and delete its object."""
    for attempt in (1, 2):  # a second try for a passing failure (deadlock, lock timeout, lost connection)
        committed = service.row_committed(r)
        if committed or r.staged is None:
            return
        if committed is None:  # the database cannot say: keep the object (the row may point at it), ask again
            r.status, r.reason = "rejected", service.TRY_AGAIN
            return
        try:
            service.index([r], by=by, facility_id=facility_id, actor_name=actor_name)
            db.session.commit()
            return
        except Exception:
            with contextlib.suppress(Exception):
                db.rollback()
            logger.warning("indexing one instance failed (try %d)", attempt, exc_info=True)
    logger.error("instance %s could not be indexed; the sender is told to send it again", r.sop_instance_uid)
    if service.row_committed(r) is False:  # surely referenced by no row: no orphan left behind
        service.discard_objects([r])
    r.status, r.reason = "rejected", service.TRY_AGAIN


def zip_entries(fh: BinaryIO, name: str) -> Iterator[tuple[str, BinaryIO | None, str]]:
    """Yield (entry name, temp file or None, rejection reason) for each file entry of a zip."""
    max_file = current_app.config["IMAGING_MAX_FILE_BYTES"]
    max_entries = current_app.config["IMAGING_MAX_ZIP_ENTRIES"]
    try:
        archive = zipfile.ZipFile(fh)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        yield name, None, "not a readable zip file"
        return
    if len(infos) > max_entries:
        yield name, None, f"zip has more than {max_entries} entries"
        return
    for info in infos:
        entry = info.filename
        if not entry:
            yield f"{name}/(no name)", None, "zip entry without a name"
            continue
        if info.is_dir():
            continue
        label = f"{name}/{entry}"
        base = entry.rsplit("/", 1)[-1]
        if entry.startswith(("/", "\\")) or ".." in entry.replace("\\", "/").split("/") or ":" in entry:
            yield label, None, "unsafe path in zip entry"
            continue
        if base.upper() == "DICOMDIR" or base.startswith(".") or entry.startswith("__MACOSX/"):
            continue
        if info.flag_bits & 0x1:
            yield label, None, "encrypted zip entry"
            continue
        if info.file_size > max_file:
            yield label, None, "file is larger than the allowed size"
            continue
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 10_000_000:
            yield label, None, "suspicious compression ratio (zip bomb)"
            continue
        with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as tmp:
            try:
                with archive.open(info) as src:
                    copy_limited(src, tmp, min(max_file, max(info.file_size, 0)))
            except TooLarge:
                yield label, None, "entry is larger than its zip header says (zip bomb)"
                continue
            except NotImplementedError:  # zipfile's answer to a compression method it cannot read
                yield label, None, "unsupported zip compression method (use deflate or store)"
                continue
            except RuntimeError:  # zipfile's answer to an encrypted entry opened without a password
                yield label, None, "encrypted zip entry"
                continue
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error):  # zipfile wraps only some damage
                yield label, None, "damaged zip entry"
                continue
            tmp.seek(0)
            yield label, tmp, ""


def is_zip(fh: BinaryIO, filename: str) -> bool:
    fh.seek(0)
    magic = fh.read(4)
    fh.seek(0)
    return magic == b"PK\x03\x04" or (filename.lower().endswith(".zip") and magic[:2] == b"PK")


def ingest_files(files: Iterable[tuple[str, BinaryIO]], *, by: User | None, facility_id: int | None,
                 source: str) -> list[IngestResult]:
    """Ingest uploaded files (each a DICOM file or a zip of them), committing every :data:`BATCH` instances."""
    max_file = current_app.config["IMAGING_MAX_FILE_BYTES"]
    orphans.purge()  # what an earlier upload left while the store was away (usually nothing: one query)
    results: list[IngestResult] = []
    batch: list[IngestResult] = []
    pending: dict[str, IngestResult] = {}

    def add(result: IngestResult) -> None:
        results.append(result)
        if result.staged is not None:
            batch.append(result)
        if len(batch) >= BATCH:
            flush()

    def flush() -> None:
        index_and_commit(batch, by=by, facility_id=facility_id)
        batch.clear()
        pending.clear()

    try:
        for name, fh in files:
            size = fh.seek(0, 2)
            fh.seek(0)
            if is_zip(fh, name):
                for label, entry, reason in zip_entries(fh, name):
                    if entry is None:
                        add(IngestResult(label, "rejected", reason))
                    else:
                        add(stage_one(entry, filename=label, by=by, source=source, pending=pending, background=True))
                continue
            if size > max_file:
                add(IngestResult(name, "rejected", "file is larger than the allowed size"))
                continue
            add(stage_one(fh, filename=name, by=by, source=source, pending=pending, background=True))
        flush()
    except BaseException:
        db.rollback()
        service.discard_objects(batch)
        raise
    return results




