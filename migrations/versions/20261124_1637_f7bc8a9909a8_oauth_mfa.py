"""OAuth2/OpenID Connect clients, codes, tokens and consents; TOTP factors and recovery codes.

Revision ID: f7bc8a9909a8
Revises: e93a46b711c7
Create Date: 2026-11-24 16:37:38.884315
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = 'f7bc8a9909a8'
down_revision: str | Sequence[str] | None = 'e93a46b711c7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('mfa_factor',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('secret_encrypted', sa.String(length=255), nullable=False),
    sa.Column('confirmed_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_step', sa.BigInteger(), nullable=False),
    sa.Column('failed_attempts', sa.Integer(), nullable=False),
    sa.Column('locked_until', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_mfa_factor_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_mfa_factor'))
    )
    op.create_table('mfa_recovery_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('used_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_mfa_recovery_code_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mfa_recovery_code'))
    )
    with op.batch_alter_table('mfa_recovery_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mfa_recovery_code_user_id'), ['user_id'], unique=False)

    op.create_table('oauth_authorization_code',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=48), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('nonce', sa.String(length=255), nullable=True),
    sa.Column('code_challenge', sa.String(length=128), nullable=True),
    sa.Column('code_challenge_method', sa.String(length=8), nullable=True),
    sa.Column('auth_time', sa.Integer(), nullable=False),
    sa.Column('amr', sa.String(length=40), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('used_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('family_id', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_oauth_authorization_code_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_authorization_code')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_oauth_authorization_code_code_hash'))
    )
    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_authorization_code_client_id'), ['client_id'], unique=False)

    op.create_table('oauth_client',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=48), nullable=False),
    sa.Column('client_secret_hash', sa.String(length=64), nullable=True),
    sa.Column('secret_rotated_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('redirect_uris', sa.JSON(), nullable=False),
    sa.Column('allowed_scope', sa.Text(), nullable=False),
    sa.Column('allowed_grants', sa.JSON(), nullable=False),
    sa.Column('service_user_id', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'], name=op.f('fk_oauth_client_created_by_id_user_account')),
    sa.ForeignKeyConstraint(['service_user_id'], ['user_account.id'], name=op.f('fk_oauth_client_service_user_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_client')),
    sa.UniqueConstraint('client_id', name=op.f('uq_oauth_client_client_id'))
    )
    op.create_table('oauth_consent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=48), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('granted_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_oauth_consent_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_consent')),
    sa.UniqueConstraint('user_id', 'client_id', name='uq_oauth_consent_user_client')
    )
    with op.batch_alter_table('oauth_consent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_consent_user_id'), ['user_id'], unique=False)

    op.create_table('oauth_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=48), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('grant_type', sa.String(length=40), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('access_token_hash', sa.String(length=64), nullable=False),
    sa.Column('refresh_token_hash', sa.String(length=64), nullable=True),
    sa.Column('family_id', sa.String(length=32), nullable=False),
    sa.Column('user_epoch', sa.Integer(), nullable=False),
    sa.Column('issued_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_in', sa.Integer(), nullable=False),
    sa.Column('refresh_expires_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('access_revoked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('refresh_revoked_at', app.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('revoke_reason', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_oauth_token_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_token')),
    sa.UniqueConstraint('access_token_hash', name=op.f('uq_oauth_token_access_token_hash')),
    sa.UniqueConstraint('refresh_token_hash', name=op.f('uq_oauth_token_refresh_token_hash'))
    )
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_token_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_token_family_id'), ['family_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_token_user_id'), ['user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_token_user_id'))
        batch_op.drop_index(batch_op.f('ix_oauth_token_family_id'))
        batch_op.drop_index(batch_op.f('ix_oauth_token_client_id'))

    op.drop_table('oauth_token')
    with op.batch_alter_table('oauth_consent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_consent_user_id'))

    op.drop_table('oauth_consent')
    op.drop_table('oauth_client')
    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_authorization_code_client_id'))

    op.drop_table('oauth_authorization_code')
    with op.batch_alter_table('mfa_recovery_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mfa_recovery_code_user_id'))

    op.drop_table('mfa_recovery_code')
    op.drop_table('mfa_factor')
