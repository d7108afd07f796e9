"""The model registry: models and their versions, as stored in the database."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, inspect, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from modelbay.engine.catalog import search as _search
from modelbay.engine.catalog.registration import MODEL_FIELDS, Registration
from modelbay.engine.catalog.curated import CatalogEntry
from modelbay.engine.db.database import Database, idempotent
from modelbay.engine.errors import ModelNotFound
from modelbay.engine.records import ModelPage, ModelQuery, ModelRecord, VersionRecord, record_from_row
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion

__all__ = ["Registry"]

# What callers may set on a version: its columns, less those the registry keeps (ids, revision, timestamps).
VERSION_FIELDS = frozenset(inspect(ModelVersion).column_attrs.keys()) - {"id", "model_id", "revision", "created_at"}


def _version_record(row: ModelVersion) -> VersionRecord:
    return record_from_row(VersionRecord, row)


def _model_record(row: Model, speed: tuple[float, str] | None = None, **computed: Any) -> ModelRecord:
    # speed: (tokens/s, source) from search.measured_speeds; without it, the catalog's figure (or none).
    if speed is None and row.tokens_per_s is not None:
        speed = (row.tokens_per_s, "catalog")
    return record_from_row(ModelRecord, row, versions=[_version_record(v) for v in row.versions],
                           tokens_per_s=speed[0] if speed else None, speed_source=speed[1] if speed else None,
                           **computed)


def _model_records(session: Session, rows: Iterable[Model]) -> list[ModelRecord]:
    """Records of rows, each with its tokens/s measured here where there is one (search.measured_speeds)."""
    rows = list(rows)
    speeds = _measured(session, rows)
    return [_model_record(r, speeds.get(r.id)) for r in rows]


def _measured(session: Session, rows: Iterable[Model]) -> dict[int, tuple[float, str]]:
    # Answers and reports hang off versions: a model without any (most of a Hub listing) is not looked up.
    return _search.measured_speeds(session, [r.id for r in rows if r.versions])


class Registry:
    """Reads and writes model metadata."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def sync_catalog(self, entries: Iterable[CatalogEntry]) -> int:
        """Insert catalog models that are missing and refresh the metadata of those already there."""
        return self.upsert_many((e.model_dump() for e in entries), source="catalog")

    def upsert(self, values: Mapping[str, Any], *, source: str) -> ModelRecord:
        """Register a model, or update the one with the same repo id (any case), else the same name."""
        # An existing model keeps its name and source; a new one whose name is taken gets a suffix (`name-2`).
        _check_fields(values, MODEL_FIELDS, "model")
        try:
            return self._upsert(values, source)
        except IntegrityError:
            # Another process registered the same model between our lookup and our insert: update theirs.
            return self._upsert(values, source)

    @idempotent
    def _upsert(self, values: Mapping[str, Any], source: str) -> ModelRecord:
        with self._db.session() as session:
            row = Registration(session, [values]).write(values, source=source)
            session.flush()
            return _model_record(row)

    def upsert_many(self, items: Iterable[Mapping[str, Any]], *, source: str) -> int:
        """Register or update many models in one transaction, as upsert does each, and return how many."""
        items = list(items)
        for values in items:
            _check_fields(values, MODEL_FIELDS, "model")
        return self._write_many(items, source=source)

    @idempotent
    def _write_many(self, items: list[Mapping[str, Any]], *, source: str) -> int:
        with self._db.session() as session:
            registration = Registration(session, items)
            for values in items:
                registration.write(values, source=source)
        return len(items)

    @idempotent  # a read: repeated once if its connection drops
    def search(self, query: ModelQuery) -> ModelPage:
        """Return one page of models matching the query, in its order, and the total that match."""
        with self._db.session() as session:
            page = session.execute(_search.page_query(query)).all()
            if not page:  # past the end, the total still counts what matches
                return ModelPage([], (session.scalar(_search.count_query(query)) or 0) if query.offset else 0)
            total = page[0].total if "total" in page[0]._fields else session.scalar(_search.count_query(query))
            rows = {
                row.id: row
                for row in session.scalars(
                    select(Model).options(selectinload(Model.versions)).where(Model.id.in_([p.id for p in page]))
                )
            }
            speeds = _measured(session, rows.values())
            records = []
            for hit in page:
                computed = {k: v for k, v in hit._mapping.items() if k in ("rating", "last_used_at")}
                records.append(_model_record(rows[hit.id], speeds.get(hit.id), **computed))
            return ModelPage(records, total)

    @idempotent  # a read: repeated once if its connection drops
    def list_models(
        self,
        *,
        category: str | None = None,
        installed: bool | None = None,
        limit: int = 25,
        offset: int = 0,
    ) -> ModelPage:
        """Return one page of models, ordered by category then name, and the total that match."""
        query = select(Model)
        if category:
            query = query.where(Model.category == Category(category))
        if installed is not None:
            query = query.where(_search.installed_condition(installed))
        with self._db.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.options(selectinload(Model.versions))
                .order_by(Model.category, Model.name)
                .limit(limit)
                .offset(offset)
            ).all()
            return ModelPage(_model_records(session, rows), total)

    @idempotent  # a read: repeated once if its connection drops
    def get(self, name: str) -> ModelRecord:
        """Return a model by name or repo id (case-insensitive), or raise ModelNotFound with suggestions.

        Raises:
            ModelNotFound: no model has that name or repo id; it suggests close names.
        """
        key = name.strip().lower()
        with self._db.session() as session:
            row = session.scalars(
                select(Model)
                .options(selectinload(Model.versions))
                .where(or_(func.lower(Model.name) == key, func.lower(Model.repo_id) == key))
            ).first()
            if row is not None:
                return _model_records(session, [row])[0]
        raise ModelNotFound(name, self.suggest(name))

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Return the model names closest to name."""
        names = self.names()
        key = name.strip().lower()
        close = difflib.get_close_matches(key, names, n=limit, cutoff=0.5)
        contains = [n for n in names if key and key in n and n not in close]
        return (close + contains)[:limit]

    @idempotent  # a read: repeated once if its connection drops
    def names(self) -> list[str]:
        """Return every model name, sorted."""
        with self._db.session() as session:
            return list(session.scalars(select(Model.name).order_by(Model.name)))

    def add_version(self, model_id: int, revision: str = "main", **fields: Any) -> VersionRecord:
        """Add a revision of a model, or return the version already at that revision unchanged."""
        _check_fields(fields, VERSION_FIELDS, "version")
        return self._add_version(model_id, revision, fields)

    @idempotent
    def _add_version(self, model_id: int, revision: str, fields: Mapping[str, Any]) -> VersionRecord:
        with self._db.session() as session:
            if session.get(Model, model_id) is None:
                raise ModelNotFound(f"#{model_id}")
            row = session.scalars(
                select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.revision == revision)
            ).first()
            if row is None:
                row = ModelVersion(model_id=model_id, revision=revision)
                _write_version(row, fields)
                session.add(row)
                session.flush()
            return _version_record(row)

    @idempotent  # a read: repeated once if its connection drops
    def get_version(self, version_id: int) -> VersionRecord:
        """Return one model version by id."""
        with self._db.session() as session:
            return _version_record(self._version_row(session, version_id))

    def update_version(self, version_id: int, **fields: Any) -> VersionRecord:
        """Change a version's install state, files or location and return it."""
        _check_fields(fields, VERSION_FIELDS, "version")
        return self._update_version(version_id, fields)

    @idempotent
    def _update_version(self, version_id: int, fields: Mapping[str, Any]) -> VersionRecord:
        with self._db.session() as session:
            row = self._version_row(session, version_id)
            _write_version(row, fields)
            session.flush()
            return _version_record(row)

    @idempotent  # a read: repeated once if its connection drops
    def versions(self, model_id: int) -> list[VersionRecord]:
        """Return a model's versions, oldest first."""
        with self._db.session() as session:
            rows = session.scalars(select(ModelVersion).where(ModelVersion.model_id == model_id)
                                   .order_by(ModelVersion.id))
            return [_version_record(r) for r in rows]

    def derived(self, version_ids: Iterable[int]) -> list[tuple[str, VersionRecord]]:
        """Installed versions made from these (fine-tunes, optimized copies), each with its model's name."""
        with self._db.session() as session:
            rows = session.execute(
                select(Model.name, ModelVersion).join(ModelVersion.model)
                .where(ModelVersion.parent_version_id.in_(list(version_ids)),
                       ModelVersion.install_state == InstallState.INSTALLED)
                .order_by(ModelVersion.id))
            return [(name, _version_record(row)) for name, row in rows]

    @staticmethod
    def _version_row(session: Session, version_id: int) -> ModelVersion:
        row = session.get(ModelVersion, version_id)
        if row is None:
            raise LookupError(f"no model version #{version_id}")
        return row


def _check_fields(values: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not {what} fields: {', '.join(sorted(unknown))}")


def _write_version(row: ModelVersion, fields: Mapping[str, Any]) -> None:
    for key, value in fields.items():
        setattr(row, key, InstallState(value) if key == "install_state" else value)
