"""The same contract for every ObjectStore: filesystem on a temp dir, S3 on moto through the minio SDK."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from storage import FilesystemStore, NoSuchObject, from_config
from storage.keys import new_key


class _Cfg:
    OBJECT_STORE = "s3"
    S3_ACCESS_KEY = "test"
    S3_SECRET_KEY = "testtesttest"
    S3_BUCKET = "contract"
    S3_REGION = "us-east-1"
    S3_SECURE = False


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "fs":
        return FilesystemStore(tmp_path / "objects")
    cfg = _Cfg()
    cfg.S3_ENDPOINT = request.getfixturevalue("s3_clean")  # type: ignore[attr-defined]
    return from_config(cfg)


class Unsized(io.RawIOBase):
    """A stream that cannot tell its length, like a request body being received."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)


def test_put_of_unknown_length_reports_size_and_sha256(store: Any) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    key = new_key("t")
    stored = store.put(key, Unsized(data))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read(key) == data
    assert store.stat(key).size == len(data)


def test_multipart_upload_larger_than_one_part(store: Any) -> None:
    from storage import s3

    data = os.urandom(s3.PART_SIZE + 1000)
    key = new_key("big")
    assert store.put(key, Unsized(data)).size == len(data)
    assert hashlib.sha256(store.read(key)).hexdigest() == hashlib.sha256(data).hexdigest()


def test_byte_ranges(store: Any) -> None:
    key = new_key("t")
    store.put(key, io.BytesIO(b"0123456789"), length=10)
    assert store.read(key, start=3, length=4) == b"3456"
    assert store.read(key, start=7) == b"789"


def test_missing_objects(store: Any) -> None:
    key = new_key("t")
    assert not store.exists(key)
    with pytest.raises(NoSuchObject):
        store.stat(key)
    with pytest.raises(NoSuchObject):
        store.read(key)


def test_delete_and_list_by_prefix(store: Any) -> None:
    a, b, c = new_key("dicom"), new_key("dicom"), new_key("rec")
    for k in (a, b, c):
        store.put(k, io.BytesIO(b"x"))
    assert sorted(store.list("dicom/")) == sorted([a, b])
    store.delete(a)
    assert not store.exists(a)
    assert list(store.list("dicom/")) == [b]
    store.delete(a)  # deleting twice is fine


def test_keys_are_opaque_and_refuse_traversal(store: Any) -> None:
    key = new_key("dicom")
    assert key.startswith("dicom/") and len(key.rsplit("/", 1)[1]) == 32
    with pytest.raises(ValueError):
        store.put("../escape", io.BytesIO(b"x"))


def test_presigned_get(store: Any) -> None:
    key = new_key("t")
    store.put(key, io.BytesIO(b"hello"))
    url = store.presigned_get(key, expires_seconds=60)
    if isinstance(store, FilesystemStore):
        query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
        assert store.verify_presigned(key, int(query["expires"]), query["signature"])
        assert not store.verify_presigned(key, int(query["expires"]) + 1, query["signature"])
    else:
        assert "X-Amz-Expires=60" in url
        assert urllib.request.urlopen(url, timeout=5).read() == b"hello"  # noqa: S310


def test_failed_put_leaves_nothing(store: Any) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            raise OSError("client went away")

    key = new_key("t")
    with pytest.raises(OSError):
        store.put(key, Broken())
    assert not store.exists(key)


def test_filesystem_put_is_durable_before_it_returns(tmp_path, monkeypatch):
    """The embedded store fsyncs the object and the directory entries of its rename before acknowledging it."""
    import io
    import os
    import stat

    from storage.fs import FilesystemStore

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    store = FilesystemStore(tmp_path / "objects")
    monkeypatch.setattr(os, "fsync", spy)
    store.put("studies/s123/series/s4/i5", io.BytesIO(b"DICM" * 100))
    assert synced[0] == "file"
    assert synced.count("dir") >= 2  # the new object's directory and the directories created for it
    synced.clear()
    store.put("studies/s123/series/s4/i6", io.BytesIO(b"DICM"))
    assert synced == ["file", "dir"]
    assert store.read("studies/s123/series/s4/i6") == b"DICM"
