"""Chat, serving and analytics: model servers, hourly usage rollups, hourly and daily latency histograms,
privacy opt-outs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import modelbay.engine.db.schema

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def _version_fk() -> sa.ForeignKey:
    return sa.ForeignKey('model_versions.id', ondelete='CASCADE')


def upgrade() -> None:
    op.create_table(
        'servers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(length=64), nullable=False),
        sa.Column('state', sa.Enum('starting', 'running', 'stopping', 'stopped', 'down', name='serverstate',
                                   native_enum=False, length=32), nullable=False),
        sa.Column('engine', sa.String(length=32), nullable=False),
        sa.Column('endpoint', sa.String(length=256), nullable=True),
        sa.Column('served_name', sa.String(length=200), nullable=False),
        sa.Column('host', sa.String(length=200), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('adapters', sa.JSON(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('requester', sa.String(length=128), nullable=False),
        sa.Column('created_at', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ready_at', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column('ended_at', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                                name=op.f('fk_servers_model_version_id_model_versions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_servers')),
        sa.UniqueConstraint('job_id', name=op.f('uq_servers_job_id')),
    )
    op.create_index(op.f('ix_servers_model_version_id'), 'servers', ['model_version_id'], unique=False)
    op.create_index(op.f('ix_servers_state'), 'servers', ['state'], unique=False)

    op.create_table(
        'usage_hourly',
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('hour', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in (
            'requests', 'failures', 'input_tokens', 'output_tokens')),
        sa.Column('ttft_ms_sum', sa.Float(), nullable=False),
        sa.Column('total_ms_sum', sa.Float(), nullable=False),
        sa.Column('tps_sum', sa.Float(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in ('tps_count', 'ups', 'downs')),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                                name=op.f('fk_usage_hourly_model_version_id_model_versions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('model_version_id', 'hour', name=op.f('pk_usage_hourly')),
    )
    op.create_table(
        'latency_hourly',
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('hour', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column('bucket', sa.Integer(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                                name=op.f('fk_latency_hourly_model_version_id_model_versions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('model_version_id', 'hour', 'bucket', name=op.f('pk_latency_hourly')),
    )
    op.create_table(
        'latency_daily',
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('day', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column('bucket', sa.Integer(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                                name=op.f('fk_latency_daily_model_version_id_model_versions'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('model_version_id', 'day', 'bucket', name=op.f('pk_latency_daily')),
    )
    op.create_table(
        'privacy_optouts',
        sa.Column('user_key', sa.String(length=128), nullable=False),
        sa.Column('created_at', modelbay.engine.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('user_key', name=op.f('pk_privacy_optouts')),
    )
    # Plain ADD COLUMN (no batch rebuild), as in 0002: SQLite does these in place.
    op.add_column('messages', sa.Column('status', sa.String(length=16), server_default='ok', nullable=False))
    op.add_column('messages', sa.Column('user_key', sa.String(length=128), nullable=True))
    op.create_index(op.f('ix_messages_user_key'), 'messages', ['user_key'], unique=False)
    op.add_column('analytics_events', sa.Column('latency_bucket', sa.Integer(), nullable=True))
    op.add_column('analytics_events', sa.Column('message_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    for column in ('message_id', 'latency_bucket'):
        op.drop_column('analytics_events', column)
    op.drop_index(op.f('ix_messages_user_key'), table_name='messages')
    op.drop_column('messages', 'user_key')
    op.drop_column('messages', 'status')
    op.drop_table('privacy_optouts')
    op.drop_table('latency_daily')
    op.drop_table('latency_hourly')
    op.drop_table('usage_hourly')
    op.drop_index(op.f('ix_servers_state'), table_name='servers')
    op.drop_index(op.f('ix_servers_model_version_id'), table_name='servers')
    op.drop_table('servers')
