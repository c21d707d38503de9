"""jobs: attempts, max_retries, pid, host, history (scale-out, issue 15)

Revision ID: 0002_jobs
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002_jobs'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        b.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        b.add_column(sa.Column('max_retries', sa.Integer(), nullable=False, server_default='1'))
        b.add_column(sa.Column('pid', sa.Integer(), nullable=True))
        b.add_column(sa.Column('host', sa.String(length=200), nullable=True))
        b.add_column(sa.Column('history', sa.JSON(), nullable=True))
    # Jobs from before: every started one had one attempt; none of the finished ones is retried now.
    op.execute("UPDATE jobs SET attempts = 1 WHERE started_at IS NOT NULL")
    op.execute("UPDATE jobs SET max_retries = 0 WHERE status IN ('succeeded', 'failed', 'cancelled', 'lost')")


def downgrade() -> None:
    with op.batch_alter_table('jobs') as b:
        for c in ('history', 'host', 'pid', 'max_retries', 'attempts'):
            b.drop_column(c)
