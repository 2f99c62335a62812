"""OAuth: client web origins, authentication method and keys (private_key_jwt), dynamic registration flag;
SMART launch patient and audience on codes and tokens.

Revision ID: 5c1e0a7b3d21
Revises: 71913fcd0e5d
Create Date: 2026-12-04 05:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '5c1e0a7b3d21'
down_revision: str | Sequence[str] | None = '71913fcd0e5d'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('oauth_client') as batch:
        batch.add_column(sa.Column('web_origins', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('auth_method', sa.String(length=40), nullable=False,
                                   server_default='client_secret_basic'))
        batch.add_column(sa.Column('jwks', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('registered_dynamically', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.execute("UPDATE oauth_client SET auth_method = 'none' WHERE is_public")
    for table in ('oauth_authorization_code', 'oauth_token'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('patient_id', sa.Integer(), nullable=True))
            batch.add_column(sa.Column('audience', sa.Text(), nullable=True))
    op.create_table('oauth_assertion_jti',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.String(length=48), nullable=False),
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('expires_at', app.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_assertion_jti')),
    sa.UniqueConstraint('client_id', 'jti', name='uq_oauth_assertion_jti_client_id'))
    op.create_index(op.f('ix_oauth_assertion_jti_expires_at'), 'oauth_assertion_jti', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_oauth_assertion_jti_expires_at'), table_name='oauth_assertion_jti')
    op.drop_table('oauth_assertion_jti')
    for table in ('oauth_token', 'oauth_authorization_code'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('audience')
            batch.drop_column('patient_id')
    with op.batch_alter_table('oauth_client') as batch:
        batch.drop_column('registered_dynamically')
        batch.drop_column('jwks')
        batch.drop_column('auth_method')
        batch.drop_column('web_origins')
