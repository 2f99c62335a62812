"""An imaging order may ask for its scan to be read: priority, clinical question, named doctor or the pool.

Revision ID: e4a8b2c61f0d
Revises: b7d1c4e2a9f3
Create Date: 2026-12-04 07:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'e4a8b2c61f0d'
down_revision: str | Sequence[str] | None = 'b7d1c4e2a9f3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("imaging_order") as batch:
        batch.add_column(sa.Column("read_priority", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("read_question", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("read_assigned_to_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f("fk_imaging_order_read_assigned_to_id_user_account"), "user_account",
                                 ["read_assigned_to_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("imaging_order") as batch:
        batch.drop_constraint(batch.f("fk_imaging_order_read_assigned_to_id_user_account"), type_="foreignkey")
        batch.drop_column("read_assigned_to_id")
        batch.drop_column("read_question")
        batch.drop_column("read_priority")
