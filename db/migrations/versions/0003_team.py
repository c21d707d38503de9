"""team: user roles, audit log, reading studies (issue 13)

Revision ID: 0003_team
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_team'
down_revision = '0002_jobs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as b:
        b.add_column(sa.Column('role', sa.String(length=20), nullable=False, server_default='reader'))
        b.add_column(sa.Column('email', sa.String(length=320), nullable=True))
    # users from before roles could do everything: they stay admins
    op.execute("UPDATE users SET role = 'admin'")
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('user_name', sa.String(length=120), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('object', sa.String(length=200), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_audit_at', 'audit_log', ['at'])
    op.create_index('ix_audit_log_action', 'audit_log', ['action'])
    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id']),
    sa.ForeignKeyConstraint(['run_id'], ['explanation_runs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'))
    op.create_table('study_questions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('scale', sa.String(length=10), nullable=False),
    sa.Column('levels', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_study_questions_study_id', 'study_questions', ['study_id'])
    op.create_table('study_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('explanation_id', sa.Integer(), nullable=True),
    sa.Column('cf_a_id', sa.Integer(), nullable=True),
    sa.Column('cf_b_id', sa.Integer(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['explanation_id'], ['explanations.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['cf_a_id'], ['counterfactuals.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['cf_b_id'], ['counterfactuals.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_study_items_study_id', 'study_items', ['study_id'])
    op.create_table('study_readers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id']),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'user_id'))
    op.create_table('study_answers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('question_id', sa.Integer(), nullable=False),
    sa.Column('side', sa.String(length=1), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.String(length=100), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('consensus', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['item_id'], ['study_items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['question_id'], ['study_questions.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id']),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_answers_study', 'study_answers', ['study_id', 'question_id', 'item_id'])


def downgrade() -> None:
    for t in ('study_answers', 'study_readers', 'study_items', 'study_questions', 'studies', 'audit_log'):
        op.drop_table(t)
    with op.batch_alter_table('users') as b:
        b.drop_column('email')
        b.drop_column('role')
