"""Filesystem object store (embedded default): atomic, durable writes.

An object is written to a temp file, fsynced, renamed into place, and its directory fsynced, so when ``put``
returns the object survives a crash or power loss: the platform acknowledges a scan only after that.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from storage.base import CHUNK, NoSuchObject, ObjectInfo, StoredObject
from storage.keys import is_valid


class FilesystemStore:
    def __init__(self, root: Path | str, *, secret: bytes = b"") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)
        self._secret = secret or os.urandom(32)

    def _path(self, key: str) -> Path:
        if not is_valid(key):
            raise ValueError("invalid object key")
        return self.root / key

    def put(self, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream",
            length: int | None = None) -> StoredObject:
        path = self._path(key)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.replace(tmp, path)
                created: list[Path] = []
            except FileNotFoundError:  # first object under this prefix
                created = _make_parents(path.parent, self.root)
                os.replace(tmp, path)
            for directory in (path.parent, *created):  # the rename, and any new directory's own entry
                _fsync_dir(directory)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

    def get(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise NoSuchObject(key) from None

        def chunks() -> Iterator[bytes]:
            with fh:
                fh.seek(start)
                remaining = length
                while remaining is None or remaining > 0:
                    data = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not data:
                        break
                    if remaining is not None:
                        remaining -= len(data)
                    yield data

        return chunks()

    def read(self, key: str, *, start: int = 0, length: int | None = None) -> bytes:
        return b"".join(self.get(key, start=start, length=length))

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise NoSuchObject(key) from None
        return ObjectInfo(key=key, size=st.st_size, content_type=None,
                          modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(self.root) and d == ".tmp"))
            for name in sorted(filenames):
                key = str(Path(dirpath, name).relative_to(self.root)).replace(os.sep, "/")
                if key.startswith(prefix):
                    yield key

    def presigned_get(self, key: str, *, expires_seconds: int = 300) -> str:
        """A ``file-object:`` token the app can verify; the filesystem has no HTTP server of its own."""
        expires = int(time.time()) + expires_seconds
        sig = hmac.new(self._secret, f"{key}:{expires}".encode(), hashlib.sha256).hexdigest()
        return f"/objects/{key}?expires={expires}&signature={sig}"

    def verify_presigned(self, key: str, expires: int, signature: str) -> bool:
        good = hmac.new(self._secret, f"{key}:{expires}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(good, signature) and expires >= time.time()


def _make_parents(directory: Path, root: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; returns the parents whose entries changed, deepest first."""
    missing: list[Path] = []
    d = directory
    while d != root and not d.exists():
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    return [m.parent for m in missing]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
