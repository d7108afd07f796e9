"""Registry search: derived search columns on models (text, tags, memory, speed, accuracy), downloads index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# The columns as this revision reads and writes them; the ORM may change later, a migration must not.
_models = sa.table(
    'models',
    sa.column('id', sa.Integer()),
    sa.column('name', sa.String()),
    sa.column('display_name', sa.String()),
    sa.column('repo_id', sa.String()),
    sa.column('author', sa.String()),
    sa.column('tags', sa.JSON()),
    sa.column('description', sa.Text()),
    sa.column('size_bytes', sa.BigInteger()),
    sa.column('requirements', sa.JSON()),
    sa.column('performance', sa.JSON()),
    sa.column('search_text', sa.Text()),
    sa.column('tags_text', sa.Text()),
    sa.column('memory_bytes', sa.BigInteger()),
    sa.column('tokens_per_s', sa.Float()),
    sa.column('accuracy', sa.Float()),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _derived(row: Any) -> dict[str, Any]:
    # A frozen copy of engine._search.derived_columns as of this revision.
    tags = [str(t).replace(',', ' ').strip().lower() for t in row.tags or []]
    tags = [t for t in tags if t]
    parts = (row.repo_id, row.name, row.display_name, row.author, ' '.join(tags), row.description)
    performance = row.performance or {}
    stated_memory = _number((row.requirements or {}).get('memory_bytes'))
    search_text = ''
    for word in ' '.join(p for p in parts if p).lower().split():
        if word not in search_text:
            search_text = f'{search_text} {word}' if search_text else word
    return {
        'search_text': search_text,
        'tags_text': ',' + ''.join(f'{t},' for t in tags),
        'memory_bytes': int(stated_memory) if stated_memory is not None else row.size_bytes,
        'tokens_per_s': _number(performance.get('tokens_per_s')),
        'accuracy': _number(performance.get('accuracy')),
    }


def upgrade() -> None:
    # Only ADD COLUMN and CREATE INDEX, which SQLite does in place: a batch rebuild would drop `models`, and with
    # foreign keys on that deletes every version by cascade. The server defaults make NOT NULL possible in place.
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('search_text', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('tags_text', sa.Text(), server_default=',', nullable=False))
        batch_op.add_column(sa.Column('memory_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('tokens_per_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('accuracy', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_models_downloads'), ['downloads'], unique=False)

    connection = op.get_bind()
    for row in connection.execute(sa.select(_models)).all():
        connection.execute(sa.update(_models).where(_models.c.id == row.id).values(**_derived(row)))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_downloads'))
    # Plain DROP COLUMN (SQLite 3.35+) rather than a batch rebuild, for the same cascade reason as upgrade().
    for column in ('accuracy', 'tokens_per_s', 'memory_bytes', 'tags_text', 'search_text'):
        op.drop_column('models', column)
