"""The app opens its S3 store when it starts: the bucket is there before the first upload, and an S3 server
that is not reachable yet does not stop the app from starting."""

from __future__ import annotations

import logging
import socket
from typing import Any

from minio import Minio

from app import create_app


def _s3_app(test_config: Any, endpoint: str, bucket: str) -> Any:
    cfg = type(test_config)()
    cfg.__dict__.update(vars(test_config))
    cfg.OBJECT_STORE, cfg.S3_ENDPOINT, cfg.S3_BUCKET, cfg.S3_SECURE = "s3", endpoint, bucket, False
    cfg.S3_ACCESS_KEY, cfg.S3_SECRET_KEY, cfg.S3_REGION = "test", "testtesttest", "us-east-1"  # noqa: S105
    return create_app(cfg)


def test_the_bucket_is_created_when_the_app_starts(test_config, s3_clean):
    app = _s3_app(test_config, s3_clean, "scans-at-start")
    assert "object_store" in app.extensions
    client = Minio(s3_clean, access_key="test", secret_key="testtesttest", secure=False)  # noqa: S106
    assert client.bucket_exists("scans-at-start")


def test_an_unreachable_s3_server_does_not_stop_the_app(test_config, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    with caplog.at_level(logging.WARNING, logger="app.imaging.dicomweb"):
        app = _s3_app(test_config, f"127.0.0.1:{port}", "scans-later")
    assert "object_store" not in app.extensions
    assert "not reachable at start" in caplog.text
    assert app.test_client().get("/healthz").status_code == 200
