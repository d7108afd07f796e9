"""The model registry: models and their versions, as stored in the database."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from modelbay.engine.catalog import CatalogEntry
from modelbay.engine.db import Database
from modelbay.engine.errors import ModelNotFound
from modelbay.engine.records import ModelRecord, VersionRecord
from modelbay.engine.schema import Category, InstallState, Model, ModelVersion

__all__ = ["Registry"]


def _version_record(row: ModelVersion) -> VersionRecord:
    return VersionRecord(
        id=row.id,
        revision=row.revision,
        revision_sha=row.revision_sha,
        install_state=row.install_state.value,
        local_path=row.local_path,
        size_bytes=row.size_bytes,
        parent_version_id=row.parent_version_id,
        lineage=row.lineage,
        installed_at=row.installed_at,
    )


def _model_record(row: Model) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        name=row.name,
        display_name=row.display_name,
        source=row.source,
        repo_id=row.repo_id,
        category=row.category.value,
        tags=list(row.tags or []),
        description=row.description,
        author=row.author,
        license=row.license,
        parameter_count=row.parameter_count,
        size_bytes=row.size_bytes,
        context_length=row.context_length,
        format=row.format,
        dtype=row.dtype,
        pipeline_tag=row.pipeline_tag,
        gated=row.gated,
        trust_remote_code=row.trust_remote_code,
        languages=list(row.languages or []),
        versions=[_version_record(v) for v in row.versions],
    )


class Registry:
    """Reads and writes model metadata."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def sync_catalog(self, entries: Iterable[CatalogEntry]) -> int:
        """Insert catalog models that are missing and refresh the metadata of those already there."""
        count = 0
        with self._db.session() as session:
            existing = {m.name: m for m in session.scalars(select(Model).where(Model.source == "catalog"))}
            for entry in entries:
                values = entry.model_dump()
                values["category"] = Category(values["category"])
                row = existing.get(entry.name)
                if row is None:
                    session.add(Model(source="catalog", **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
                count += 1
        return count

    def list_models(
        self,
        *,
        category: str | None = None,
        installed: bool | None = None,
        limit: int = 25,
        offset: int = 0,
    ) -> tuple[list[ModelRecord], int]:
        """Return one page of models, ordered by category then name, and the total that match."""
        query = select(Model)
        if category:
            query = query.where(Model.category == Category(category))
        if installed is not None:
            is_installed = (
                select(ModelVersion.id)
                .where(ModelVersion.model_id == Model.id, ModelVersion.install_state == InstallState.INSTALLED)
                .exists()
            )
            query = query.where(is_installed if installed else ~is_installed)
        with self._db.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.options(selectinload(Model.versions))
                .order_by(Model.category, Model.name)
                .limit(limit)
                .offset(offset)
            ).all()
            return [_model_record(r) for r in rows], total

    def get(self, name: str) -> ModelRecord:
        """Return a model by name or repo id (case-insensitive), or raise ModelNotFound with suggestions."""
        key = name.strip().lower()
        with self._db.session() as session:
            row = session.scalars(
                select(Model)
                .options(selectinload(Model.versions))
                .where(or_(func.lower(Model.name) == key, func.lower(Model.repo_id) == key))
            ).first()
            if row is not None:
                return _model_record(row)
        raise ModelNotFound(name, self.suggest(name))

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Return the model names closest to name."""
        names = self.names()
        key = name.strip().lower()
        close = difflib.get_close_matches(key, names, n=limit, cutoff=0.5)
        contains = [n for n in names if key and key in n and n not in close]
        return (close + contains)[:limit]

    def names(self) -> list[str]:
        """Return every model name, sorted."""
        with self._db.session() as session:
            return list(session.scalars(select(Model.name).order_by(Model.name)))
