"""Backups that outlive the machine: a consistent database dump plus every object, to a directory or a bucket.

A backup is written through the storage layer, so a directory and an S3 bucket hold the same layout::

    backup/summary     JSON: when, database kind, counts, SHA-256 of the dump and of the index
    backup/database    pg_dump's custom format (PostgreSQL) or a copy of the database file (SQLite)
    backup/index       one JSON line per object: key, size, SHA-256
    data/<key>         each object under its own key

The database goes first, then the objects. The storage layer writes an object before the row naming it is
committed and never rewrites one, so every object the dump mentions already existed when pg_dump took its
snapshot and is copied in the second step (objects newer than the snapshot come along and are harmless).
Restore refuses a database that is not empty, checks every object's SHA-256 against the index as it copies it
back, and only then reports success. Signing keys and the recording master key are not in the backup: they
belong to the secrets store, and a restore uses the same configuration.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import storage
from app.config import Config

SUMMARY, DATABASE, INDEX, DATA = "backup/summary", "backup/database", "backup/index", "data/"


class BackupError(RuntimeError):
    """The backup or restore could not be completed; the message says why in plain words."""


@dataclass(frozen=True)
class Report:
    objects: int
    object_bytes: int
    database_bytes: int


def target_store(cfg: Config, target: str) -> storage.ObjectStore:
    """``s3://bucket`` (on the configured S3 endpoint and credentials) or a directory."""
    if target.startswith("s3://"):
        from storage.s3 import S3Store

        bucket = target.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise BackupError(f"give a bucket as s3://name, not {target!r}")
        return S3Store(endpoint=cfg.S3_ENDPOINT, access_key=cfg.S3_ACCESS_KEY, secret_key=cfg.S3_SECRET_KEY,
                       bucket=bucket, region=cfg.S3_REGION, secure=cfg.S3_SECURE)
    return storage.FilesystemStore(Path(target))


def _libpq(url: str) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for pg_dump/pg_restore; the password goes in the environment, not the command line."""
    parsed = make_url(url)
    args = [f"--dbname={parsed.database}"]
    if parsed.host:
        args.append(f"--host={parsed.host}")
    if parsed.port:
        args.append(f"--port={parsed.port}")
    if parsed.username:
        args.append(f"--username={parsed.username}")
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return args, env


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {done.stderr.strip()[-2000:]}")


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def _dump_database(url: str, out: Path) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(_sqlite_path(url)) as src, sqlite3.connect(out) as dst:
            src.backup(dst)  # a consistent copy even while the app writes
        return
    args, env = _libpq(url)
    _run([shutil.which("pg_dump") or "pg_dump", "--format=custom", "--no-owner", "--no-privileges",
          f"--file={out}", *args], env)



def _open(store: storage.ObjectStore, key: str) -> BinaryIO:
    return io.BufferedReader(storage.ChunkReader(store.get(key)), buffer_size=storage.base.CHUNK)


def backup(cfg: Config, target: str) -> Report:
    """Dump the database, then copy every object to ``target``; the summary is written last, as the seal.

    :raises BackupError: when pg_dump fails or an object cannot be read.
    """
    dest = target_store(cfg, target)
    source = storage.from_config(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "database"
        _dump_database(cfg.DATABASE_URL, dump)
        with dump.open("rb") as fh:
            stored_dump = dest.put(DATABASE, fh, length=dump.stat().st_size)
        index, count, total = Path(tmp) / "index", 0, 0
        with index.open("w", encoding="utf-8") as lines:
            for key in source.list(""):
                with _open(source, key) as fh:
                    stored = dest.put(DATA + key, fh)
                lines.write(json.dumps({"key": key, "size": stored.size, "sha256": stored.sha256}) + "\n")
                count, total = count + 1, total + stored.size
        with index.open("rb") as fh:
            stored_index = dest.put(INDEX, fh, length=index.stat().st_size)
    summary = {"format": 1, "created_at": _now(), "database": "sqlite" if cfg.DATABASE_URL.startswith("sqlite")
               else "postgresql", "database_sha256": stored_dump.sha256, "database_bytes": stored_dump.size,
               "index_sha256": stored_index.sha256, "objects": count, "object_bytes": total}
    dest.put(SUMMARY, io.BytesIO(json.dumps(summary, indent=2).encode()), content_type="application/json")
    return Report(objects=count, object_bytes=total, database_bytes=stored_dump.size)


def _now() -> str:
    from app.db import utcnow

    return utcnow().isoformat()


def _summary(src: storage.ObjectStore) -> dict[str, Any]:
    try:
        return json.loads(src.read(SUMMARY))
    except storage.NoSuchObject:
        raise BackupError("no complete backup there (its summary is missing: the backup was cut short or this "
                          "is not a backup)") from None


def _fetch_checked(src: storage.ObjectStore, key: str, out: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with out.open("wb") as fh:
        for chunk in src.get(key):
            digest.update(chunk)
            fh.write(chunk)
    if digest.hexdigest() != sha256:
        raise BackupError(f"{key} does not match the SHA-256 in the backup's summary: the backup is damaged")


def _database_is_empty(url: str) -> bool:
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        return not path.exists() or path.stat().st_size == 0
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return not sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def _restore_database(url: str, dump: Path, kind: str) -> None:
    if kind == "sqlite" or url.startswith("sqlite"):
        if kind != "sqlite" or not url.startswith("sqlite"):
            raise BackupError(f"this backup holds a {kind} database; restore it into the same kind")
        _sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dump, _sqlite_path(url))
        return
    args, env = _libpq(url)
    _run([shutil.which("pg_restore") or "pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
          "--single-transaction", *args, str(dump)], env)


def _index(src: storage.ObjectStore, sha256: str, tmp: Path) -> Iterator[dict[str, Any]]:
    path = tmp / "index"
    _fetch_checked(src, INDEX, path, sha256)
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def restore(cfg: Config, source: str) -> Report:
    """Load a backup into the configured (empty) database and object store, checking every byte on the way.

    Objects go first, the database last: should an object fail its check, no database has been loaded, and the
    restore can simply be run again.
    :raises BackupError: the database is not empty, the backup is incomplete or damaged, or a tool failed.
    """
    src = target_store(cfg, source)
    summary = _summary(src)
    if not _database_is_empty(cfg.DATABASE_URL):
        raise BackupError("the database is not empty; restore needs a new, empty database")
    dest = storage.from_config(cfg)
    count = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for entry in _index(src, summary["index_sha256"], Path(tmp)):
            with _open(src, DATA + entry["key"]) as fh:
                stored = dest.put(entry["key"], fh)
            if stored.sha256 != entry["sha256"]:
                dest.delete(entry["key"])
                raise BackupError(f"object {entry['key']} does not match its SHA-256 in the backup: it is damaged")
            count, total = count + 1, total + stored.size
        if count != summary["objects"]:
            raise BackupError(f"the backup's index lists {count} objects, its summary {summary['objects']}")
        dump = Path(tmp) / "database"
        _fetch_checked(src, DATABASE, dump, summary["database_sha256"])
        _restore_database(cfg.DATABASE_URL, dump, summary["database"])
    return Report(objects=count, object_bytes=total, database_bytes=summary["database_bytes"])


@dataclass(frozen=True)
class Check:
    objects_checked: int
    problems: list[str]
    audit_intact: bool


def check_restored() -> Check:
    """In an app context: every scan and recording row's object is there with its SHA-256, and the audit trail's
    chain holds. Run after a restore, before letting users in."""
    from app import db
    from app.audit import chain
    from app.consults.models import ConsultRecording
    from app.imaging.models import Instance
    from app.imaging.service import object_store

    store, problems, checked = object_store(), [], 0
    rows = db.session.execute(sa.union_all(
        sa.select(sa.literal("scan instance"), Instance.id, Instance.object_key, Instance.sha256),
        sa.select(sa.literal("recording"), ConsultRecording.id, ConsultRecording.object_key, ConsultRecording.sha256)
        .where(ConsultRecording.object_key.is_not(None), ConsultRecording.sha256.is_not(None))))
    for kind, row_id, key, sha256 in rows:
        digest = hashlib.sha256()
        try:
            for chunk in store.get(key):
                digest.update(chunk)
        except storage.NoSuchObject:
            problems.append(f"{kind} {row_id}: its object is missing")
            continue
        if digest.hexdigest() != sha256:
            problems.append(f"{kind} {row_id}: its object does not match its SHA-256")
        checked += 1
    return Check(objects_checked=checked, problems=problems, audit_intact=chain.verify().intact)
