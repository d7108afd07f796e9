"""A/B experiments (variants with running totals, exposures, a latency histogram per variant), the blind arena
(battles and votes), and the variant a chat session was assigned to.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

import modelbay.engine.db.schema

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

UTC = modelbay.engine.db.schema.UTCDateTime(timezone=True)


def _totals() -> list[sa.Column]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in ('exposures', 'answers', 'failures', 'ups',
                                                                          'downs')]


def upgrade() -> None:
    op.create_table(
        'experiments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('alias', sa.String(length=64), nullable=True),
        sa.Column('metric', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('alpha', sa.Float(), nullable=False),
        sa.Column('guardrails', sa.JSON(), nullable=False),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.Column('winner_variant_id', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments')),
        sa.UniqueConstraint('name', name=op.f('uq_experiments_name')),
    )
    op.create_index(op.f('ix_experiments_alias'), 'experiments', ['alias'], unique=False)
    op.create_table(
        'experiment_variants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('experiment_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('weight', sa.Float(), nullable=False),
        sa.Column('system_prompt', sa.Text(), nullable=True),
        sa.Column('params', sa.JSON(), nullable=False),
        *_totals(),
        sa.Column('ms_sum', sa.Float(), nullable=False),
        sa.Column('ms_sq_sum', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE',
                                name=op.f('fk_experiment_variants_experiment_id_experiments')),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ondelete='CASCADE',
                                name=op.f('fk_experiment_variants_model_version_id_model_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_variants')),
        sa.UniqueConstraint('experiment_id', 'name', name='uq_experiment_variants_experiment_name'),
    )
    op.create_index(op.f('ix_experiment_variants_experiment_id'), 'experiment_variants', ['experiment_id'],
                    unique=False)
    op.create_table(
        'experiment_exposures',
        sa.Column('experiment_id', sa.Integer(), nullable=False),
        sa.Column('user_key', sa.String(length=128), nullable=False),
        sa.Column('variant_id', sa.Integer(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE',
                                name=op.f('fk_experiment_exposures_experiment_id_experiments')),
        sa.ForeignKeyConstraint(['variant_id'], ['experiment_variants.id'], ondelete='CASCADE',
                                name=op.f('fk_experiment_exposures_variant_id_experiment_variants')),
        sa.PrimaryKeyConstraint('experiment_id', 'user_key', name=op.f('pk_experiment_exposures')),
    )
    op.create_index(op.f('ix_experiment_exposures_variant_id'), 'experiment_exposures', ['variant_id'], unique=False)
    op.create_table(
        'experiment_latency',
        sa.Column('variant_id', sa.Integer(), nullable=False),
        sa.Column('bucket', sa.Integer(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['variant_id'], ['experiment_variants.id'], ondelete='CASCADE',
                                name=op.f('fk_experiment_latency_variant_id_experiment_variants')),
        sa.PrimaryKeyConstraint('variant_id', 'bucket', name=op.f('pk_experiment_latency')),
    )
    op.create_table(
        'arena_battles',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('category', sa.String(length=32), nullable=False),
        sa.Column('user_key', sa.String(length=128), nullable=False),
        sa.Column('prompt', sa.Text(), nullable=True),
        sa.Column('model_a_version_id', sa.Integer(), nullable=False),
        sa.Column('model_b_version_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['model_a_version_id'], ['model_versions.id'], ondelete='CASCADE',
                                name=op.f('fk_arena_battles_model_a_version_id_model_versions')),
        sa.ForeignKeyConstraint(['model_b_version_id'], ['model_versions.id'], ondelete='CASCADE',
                                name=op.f('fk_arena_battles_model_b_version_id_model_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_arena_battles')),
    )
    op.create_index(op.f('ix_arena_battles_category'), 'arena_battles', ['category'], unique=False)
    op.create_index(op.f('ix_arena_battles_user_key'), 'arena_battles', ['user_key'], unique=False)
    op.create_table(
        'arena_votes',
        sa.Column('battle_id', sa.Integer(), nullable=False),
        sa.Column('user_key', sa.String(length=128), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['battle_id'], ['arena_battles.id'], ondelete='CASCADE',
                                name=op.f('fk_arena_votes_battle_id_arena_battles')),
        sa.PrimaryKeyConstraint('battle_id', 'user_key', name=op.f('pk_arena_votes')),
    )
    op.create_index('ix_arena_votes_user_time', 'arena_votes', ['user_key', 'created_at'], unique=False)
    # A column with a foreign key: SQLite rebuilds the table (batch mode), PostgreSQL alters it in place.
    with op.batch_alter_table('chat_sessions') as batch:
        batch.add_column(sa.Column('variant_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_chat_sessions_variant_id_experiment_variants'), 'experiment_variants',
                                 ['variant_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('chat_sessions') as batch:
        batch.drop_constraint(op.f('fk_chat_sessions_variant_id_experiment_variants'), type_='foreignkey')
        batch.drop_column('variant_id')
    op.drop_index('ix_arena_votes_user_time', table_name='arena_votes')
    op.drop_table('arena_votes')
    op.drop_index(op.f('ix_arena_battles_user_key'), table_name='arena_battles')
    op.drop_index(op.f('ix_arena_battles_category'), table_name='arena_battles')
    op.drop_table('arena_battles')
    op.drop_table('experiment_latency')
    op.drop_index(op.f('ix_experiment_exposures_variant_id'), table_name='experiment_exposures')
    op.drop_table('experiment_exposures')
    op.drop_index(op.f('ix_experiment_variants_experiment_id'), table_name='experiment_variants')
    op.drop_table('experiment_variants')
    op.drop_index(op.f('ix_experiments_alias'), table_name='experiments')
    op.drop_table('experiments')
