"""tokens: personal API tokens, stored hashed, for the CLI on a shared database (issue 23)

Revision ID: 0008_tokens
Revises: 0007_retrains
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_tokens'
down_revision = '0007_retrains'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=12), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['users.id']),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest'))
    op.create_index('ix_tokens_user_id', 'tokens', ['user_id'])


def downgrade() -> None:
    op.drop_index('ix_tokens_user_id', table_name='tokens')
    op.drop_table('tokens')
