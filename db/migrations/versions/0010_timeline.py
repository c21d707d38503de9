"""timeline: a job's measured progress curve, [[seconds since its attempt started, fraction], …] (issue 25: ETAs from
measured rates, weighted by the cost each phase had in the last finished job of its kind)

Revision ID: 0010_timeline
Revises: 0009_leases
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_timeline'
down_revision = '0009_leases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('timeline', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        b.drop_column('timeline')
