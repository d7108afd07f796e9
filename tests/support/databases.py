"""Migrated test databases without running every migration for every test.

Running the migrations costs about 0.1 s on SQLite and about 1 s on PostgreSQL (a DROP SCHEMA, then each revision's
DDL); most scenario tests want only the result. `MigratedSqlite` migrates one file per test process and copies it for
each test; `MigratedSchema` migrates the process's PostgreSQL schema once and, before each later test, empties its
tables, but only while the schema is still exactly what the migrations made (a test that changed it, downgraded it or
dropped it gets a fresh migration). Either way a test starts from what the migrations produce, with no rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from modelbay.engine.db.database import Database

__all__ = ["MigratedSchema", "MigratedSqlite"]


class MigratedSqlite:
    """One SQLite file migrated to head, copied to wherever a test wants its database."""

    def __init__(self, folder: Path) -> None:
        self._template = folder / "migrated.db"
        db = Database(f"sqlite:///{self._template}")
        db.upgrade()
        with db.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file itself
        db.dispose()

    def copy_to(self, url: str) -> None:
        """Put a migrated database at this sqlite:/// URL's path."""
        shutil.copyfile(self._template, url.split("///", 1)[1])


# Everything a migration creates in a schema, in an order that does not depend on how it was created.
_SHAPE = text("""
    SELECT 'column', table_name, concat_ws(' ', column_name, data_type, character_maximum_length, is_nullable,
                                           column_default, is_identity)
      FROM information_schema.columns WHERE table_schema = :schema
    UNION ALL SELECT 'index', tablename, indexdef FROM pg_indexes WHERE schemaname = :schema
    UNION ALL SELECT 'constraint', rel.relname, con.conname || ' ' || pg_get_constraintdef(con.oid)
      FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
      JOIN pg_namespace ns ON ns.oid = con.connamespace WHERE ns.nspname = :schema
    UNION ALL SELECT 'sequence', sequence_name, concat_ws(' ', data_type, start_value, increment)
      FROM information_schema.sequences WHERE sequence_schema = :schema
    UNION ALL SELECT 'view', table_name, view_definition FROM information_schema.views WHERE table_schema = :schema
    UNION ALL SELECT 'trigger', event_object_table, trigger_name || ' ' || action_statement
      FROM information_schema.triggers WHERE trigger_schema = :schema
    UNION ALL SELECT 'routine', routine_name, routine_definition
      FROM information_schema.routines WHERE routine_schema = :schema
    ORDER BY 1, 2, 3
""")


class MigratedSchema:
    """A PostgreSQL schema of this process kept as the migrations leave it, emptied of rows for each test."""

    def __init__(self, server_url: str, schema: str, url: str) -> None:
        self._server_url = server_url  # the database, without the schema's search_path
        self._schema = schema
        self._url = url  # the URL tests use, confined to the schema
        self._migrated: tuple | None = None  # the shape right after migrating, while rows can simply be removed

    def prepare(self) -> None:
        """Leave the schema migrated to head with no rows: emptied if it is as migrated, else dropped and migrated."""
        engine = create_engine(self._server_url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                if self._migrated is not None and self._shape(connection) == self._migrated:
                    self._empty(connection)
                    return
            with engine.begin() as connection:
                connection.execute(text(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE"))
                connection.execute(text(f"CREATE SCHEMA {self._schema}"))
            db = Database(self._url)
            db.upgrade()
            db.dispose()
            with engine.begin() as connection:
                shape = self._shape(connection)
                # Rows a migration wrote would be lost by emptying the tables: then every test migrates afresh.
                self._migrated = shape if not any(self._rows(connection, t) for t in self._tables(shape)) else None
        finally:
            engine.dispose()

    def _shape(self, connection: Connection) -> tuple:
        shape = tuple(tuple(row) for row in connection.execute(_SHAPE, {"schema": self._schema}))
        if "alembic_version" in self._tables(shape):
            version = connection.execute(text(f"SELECT version_num FROM {self._schema}.alembic_version")).all()
            shape += (("version", "alembic_version", repr(sorted(version))),)
        return shape

    @staticmethod
    def _tables(shape: tuple) -> list[str]:
        return sorted({table for kind, table, _ in shape if kind == "column"} - {"alembic_version"})

    def _rows(self, connection: Connection, table: str) -> int:
        return connection.execute(text(f"SELECT count(*) FROM {self._schema}.{table}")).scalar_one()

    def _empty(self, connection: Connection) -> None:
        tables = ", ".join(f"{self._schema}.{t}" for t in self._tables(self._migrated))
        if tables:
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        for kind, sequence, _ in self._migrated:  # sequences no column owns, as a fresh schema has them too
            if kind == "sequence":
                connection.execute(text(f"ALTER SEQUENCE {self._schema}.{sequence} RESTART"))
