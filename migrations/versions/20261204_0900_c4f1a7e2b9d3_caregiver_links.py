"""Caregivers: a family member's account linked as a patient's proxy with chosen rights; the audit trail records
whom an action was taken for; a dispense names the registered caregiver who collected it.

Revision ID: c4f1a7e2b9d3
Revises: f1a2b3c4d5e6
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = 'c4f1a7e2b9d3'
down_revision: str | Sequence[str] | None = 'f1a2b3c4d5e6'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('caregiver_link',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('caregiver_id', sa.Integer(), nullable=False),
    sa.Column('relationship', sa.Enum('spouse', 'child', 'grandchild', 'parent', 'sibling', 'other_family',
                                      'friend', 'neighbour', name='caregiverrelationship', native_enum=False,
                                      length=16), nullable=False),
    sa.Column('can_record', sa.Boolean(), nullable=False),
    sa.Column('can_book', sa.Boolean(), nullable=False),
    sa.Column('can_join', sa.Boolean(), nullable=False),
    sa.Column('can_medicine', sa.Boolean(), nullable=False),
    sa.Column('granted_by_id', sa.Integer(), nullable=False),
    sa.Column('consent_method', sa.Enum('in_app', 'signed_form', 'spoken', name='consentmethod', native_enum=False,
                                        length=16), nullable=False),
    sa.Column('consent_recorded_by_id', sa.Integer(), nullable=False),
    sa.Column('consent_recorded_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('consent_reference', sa.String(length=120), nullable=True),
    sa.Column('valid_from', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('valid_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['caregiver_id'], ['user_account.id'],
                            name=op.f('fk_caregiver_link_caregiver_id_user_account')),
    sa.ForeignKeyConstraint(['consent_recorded_by_id'], ['user_account.id'],
                            name=op.f('fk_caregiver_link_consent_recorded_by_id_user_account')),
    sa.ForeignKeyConstraint(['granted_by_id'], ['user_account.id'],
                            name=op.f('fk_caregiver_link_granted_by_id_user_account')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_caregiver_link_patient_id_patient'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['revoked_by_id'], ['user_account.id'],
                            name=op.f('fk_caregiver_link_revoked_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_caregiver_link'))
    )
    with op.batch_alter_table('caregiver_link') as batch:
        batch.create_index(batch.f('ix_caregiver_link_caregiver_id'), ['caregiver_id'], unique=False)
        batch.create_index(batch.f('ix_caregiver_link_patient_id'), ['patient_id'], unique=False)
    with op.batch_alter_table('audit_event') as batch:
        batch.add_column(sa.Column('on_behalf_of', sa.Integer(), nullable=True))
        batch.create_index(batch.f('ix_audit_event_on_behalf_of'), ['on_behalf_of'], unique=False)
    with op.batch_alter_table('dispense') as batch:
        batch.add_column(sa.Column('caregiver_link_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f('fk_dispense_caregiver_link_id_caregiver_link'), 'caregiver_link',
                                 ['caregiver_link_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('dispense') as batch:
        batch.drop_constraint(batch.f('fk_dispense_caregiver_link_id_caregiver_link'), type_='foreignkey')
        batch.drop_column('caregiver_link_id')
    with op.batch_alter_table('audit_event') as batch:
        batch.drop_index(batch.f('ix_audit_event_on_behalf_of'))
        batch.drop_column('on_behalf_of')
    with op.batch_alter_table('caregiver_link') as batch:
        batch.drop_index(batch.f('ix_caregiver_link_patient_id'))
        batch.drop_index(batch.f('ix_caregiver_link_caregiver_id'))
    op.drop_table('caregiver_link')
