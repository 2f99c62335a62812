"""Accounts, facilities, patient records and the append-only audit trail.

Revision ID: e93a46b711c7
Revises:
Create Date: 2026-11-24 16:25:55.317129
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = 'e93a46b711c7'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('occurred_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_role', sa.String(length=16), nullable=True),
    sa.Column('actor_name', sa.String(length=200), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.Enum('success', 'denied', 'failure', name='outcome', native_enum=False, length=8), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=True),
    sa.Column('resource_type', sa.String(length=48), nullable=True),
    sa.Column('resource_id', sa.String(length=128), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_occurred_at'), ['occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_patient_id'), ['patient_id'], unique=False)

    op.create_table('facility',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.Enum('hospital', 'clinic', name='facilitykind', native_enum=False, length=16), nullable=False),
    sa.Column('has_pharmacy', sa.Boolean(), nullable=False),
    sa.Column('address', sa.String(length=300), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_facility')),
    sa.UniqueConstraint('code', name=op.f('uq_facility_code'))
    )
    op.create_table('sign_in_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.Column('at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_in_attempt'))
    )
    with op.batch_alter_table('sign_in_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sign_in_attempt_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sign_in_attempt_ip'), ['ip'], unique=False)

    op.create_table('user_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.Enum('patient', 'doctor', 'clinic_staff', 'pharmacist', 'admin', name='role', native_enum=False, length=16), nullable=False),
    sa.Column('facility_id', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('failed_sign_ins', sa.Integer(), nullable=False),
    sa.Column('locked_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_sign_in_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('session_epoch', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role = 'patient' OR role = 'admin' OR facility_id IS NOT NULL", name=op.f('ck_user_account_staff_facility')),
    sa.ForeignKeyConstraint(['facility_id'], ['facility.id'], name=op.f('fk_user_account_facility_id_facility')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_account')),
    sa.UniqueConstraint('email', name=op.f('uq_user_account_email'))
    )
    op.create_table('patient',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mrn', sa.String(length=16), nullable=False),
    sa.Column('given_name', sa.String(length=100), nullable=False),
    sa.Column('family_name', sa.String(length=100), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=False),
    sa.Column('sex', sa.Enum('female', 'male', 'other', 'unknown', name='sex', native_enum=False, length=8), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('address', sa.String(length=300), nullable=True),
    sa.Column('given_name_search', sa.String(length=100), nullable=False),
    sa.Column('family_name_search', sa.String(length=100), nullable=False),
    sa.Column('facility_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('registered_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['facility_id'], ['facility.id'], name=op.f('fk_patient_facility_id_facility')),
    sa.ForeignKeyConstraint(['registered_by_id'], ['user_account.id'], name=op.f('fk_patient_registered_by_id_user_account')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_patient_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patient')),
    sa.UniqueConstraint('mrn', name=op.f('uq_patient_mrn')),
    sa.UniqueConstraint('user_id', name=op.f('uq_patient_user_id'))
    )
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_birth_date'), ['birth_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_facility_id'), ['facility_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_family_name_search'), ['family_name_search'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_given_name_search'), ['given_name_search'], unique=False)

    op.create_table('allergy',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('substance', sa.String(length=120), nullable=False),
    sa.Column('reaction', sa.String(length=300), nullable=True),
    sa.Column('severity', sa.Enum('mild', 'moderate', 'severe', name='allergyseverity', native_enum=False), nullable=False),
    sa.Column('status', sa.Enum('active', 'resolved', 'inactive', name='clinicalstatus', native_enum=False), nullable=False),
    sa.Column('recorded_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_allergy_patient_id_patient'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user_account.id'], name=op.f('fk_allergy_recorded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_allergy'))
    )
    with op.batch_alter_table('allergy', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_allergy_patient_id'), ['patient_id'], unique=False)

    op.create_table('care_assignment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('practitioner_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('assigned_by_id', sa.Integer(), nullable=True),
    sa.Column('assigned_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['assigned_by_id'], ['user_account.id'], name=op.f('fk_care_assignment_assigned_by_id_user_account')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_care_assignment_patient_id_patient'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['practitioner_id'], ['user_account.id'], name=op.f('fk_care_assignment_practitioner_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_care_assignment'))
    )
    with op.batch_alter_table('care_assignment', schema=None) as batch_op:
        batch_op.create_index('ix_care_assignment_active', ['patient_id', 'practitioner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_care_assignment_practitioner_id'), ['practitioner_id'], unique=False)

    op.create_table('condition',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=True),
    sa.Column('onset_date', sa.Date(), nullable=True),
    sa.Column('status', sa.Enum('active', 'resolved', 'inactive', name='clinicalstatus', native_enum=False), nullable=False),
    sa.Column('recorded_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_condition_patient_id_patient'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user_account.id'], name=op.f('fk_condition_recorded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_condition'))
    )
    with op.batch_alter_table('condition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_condition_patient_id'), ['patient_id'], unique=False)

    op.create_table('medication_statement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('dosage', sa.String(length=200), nullable=True),
    sa.Column('status', sa.Enum('active', 'resolved', 'inactive', name='clinicalstatus', native_enum=False), nullable=False),
    sa.Column('recorded_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_medication_statement_patient_id_patient'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['user_account.id'], name=op.f('fk_medication_statement_recorded_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_medication_statement'))
    )
    with op.batch_alter_table('medication_statement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_medication_statement_patient_id'), ['patient_id'], unique=False)


    _create_audit_triggers()


def downgrade() -> None:
    _drop_audit_triggers()
    with op.batch_alter_table('medication_statement', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_medication_statement_patient_id'))

    op.drop_table('medication_statement')
    with op.batch_alter_table('condition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_condition_patient_id'))

    op.drop_table('condition')
    with op.batch_alter_table('care_assignment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_care_assignment_practitioner_id'))
        batch_op.drop_index('ix_care_assignment_active')

    op.drop_table('care_assignment')
    with op.batch_alter_table('allergy', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_allergy_patient_id'))

    op.drop_table('allergy')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_given_name_search'))
        batch_op.drop_index(batch_op.f('ix_patient_family_name_search'))
        batch_op.drop_index(batch_op.f('ix_patient_facility_id'))
        batch_op.drop_index(batch_op.f('ix_patient_birth_date'))

    op.drop_table('patient')
    op.drop_table('user_account')
    with op.batch_alter_table('sign_in_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_in_attempt_ip'))
        batch_op.drop_index(batch_op.f('ix_sign_in_attempt_at'))

    op.drop_table('sign_in_attempt')
    op.drop_table('facility')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_patient_id'))
        batch_op.drop_index(batch_op.f('ix_audit_event_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_audit_event_actor_id'))
        batch_op.drop_index(batch_op.f('ix_audit_event_action'))

    op.drop_table('audit_event')


def _create_audit_triggers() -> None:
    """Make audit_event append-only in the database itself, whatever client connects."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'audit_event is append-only (% refused)', TG_OP; END $$
        """)
        op.execute("CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event "
                   "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()")
        op.execute("CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()")
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
                       f"BEGIN SELECT RAISE(ABORT, 'audit_event is append-only ({verb} refused)'); END")


def _drop_audit_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_change ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
