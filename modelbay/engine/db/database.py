"""Database connection: engine, sessions, and schema migrations (Alembic) for SQLite and PostgreSQL.

A connection the server dropped is noticed at checkout (a pooled one is pinged first) or in the middle of a
transaction; there it becomes DatabaseUnavailable, and a unit of work marked `idempotent` runs once more.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from modelbay.engine.errors import DatabaseDriverMissing, DatabaseUnavailable

__all__ = ["Database", "database_unavailable", "idempotent"]

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# The extra that installs each driver SQLAlchemy may import for a URL.
_DRIVER_EXTRAS = {"psycopg": "postgres"}
_PSYCOPG = "psycopg 3 (a postgresql+psycopg:// or postgresql:// URL)"

P = ParamSpec("P")
T = TypeVar("T")


def database_unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """Return the DatabaseUnavailable a driver error stands for (a dropped or unreachable database), else None."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(dropped=True)
    if isinstance(exc, InterfaceError):  # psycopg: "the connection is closed" / "is lost"
        return DatabaseUnavailable(dropped=True)
    if isinstance(exc, OperationalError):
        if type(exc.orig).__module__.startswith("sqlite3"):
            # SQLite's OperationalError also means "no such table"; only a lock held past busy_timeout is "busy".
            return DatabaseUnavailable(dropped=False) if "locked" in str(exc.orig) else None
        return DatabaseUnavailable(dropped=False)
    return None


def idempotent(unit: Callable[P, T]) -> Callable[P, T]:
    """Mark a unit of work that may safely run twice: it runs once more if the connection dropped during it."""

    @functools.wraps(unit)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return unit(*args, **kwargs)
        except DatabaseUnavailable as exc:
            if not exc.dropped:
                raise
            # The pool was invalidated with the connection, so this run gets a fresh one. A commit that was lost
            # may have been applied: that is why only idempotent units are repeated.
            log.warning("database connection dropped during %s; running it once more", unit.__qualname__)
            return unit(*args, **kwargs)

    return run


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API types
    cursor = dbapi_connection.cursor()
    # WAL lets the console read while an in-process job writes; FKs are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """One database: an SQLAlchemy engine, a session factory and its migrations."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        """Open a database by URL; raises DatabaseDriverMissing when the URL's driver is not installed."""
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            try:
                # pool_pre_ping replaces a pooled connection the server closed (restart, pg_terminate_backend).
                self.engine = create_engine(url, echo=echo, pool_pre_ping=True)
            except ImportError as exc:
                parsed = make_url(url)
                driver = parsed.get_driver_name()
                database = "PostgreSQL" if parsed.get_backend_name() == "postgresql" else parsed.get_backend_name()
                if database == "PostgreSQL" and driver != "psycopg":
                    raise DatabaseDriverMissing(database, driver, "postgres", use=_PSYCOPG) from exc
                raise DatabaseDriverMissing(database, driver, _DRIVER_EXTRAS.get(driver)) from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session that commits on success and rolls back on error; raises DatabaseUnavailable if it drops."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException as exc:
                session.rollback()
                unavailable = database_unavailable(exc)
                if unavailable is not None and unavailable is not exc:
                    raise unavailable from exc
                raise

    def alembic_config(self) -> Config:
        """Return the Alembic configuration bound to this database."""
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to revision."""
        command.upgrade(self.alembic_config(), revision)

    def downgrade(self, revision: str) -> None:
        """Revert migrations down to revision."""
        command.downgrade(self.alembic_config(), revision)

    def current_revision(self) -> str | None:
        """Return the applied migration revision, or None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def table_names(self) -> list[str]:
        """Return the tables present in the database."""
        return sorted(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
