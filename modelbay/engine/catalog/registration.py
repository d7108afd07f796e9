"""How models enter the registry: matched by repo id or name, added under a free name, search columns kept."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, inspect, or_, select
from sqlalchemy.orm import Session, selectinload

from modelbay.engine.catalog import search as _search
from modelbay.engine.db.schema.catalog import Category, Model

__all__ = ["MODEL_FIELDS", "Registration"]

# What callers may set on a model: its columns, less the registry's own (ids, source, timestamps) and the search
# columns derived from the rest.
MODEL_FIELDS = (
    frozenset(inspect(Model).column_attrs.keys()) - {"id", "source", "created_at", "updated_at"} - _search.DERIVED
)
_NOT_SLUG = re.compile(r"[^a-z0-9._-]+")
_LOOKUP_CHUNK = 500  # keys per lookup query, well under SQLite's limit on bound parameters


def _apply(row: Model, values: Mapping[str, Any]) -> None:
    """Set a model's metadata (never its name) and refresh the search columns that follow from it."""
    for key, value in values.items():
        if key != "name":
            setattr(row, key, Category(value) if key == "category" else value)
    for key, value in _search.derived_columns(row).items():
        setattr(row, key, value)


def _slug(text: str) -> str:
    """Return text as a model name: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit."""
    return _NOT_SLUG.sub("-", text.lower()).lstrip("-._").rstrip("-")[:128] or "model"


class Registration:
    """Writes a batch of models: finds the rows they name, adds the missing ones under free names."""

    def __init__(self, session: Session, items: list[Mapping[str, Any]]) -> None:
        self._session = session
        rows: list[Model] = []
        for start in range(0, len(items), _LOOKUP_CHUNK):
            part = items[start:start + _LOOKUP_CHUNK]
            repos = {v["repo_id"].lower() for v in part if v.get("repo_id")}
            names = {_slug(v["name"]) for v in part if v.get("name")}
            rows += session.scalars(
                select(Model)
                .options(selectinload(Model.versions))
                .where(or_(func.lower(Model.repo_id).in_(repos), Model.name.in_(names)))
            )
        self._by_repo = {r.repo_id.lower(): r for r in rows if r.repo_id}
        self._by_name = {r.name: r for r in rows}

    def write(self, values: Mapping[str, Any], *, source: str) -> Model:
        """Update the model these values name, or add it, and return its row."""
        row = self._find(values, catalog=source == "catalog") or self._insert(values, source)
        if source == "catalog":
            row.source = source  # a model first registered from the Hub joins the catalog
        _apply(row, values)
        return row

    def _find(self, values: Mapping[str, Any], *, catalog: bool) -> Model | None:
        named = self._by_name.get(_slug(values["name"])) if values.get("name") else None
        if catalog and named is not None and named.source == "catalog":
            return named  # catalog names are stable; their repo may move
        if values.get("repo_id"):
            return self._by_repo.get(values["repo_id"].lower())
        if values.get("name"):
            return named
        raise ValueError("a model needs a repo_id or a name")

    def _insert(self, values: Mapping[str, Any], source: str) -> Model:
        if "category" not in values:
            raise ValueError("a new model needs a category")
        repo_name = (values.get("repo_id") or "").rsplit("/", 1)[-1]
        name = _slug(values.get("name") or repo_name or values.get("display_name") or "")
        if self._taken(name):  # the name belongs to another repo: the newcomer gets the next free suffix
            base = name[:120]
            like = Model.name.startswith(f"{base}-", autoescape=True)
            taken = set(self._session.scalars(select(Model.name).where(like)))
            suffix = 2
            while f"{base}-{suffix}" in taken:
                suffix += 1
            name = f"{base}-{suffix}"
        row = Model(name=name, display_name=values.get("display_name") or repo_name or name, source=source,
                    category=Category(values["category"]), versions=[])
        self._session.add(row)
        self._by_name[name] = row
        if values.get("repo_id"):
            self._by_repo[values["repo_id"].lower()] = row
        return row

    def _taken(self, name: str) -> bool:
        return name in self._by_name or self._session.scalar(select(Model.id).where(Model.name == name)) is not None
