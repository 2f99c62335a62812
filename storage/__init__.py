"""Object storage for DICOM files, recordings and documents (filesystem or S3 through the minio SDK).

Callers use :func:`from_config` and the :class:`ObjectStore` protocol only; keys come from :mod:`storage.keys`.
"""

from __future__ import annotations

from typing import Any

from storage.base import ChunkReader, NoSuchObject, ObjectInfo, ObjectStore, StoredObject
from storage.fs import FilesystemStore

__all__ = ["ChunkReader", "FilesystemStore", "NoSuchObject", "ObjectInfo", "ObjectStore", "StoredObject", "from_config"]


def from_config(cfg: Any) -> ObjectStore:
    """Build the store named by ``OBJECT_STORE`` ("fs" or "s3") from a Config object or a Flask config mapping."""
    if isinstance(cfg, dict):
        from types import SimpleNamespace

        cfg = SimpleNamespace(**{k: v for k, v in cfg.items() if k.isupper()})
    if cfg.OBJECT_STORE == "s3":
        from storage.s3 import S3Store

        return S3Store(endpoint=cfg.S3_ENDPOINT, access_key=cfg.S3_ACCESS_KEY, secret_key=cfg.S3_SECRET_KEY,
                       bucket=cfg.S3_BUCKET, region=cfg.S3_REGION, secure=cfg.S3_SECURE)
    if cfg.OBJECT_STORE == "fs":
        return FilesystemStore(cfg.STORAGE_PATH, secret=str(cfg.SECRET_KEY).encode())
    raise ValueError(f"unknown OBJECT_STORE {cfg.OBJECT_STORE!r} (use 'fs' or 's3')")
