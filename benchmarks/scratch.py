"""A throw-away, migrated PostgreSQL database and an app bound to it, for benchmarks that need real data."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from flask import Flask

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_app() -> Iterator[Flask]:
    """Create and migrate a database (dropped afterwards) and build the app on it with the test settings."""
    from app import create_app, db
    from app.cli import migrate
    from app.config import TestConfig

    name = f"hospital_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        migrate(url)
        cfg = TestConfig()
        cfg.DATABASE_URL = url
        cfg.INSTANCE_PATH = Path(tempfile.mkdtemp())
        yield create_app(cfg)
    finally:
        db.session.remove()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
