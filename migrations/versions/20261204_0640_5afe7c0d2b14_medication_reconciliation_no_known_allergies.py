"""Medication list kept in step with prescriptions; "no known allergies" as a recorded statement.

Revision ID: 5afe7c0d2b14
Revises: 5c1d2e7a9b30
Create Date: 2026-12-04 05:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '5afe7c0d2b14'
down_revision: str | Sequence[str] | None = '5c1d2e7a9b30'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('medication_statement', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prescription_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_medication_statement_prescription_id'), ['prescription_id'],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_medication_statement_prescription_id_prescription'),
                                    'prescription', ['prescription_id'], ['id'])
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.add_column(sa.Column('no_known_allergies_at', app.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('no_known_allergies_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_patient_no_known_allergies_by_id_user_account'),
                                    'user_account', ['no_known_allergies_by_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_patient_no_known_allergies_by_id_user_account'), type_='foreignkey')
        batch_op.drop_column('no_known_allergies_by_id')
        batch_op.drop_column('no_known_allergies_at')
    with op.batch_alter_table('medication_statement', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_medication_statement_prescription_id_prescription'),
                                 type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_medication_statement_prescription_id'))
        batch_op.drop_column('prescription_id')
