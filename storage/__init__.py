"""Object storage for DICOM files, recordings and documents (filesystem or S3 through the minio SDK).

Callers use :func:`from_config` and the :class:`ObjectStore` protocol only; keys come from :mod:`storage.keys`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from storage.base import ChunkReader, NoSuchObject, ObjectInfo, ObjectStore, StoredObject
from storage.fs import FilesystemStore

__all__ = ["ChunkReader", "FilesystemStore", "NoSuchObject", "ObjectInfo", "ObjectStore", "StoredObject", "from_config",
           "settings_from_env"]


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


def settings_from_env(instance_path: Path) -> dict[str, Any]:
    """The object-store settings (``OBJECT_STORE``, ``STORAGE_PATH``, ``S3_*``) read from the environment.

    Read here, not in ``app.config``, so the media service finds the app's store without importing the app.
    """
    env = os.environ.get
    return {
        "OBJECT_STORE": env("HOSPITAL_OBJECT_STORE", "fs"),
        "STORAGE_PATH": Path(env("HOSPITAL_STORAGE_PATH", str(instance_path / "objects"))),
        "S3_ENDPOINT": env("S3_ENDPOINT", "127.0.0.1:9000"),
        "S3_ACCESS_KEY": env("S3_ACCESS_KEY", ""),
        "S3_SECRET_KEY": env("S3_SECRET_KEY", ""),
        "S3_BUCKET": env("S3_BUCKET", "hospital"),
        "S3_REGION": env("S3_REGION", "us-east-1"),
        "S3_SECURE": env("S3_SECURE", "true").strip().lower() in {"1", "true", "yes", "on"},
    }
