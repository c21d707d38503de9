"""retrains: one row per retrain, grouping its seeds' children and controls (issue 22)

Revision ID: 0007_retrains
Revises: 0006_paths
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_retrains'
down_revision = '0006_paths'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retrains',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('method', sa.String(length=40), nullable=False),
    sa.Column('seeds', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['models.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['created_by'], ['users.id']),
    sa.PrimaryKeyConstraint('id'))


def downgrade() -> None:
    op.drop_table('retrains')
