"""Mean time to first token over answers that had one (usage_hourly.ttft_count); a per-server API key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild), as in 0002 and 0003: SQLite does these in place.
    op.add_column('usage_hourly', sa.Column('ttft_count', sa.BigInteger(), server_default='0', nullable=False))
    # Before this column, answers without a first token added 0 ms to ttft_ms_sum; those with tokens per second
    # (answers that produced tokens) are the closest count of answers that had a first token.
    op.execute("UPDATE usage_hourly SET ttft_count = tps_count")
    op.add_column('servers', sa.Column('api_key', sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column('servers', 'api_key')
    op.drop_column('usage_hourly', 'ttft_count')
