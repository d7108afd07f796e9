"""Alembic environment: runs migrations on the engine handed over by engine.db.Database."""

from alembic import context
from sqlalchemy import create_engine

from modelbay.engine.db.schema.base import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    """Run migrations online against the configured engine."""
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch mode for ALTER
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
