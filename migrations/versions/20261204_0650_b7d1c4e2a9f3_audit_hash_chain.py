"""Tamper-evident audit trail: hash links per event, seals, export cursors; objects to delete once the store
answers again.

Revision ID: b7d1c4e2a9f3
Revises: 5afe7c0d2b14
Create Date: 2026-12-04 06:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = 'b7d1c4e2a9f3'
down_revision: str | Sequence[str] | None = '5afe7c0d2b14'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit_seal", "audit_link")


def upgrade() -> None:
    op.create_table('audit_seal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sealed_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('after_event_id', sa.BigInteger(), nullable=False),
    sa.Column('last_event_id', sa.BigInteger(), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('head_hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_seal')),
    sa.UniqueConstraint('last_event_id', name=op.f('uq_audit_seal_last_event_id'))
    )
    op.create_table('audit_link',
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_audit_link'))
    )
    op.create_table('audit_export_cursor',
    sa.Column('destination', sa.String(length=200), nullable=False),
    sa.Column('last_event_id', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('destination', name=op.f('pk_audit_export_cursor'))
    )
    op.create_table('object_to_delete',
    sa.Column('object_key', sa.String(length=128), nullable=False),
    sa.Column('noted_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('object_key', name=op.f('pk_object_to_delete'))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP; END $$
        """)
        for table in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only()")
    else:
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only ({verb} refused)'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_chain_append_only()")
    else:
        for table in APPEND_ONLY:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    op.drop_table('object_to_delete')
    op.drop_table('audit_export_cursor')
    op.drop_table('audit_link')
    op.drop_table('audit_seal')
