"""Video consults (availability, appointments, encounters, sessions, signaling, chat) and the notification outbox.

Revision ID: 2f04f98c9995
Revises: 3d48bc9f5466
Create Date: 2026-11-24 16:33:44.344549
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '2f04f98c9995'
down_revision: str | Sequence[str] | None = '3d48bc9f5466'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('availability',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('doctor_id', sa.Integer(), nullable=False),
    sa.Column('weekday', sa.Integer(), nullable=False),
    sa.Column('start_time', sa.Time(), nullable=False),
    sa.Column('end_time', sa.Time(), nullable=False),
    sa.Column('slot_minutes', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('slot_minutes >= 5 AND slot_minutes <= 240', name=op.f('ck_availability_slot_length')),
    sa.CheckConstraint('start_time < end_time', name=op.f('ck_availability_window_order')),
    sa.CheckConstraint('weekday >= 0 AND weekday <= 6', name=op.f('ck_availability_weekday_range')),
    sa.ForeignKeyConstraint(['doctor_id'], ['user_account.id'], name=op.f('fk_availability_doctor_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_availability'))
    )
    with op.batch_alter_table('availability', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_availability_doctor_id'), ['doctor_id'], unique=False)

    op.create_table('availability_exception',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('doctor_id', sa.Integer(), nullable=False),
    sa.Column('starts_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.CheckConstraint('starts_at < ends_at', name=op.f('ck_availability_exception_period_order')),
    sa.ForeignKeyConstraint(['doctor_id'], ['user_account.id'], name=op.f('fk_availability_exception_doctor_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_availability_exception'))
    )
    with op.batch_alter_table('availability_exception', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_availability_exception_doctor_id'), ['doctor_id'], unique=False)

    op.create_table('notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('recipient_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'sent', 'failed', name='notificationstatus', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('read_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['recipient_id'], ['user_account.id'], name=op.f('fk_notification_recipient_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification'))
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_recipient_id'), ['recipient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notification_status'), ['status'], unique=False)

    op.create_table('appointment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('doctor_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('booked_by_id', sa.Integer(), nullable=False),
    sa.Column('start_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('end_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Enum('proposed', 'booked', 'arrived', 'fulfilled', 'cancelled', 'noshow', name='appointmentstatus', native_enum=False, length=16), nullable=False),
    sa.Column('slot_key', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=300), nullable=True),
    sa.Column('checked_in_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('admitted_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('cancel_reason', sa.String(length=300), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('start_at < end_at', name=op.f('ck_appointment_slot_order')),
    sa.ForeignKeyConstraint(['booked_by_id'], ['user_account.id'], name=op.f('fk_appointment_booked_by_id_user_account')),
    sa.ForeignKeyConstraint(['doctor_id'], ['user_account.id'], name=op.f('fk_appointment_doctor_id_user_account')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_appointment_patient_id_patient')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_appointment')),
    sa.UniqueConstraint('slot_key', name=op.f('uq_appointment_slot_key'))
    )
    with op.batch_alter_table('appointment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_appointment_doctor_id'), ['doctor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_appointment_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_appointment_start_at'), ['start_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_appointment_status'), ['status'], unique=False)

    op.create_table('consult_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('media_mode', sa.String(length=16), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointment.id'], name=op.f('fk_consult_session_appointment_id_appointment')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consult_session')),
    sa.UniqueConstraint('appointment_id', name=op.f('uq_consult_session_appointment_id'))
    )
    op.create_table('encounter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('doctor_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('in-progress', 'finished', name='encounterstatus', native_enum=False, length=16), nullable=False),
    sa.Column('encounter_class', sa.String(length=8), nullable=False),
    sa.Column('started_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('diagnosis', sa.String(length=300), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointment.id'], name=op.f('fk_encounter_appointment_id_appointment')),
    sa.ForeignKeyConstraint(['doctor_id'], ['user_account.id'], name=op.f('fk_encounter_doctor_id_user_account')),
    sa.ForeignKeyConstraint(['patient_id'], ['patient.id'], name=op.f('fk_encounter_patient_id_patient')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encounter')),
    sa.UniqueConstraint('appointment_id', name=op.f('uq_encounter_appointment_id'))
    )
    with op.batch_alter_table('encounter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_encounter_doctor_id'), ['doctor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_encounter_patient_id'), ['patient_id'], unique=False)

    op.create_table('chat_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('encounter_id', sa.Integer(), nullable=False),
    sa.Column('sender_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.String(length=2000), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['encounter_id'], ['encounter.id'], name=op.f('fk_chat_message_encounter_id_encounter')),
    sa.ForeignKeyConstraint(['sender_id'], ['user_account.id'], name=op.f('fk_chat_message_sender_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_message'))
    )
    with op.batch_alter_table('chat_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chat_message_encounter_id'), ['encounter_id'], unique=False)

    op.create_table('consult_participant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('patient', 'doctor', 'guest', name='participantkind', native_enum=False, length=16), nullable=False),
    sa.Column('invited_by_id', sa.Integer(), nullable=True),
    sa.Column('joined_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('left_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['invited_by_id'], ['user_account.id'], name=op.f('fk_consult_participant_invited_by_id_user_account')),
    sa.ForeignKeyConstraint(['session_id'], ['consult_session.id'], name=op.f('fk_consult_participant_session_id_consult_session')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_consult_participant_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consult_participant')),
    sa.UniqueConstraint('session_id', 'user_id', name=op.f('uq_consult_participant_session_id'))
    )
    with op.batch_alter_table('consult_participant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consult_participant_session_id'), ['session_id'], unique=False)

    op.create_table('join_token_use',
    sa.Column('jti', sa.String(length=32), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('used_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['consult_session.id'], name=op.f('fk_join_token_use_session_id_consult_session')),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_join_token_use_user_id_user_account')),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_join_token_use'))
    )
    op.create_table('signal_message',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('sender_id', sa.Integer(), nullable=False),
    sa.Column('recipient_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['recipient_id'], ['user_account.id'], name=op.f('fk_signal_message_recipient_id_user_account')),
    sa.ForeignKeyConstraint(['sender_id'], ['user_account.id'], name=op.f('fk_signal_message_sender_id_user_account')),
    sa.ForeignKeyConstraint(['session_id'], ['consult_session.id'], name=op.f('fk_signal_message_session_id_consult_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signal_message'))
    )
    with op.batch_alter_table('signal_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_message_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_signal_message_session_id'), ['session_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('signal_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_message_session_id'))
        batch_op.drop_index(batch_op.f('ix_signal_message_created_at'))

    op.drop_table('signal_message')
    op.drop_table('join_token_use')
    with op.batch_alter_table('consult_participant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consult_participant_session_id'))

    op.drop_table('consult_participant')
    with op.batch_alter_table('chat_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chat_message_encounter_id'))

    op.drop_table('chat_message')
    with op.batch_alter_table('encounter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_encounter_patient_id'))
        batch_op.drop_index(batch_op.f('ix_encounter_doctor_id'))

    op.drop_table('encounter')
    op.drop_table('consult_session')
    with op.batch_alter_table('appointment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_appointment_status'))
        batch_op.drop_index(batch_op.f('ix_appointment_start_at'))
        batch_op.drop_index(batch_op.f('ix_appointment_patient_id'))
        batch_op.drop_index(batch_op.f('ix_appointment_doctor_id'))

    op.drop_table('appointment')
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_status'))
        batch_op.drop_index(batch_op.f('ix_notification_recipient_id'))

    op.drop_table('notification')
    with op.batch_alter_table('availability_exception', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_availability_exception_doctor_id'))

    op.drop_table('availability_exception')
    with op.batch_alter_table('availability', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_availability_doctor_id'))

    op.drop_table('availability')
