"""The storage contract shared by every implementation."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol


class NoSuchObject(KeyError):
    """The key is not in the store."""


@dataclass(frozen=True)
class StoredObject:
    """What a put wrote: the key, its size and the SHA-256 of the bytes as they streamed past."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    modified: datetime | None


class ObjectStore(Protocol):
    def put(self, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream",
            length: int | None = None) -> StoredObject: ...

    def get(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[bytes]: ...

    def read(self, key: str, *, start: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def presigned_get(self, key: str, *, expires_seconds: int = 300) -> str: ...


class HashingReader:
    """Wrap a stream so the SHA-256 and size are computed while an SDK reads it (no second pass)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


CHUNK = 1024 * 1024


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (an object-store download), never all in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n
