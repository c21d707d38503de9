"""leases: a worker's lease (lease_until, stopped_at) and when a job's message was last sent (issue 23)

Revision ID: 0009_leases
Revises: 0008_tokens
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_leases'
down_revision = '0008_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers') as b:
        b.add_column(sa.Column('lease_until', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('stopped_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('queued_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        b.drop_column('queued_at')
    with op.batch_alter_table('workers') as b:
        b.drop_column('stopped_at')
        b.drop_column('lease_until')
