"""DICOMweb: BitsAllocated of each instance (a QIDO-RS return key, filled from the stored headers) and the
service credentials of machine peers (PACS syncing over DICOMweb).

Revision ID: 5c1d2e7a9b30
Revises: c9da4f07064f
Create Date: 2026-12-04 06:40:00
"""

import io
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "5c1d2e7a9b30"
down_revision: str | Sequence[str] | None = "c9da4f07064f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("imaging_instance") as batch:
        batch.add_column(sa.Column("bits_allocated", sa.Integer(), nullable=True))
    _backfill()
    op.create_table(
        "service_credential",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", app.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", app.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by_id"], ["user_account.id"],
                                name=op.f("fk_service_credential_created_by_id_user_account")),
        sa.ForeignKeyConstraint(["user_id"], ["user_account.id"],
                                name=op.f("fk_service_credential_user_id_user_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_credential")),
        sa.UniqueConstraint("key_id", name=op.f("uq_service_credential_key_id")),
    )


def _backfill() -> None:
    """Existing instances: BitsAllocated from the header of each stored object (the store named by the app's
    settings); an object that cannot be read keeps an empty value, which QIDO leaves out."""
    import pydicom

    conn = op.get_bind()
    table = sa.table("imaging_instance", sa.column("id", sa.Integer), sa.column("object_key", sa.String),
                     sa.column("pixel_data_offset", sa.BigInteger), sa.column("bits_allocated", sa.Integer))
    rows = conn.execute(sa.select(table.c.id, table.c.object_key, table.c.pixel_data_offset)).all()
    if not rows:
        return
    store = _object_store()
    if store is None:
        return
    for row_id, key, offset in rows:
        try:
            data = store.read(key, length=offset) if offset else store.read(key)
            bits = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                                   specific_tags=["BitsAllocated"]).get("BitsAllocated")
        except Exception:  # noqa: BLE001, S112 - an unreadable object keeps an empty value (QIDO leaves it out)
            continue
        if bits is not None:
            conn.execute(table.update().where(table.c.id == row_id).values(bits_allocated=int(bits)))


def _object_store() -> object | None:
    import storage

    try:
        from flask import current_app

        settings: object = dict(current_app.config)
    except RuntimeError:  # plain `alembic upgrade` or `hospital run`: the settings come from the environment
        from app.config import Config

        settings = Config.from_env()
    try:
        return storage.from_config(settings)
    except Exception:  # noqa: BLE001 - the store cannot be opened here: the values stay empty
        return None


def downgrade() -> None:
    op.drop_table("service_credential")
    with op.batch_alter_table("imaging_instance") as batch:
        batch.drop_column("bits_allocated")
