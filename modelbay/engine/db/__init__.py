"""The database: engine and sessions (`database`) and the tables, one module per area (`schema/`)."""

from modelbay.engine.db.database import Database, idempotent

__all__ = [
    "Database", "idempotent",
]
