"""Upgrading an existing deployment: instances stored before BitsAllocated was indexed get it from their stored
headers, so QIDO-RS answers carry it for old studies too."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import sqlalchemy as sa

import storage
from app.cli import migrate
from app.config import Config
from tests.imaging.dicomgen import ct_slice

BEFORE = "c9da4f07064f"  # the revision before BitsAllocated


def test_upgrade_fills_bits_allocated_from_stored_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSPITAL_STORAGE_PATH", str(tmp_path / "objects"))
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, BEFORE)
    data = ct_slice()
    storage.from_config(Config.from_env()).put("old-ct", io.BytesIO(data), content_type="application/dicom",
                                               length=len(data))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO imaging_study (id, study_instance_uid, modalities, created_at) "
                             "VALUES (1, '1.2.3', 'CT', '2026-01-01 00:00:00')"))
        conn.execute(sa.text("INSERT INTO imaging_series (id, series_instance_uid, study_id, created_at) "
                             "VALUES (1, '1.2.3.4', 1, '2026-01-01 00:00:00')"))
        for row_id, key in ((1, "old-ct"), (2, "gone-from-the-store")):
            conn.execute(sa.text(
                "INSERT INTO imaging_instance (id, sop_instance_uid, sop_class_uid, series_id, transfer_syntax_uid, "
                "number_of_frames, object_key, size, sha256, source, created_at) VALUES (:id, :uid, "
                "'1.2.840.10008.5.1.4.1.1.2', 1, '1.2.840.10008.1.2.1', 1, :key, 1, '', 'upload', "
                "'2026-01-01 00:00:00')"), {"id": row_id, "uid": f"1.2.3.4.{row_id}", "key": key})
    migrate(url)
    with engine.connect() as conn:
        found = dict(conn.execute(sa.text("SELECT id, bits_allocated FROM imaging_instance")).all())
    engine.dispose()
    assert found == {1: 16, 2: None}  # an object that cannot be read keeps an empty value
