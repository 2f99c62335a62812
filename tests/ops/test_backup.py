"""``hospital backup`` / ``hospital restore``: a restore into an empty database and object store finds every record,
scan, recording and signature intact and verifiable, and a damaged backup is refused before anything is loaded."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from app import backup, create_app, db
from app.audit import chain
from app.cli import main
from tests.conftest import PG_ADMIN_URL, _pg_url
from tests.imaging.dicomgen import ct_slice
from tests.prescriptions.conftest import rx_input


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"hospital_restore_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def source(engine: Any, test_config: Any, tmp_path: Path) -> Iterator[Any]:
    """A hospital of its own (database, object store, keys), so the check of a restore sees only this test's data
    and not rows other tests committed with objects kept elsewhere."""
    from app.cli import migrate
    from tests.factories import Factories

    name = f"hospital_source_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    cfg = copy.copy(test_config)
    cfg.DATABASE_URL = _pg_url(name)
    cfg.INSTANCE_PATH = tmp_path / "source"
    cfg.STORAGE_PATH = cfg.INSTANCE_PATH / "objects"
    cfg.STORAGE_PATH.mkdir(parents=True)
    try:
        migrate(cfg.DATABASE_URL)
        db.session.remove()
        source_app = create_app(cfg)
        with source_app.app_context():
            yield SimpleNamespace(app=source_app, cfg=cfg, factories=Factories())
        db.session.remove()
        source_app.extensions["db_engine"].dispose()
    finally:
        db.session.remove()
        db.session.configure(bind=engine)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _s3(cfg: Any, endpoint: str) -> Any:
    cfg.S3_ENDPOINT, cfg.S3_ACCESS_KEY, cfg.S3_SECRET_KEY, cfg.S3_SECURE = endpoint, "test", "test", False
    return cfg


def _hospital_with_data(app: Any, live_factories: Any) -> dict[str, Any]:
    """Committed data of every kind: a signed prescription, an uploaded scan, an encrypted recording, a sealed
    audit trail."""
    from app.consults import recordings
    from app.imaging.ingest import ingest_files
    from app.imaging.models import Instance
    from app.imaging.service import object_store
    from app.prescriptions import service as rx_service
    from storage.recording_format import derive_key, encrypt_file

    f = live_factories
    clinic = f.facility()
    doctor, nurse, pharmacist = f.doctor(), f.nurse(facility=clinic), f.pharmacist(facility=clinic)
    patient = f.patient(facility=clinic, with_account=True, doctor=doctor)
    rx = rx_service.create_draft(patient, rx_input(), by=doctor)
    rx_service.sign(rx, by=doctor)
    db.session.commit()
    payload = rx_service.qr_payload(rx)

    scan = ct_slice(patient_id=patient.mrn, seed=uuid.uuid4().int % 1000)
    [stored] = ingest_files([("scan.dcm", io.BytesIO(scan))], by=nurse, facility_id=clinic.id, source="upload")
    assert stored.status == "stored"
    instance = db.session.scalars(sa.select(Instance).where(Instance.sha256 == hashlib.sha256(scan).hexdigest())).one()

    plain, rid = os.urandom(100_000), uuid.uuid4().hex[:24]
    tmp = Path(app.instance_path) / f"rec-{rid}"
    (tmp.with_suffix(".webm")).write_bytes(plain)
    _, size = encrypt_file(tmp.with_suffix(".webm"), tmp.with_suffix(".enc"),
                           derive_key(recordings.master_key(), rid),
                           {"recording_id": rid, "consult_id": "c", "consent_id": "1"})
    with tmp.with_suffix(".enc").open("rb") as fh:
        object_store().put(recordings.object_key(rid), fh)
    chain.seal()
    db.session.commit()
    return {"payload": payload, "pharmacist_id": pharmacist.id, "rx_id": rx.id, "scan": scan,
            "instance_key": instance.object_key, "recording": SimpleNamespace(object_key=recordings.object_key(rid),
                                                                               size=size, recording_id=rid),
            "plain": plain, "sealed_through": chain.verify().sealed_through}


def _row_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return {t: conn.scalar(sa.select(sa.func.count()).select_from(sa.table(t))) for t in tables}
    finally:
        engine.dispose()


@pytest.mark.parametrize("target_kind", ["directory", "bucket"])
def test_a_restore_into_an_empty_database_and_store_has_everything(target_kind, source, engine, s3_clean,
                                                                   empty_database, tmp_path):
    from app.consults import recordings
    from app.imaging.service import object_store
    from app.prescriptions import service as rx_service

    data = _hospital_with_data(source.app, source.factories)
    source_cfg = _s3(copy.copy(source.cfg), s3_clean)
    target = str(tmp_path / "backup") if target_kind == "directory" else "s3://hospital-backups"
    report = backup.backup(source_cfg, target)
    assert report.objects >= 2 and report.database_bytes > 0

    restored_cfg = _s3(copy.copy(source.cfg), s3_clean)  # the same keys (kept in a secrets store, not the backup)
    restored_cfg.DATABASE_URL = empty_database
    if target_kind == "directory":  # into S3, from a directory
        restored_cfg.OBJECT_STORE, restored_cfg.S3_BUCKET = "s3", "restored"
    else:  # into a new directory, from a bucket
        restored_cfg.STORAGE_PATH = tmp_path / "restored-objects"
    backup.restore(restored_cfg, target)

    assert _row_counts(empty_database) == _row_counts(source.cfg.DATABASE_URL)
    db.session.remove()
    restored = create_app(restored_cfg)
    try:
        with restored.test_request_context("/"):
            check = backup.check_restored()
            assert check.problems == [] and check.audit_intact and check.objects_checked >= 1
            assert chain.verify().sealed_through == data["sealed_through"]
            assert object_store().read(data["instance_key"]) == data["scan"]
            assert b"".join(recordings.plaintext(data["recording"])) == data["plain"]
            from app.auth.models import User

            result = rx_service.verify(data["payload"], by=db.session.get(User, data["pharmacist_id"]))
            assert result.valid, result.checks
            db.session.rollback()
    finally:
        db.session.remove()
        db.session.configure(bind=engine)


def test_a_damaged_backup_is_refused_and_nothing_is_loaded(source, engine, empty_database, tmp_path, monkeypatch,
                                                           capsys):
    data = _hospital_with_data(source.app, source.factories)
    target = tmp_path / "backup"
    backup.backup(source.cfg, str(target))
    damaged = target / "data" / data["instance_key"]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")

    monkeypatch.setenv("DATABASE_URL", empty_database)
    monkeypatch.setenv("HOSPITAL_STORAGE_PATH", str(tmp_path / "restored-objects"))
    try:
        assert main(["restore", str(target)]) == 1
    finally:
        db.session.remove()
        db.session.configure(bind=engine)
    err = capsys.readouterr().err
    assert "Restore failed" in err and "damaged" in err
    assert _row_counts(empty_database) == {}
    with pytest.raises(backup.BackupError, match="not a backup"):
        backup.restore(source.cfg, str(tmp_path / "nothing-here"))
