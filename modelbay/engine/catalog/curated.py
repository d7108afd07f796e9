"""The shipped catalog: validate config/catalog.yaml and load it into the registry."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelbay.engine.db.schema.catalog import Category
from modelbay.engine.errors import CatalogInvalid

__all__ = ["CATEGORIES", "CatalogEntry", "load_catalog"]

CATEGORIES = tuple(c.value for c in Category)  # what a model is for, in the order lists and menus show them

SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class CatalogEntry(BaseModel):
    """One curated model as the catalog file describes it."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)  # category reads back as its value

    name: str
    display_name: str
    repo_id: str
    category: Category
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    author: str | None = None
    license: str | None = None
    parameter_count: int | None = Field(None, gt=0)
    size_bytes: int | None = Field(None, gt=0)
    context_length: int | None = Field(None, gt=0)
    format: Literal["safetensors", "pytorch", "gguf"] = "safetensors"
    dtype: str | None = None
    pipeline_tag: str | None = None
    gated: bool = False
    trust_remote_code: bool = False
    languages: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("name must be lowercase letters, digits, '.', '_' or '-'")
        return value

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not REPO_ID.match(value) or ".." in value:
            raise ValueError("repo_id must look like owner/name")
        return value


def default_catalog_path() -> Path:
    """Return the catalog shipped inside the package."""
    return Path(str(resources.files("modelbay.config").joinpath("catalog.yaml")))


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """Parse and validate a catalog file; raise CatalogInvalid naming the first bad entry."""
    data = yaml.safe_load((path or default_catalog_path()).read_text(encoding="utf-8")) or {}
    entries: list[CatalogEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(data.get("models", [])):
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            entry = CatalogEntry.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            raise CatalogInvalid(str(label), f"{where}: {error['msg']}") from None
        if entry.name in seen:
            raise CatalogInvalid(entry.name, "the name is used twice")
        seen.add(entry.name)
        entries.append(entry)
    return entries
