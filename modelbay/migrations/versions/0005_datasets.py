"""Datasets for fine-tuning: one row per person and file content (the uploads folder becomes this table).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import modelbay.engine.db.schema

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table only: created the same way on SQLite and PostgreSQL (no batch rebuild of anything).
    op.create_table(
        'datasets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('owner', sa.String(length=128), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('filename', sa.String(length=200), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('format', sa.String(length=32), nullable=False),
        sa.Column('format_given', sa.Boolean(), nullable=False),
        sa.Column('columns', sa.JSON(), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('valid_rows', sa.Integer(), nullable=False),
        sa.Column('duplicates', sa.Integer(), nullable=False),
        sa.Column('kinds', sa.JSON(), nullable=False),
        sa.Column('problems', sa.JSON(), nullable=False),
        sa.Column('created_at', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
        sa.UniqueConstraint('owner', 'name', name='uq_datasets_owner_name'),
        sa.UniqueConstraint('owner', 'sha256', name='uq_datasets_owner_sha256'),
    )
    op.create_index(op.f('ix_datasets_owner'), 'datasets', ['owner'], unique=False)
    op.create_index(op.f('ix_datasets_sha256'), 'datasets', ['sha256'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_datasets_sha256'), table_name='datasets')
    op.drop_index(op.f('ix_datasets_owner'), table_name='datasets')
    op.drop_table('datasets')
