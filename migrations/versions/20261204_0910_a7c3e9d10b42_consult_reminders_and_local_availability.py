"""Availability in the doctor's own zone; reminders sent once per appointment time; SMS copies in the outbox.

Revision ID: a7c3e9d10b42
Revises: c4f1a7e2b9d3
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'a7c3e9d10b42'
down_revision: str | Sequence[str] | None = 'c4f1a7e2b9d3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Windows published before zones existed were UTC: they keep that meaning.
    with op.batch_alter_table("availability") as batch:
        batch.add_column(sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False))
    with op.batch_alter_table("notification") as batch:
        batch.add_column(sa.Column("address", sa.String(length=254), nullable=True))
    op.create_table(
        "appointment_reminder",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("lead_minutes", sa.Integer(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointment.id"],
                                name=op.f("fk_appointment_reminder_appointment_id_appointment")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_reminder")),
        sa.UniqueConstraint("appointment_id", "lead_minutes", "start_at",
                            name=op.f("uq_appointment_reminder_appointment_id")),
    )
    op.create_index(op.f("ix_appointment_reminder_appointment_id"), "appointment_reminder", ["appointment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_appointment_reminder_appointment_id"), table_name="appointment_reminder")
    op.drop_table("appointment_reminder")
    with op.batch_alter_table("notification") as batch:
        batch.drop_column("address")
    with op.batch_alter_table("availability") as batch:
        batch.drop_column("timezone")
