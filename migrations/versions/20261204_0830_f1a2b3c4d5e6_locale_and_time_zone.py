"""Each facility has a time zone and a default language; each user may choose their own.

Revision ID: f1a2b3c4d5e6
Revises: e4a8b2c61f0d
Create Date: 2026-12-04 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'f1a2b3c4d5e6'
down_revision: str | Sequence[str] | None = 'e4a8b2c61f0d'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("facility") as batch:
        batch.add_column(sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False))
        batch.add_column(sa.Column("default_locale", sa.String(length=16), server_default="en", nullable=False))
    with op.batch_alter_table("user_account") as batch:
        batch.add_column(sa.Column("locale", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_account") as batch:
        batch.drop_column("timezone")
        batch.drop_column("locale")
    with op.batch_alter_table("facility") as batch:
        batch.drop_column("default_locale")
        batch.drop_column("timezone")
