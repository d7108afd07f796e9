"""Plain records that cross layers (bot, adapters, workers); never ORM rows."""

from __future__ import annotations

import enum
import math
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

if TYPE_CHECKING:
    from modelbay.engine.jobs.progress import ProgressDetail  # engine.jobs imports this module

__all__ = [
    "MAX_TOKENS_PER_S", "JobRecord", "ModelPage", "ModelQuery", "ModelRecord", "SortKey", "SpeedSource", "Submitted",
    "VersionRecord", "record_fields", "record_from_row",
]

R = TypeVar("R")

SortKey = Literal["relevance", "downloads", "likes", "size", "rating", "recent", "name"]

# Terms a search text may carry as `key:value`, and the ModelQuery field each one sets.
_TERMS = {"tag": "tags", "category": "category", "license": "license", "author": "author", "source": "source",
          "speed": "min_tokens_per_s"}
MAX_TOKENS_PER_S = 1_000_000.0  # the largest `speed:` bound a search takes (the REST parameter's maximum too)
# Where a model's tokens/s figure comes from: measured here (its answers, else its newest optimization report), else
# the catalog or Hub metadata.
SpeedSource = Literal["answers", "optimization report", "catalog"]


def record_fields(cls: type) -> frozenset[str]:
    """Return the names of a record class's dataclass fields."""
    return frozenset(f.name for f in fields(cls))


def record_from_row(cls: type[R], row: Any, **computed: Any) -> R:
    """Build a record of class cls from an ORM row (or any object with the same attribute names).

    Every dataclass field not given in `computed` is read from the row's attribute of the same name: an enum
    becomes its value, a list or dict is copied (None becomes an empty one where the field is not optional), and
    a field the row lacks keeps its default. Nested records and values from other rows go in `computed`.
    """
    values = dict(computed)
    for f, empty in _reading(cls):
        if f.name in values:
            continue
        if not hasattr(row, f.name):
            if f.default is MISSING and f.default_factory is MISSING:
                raise AttributeError(f"{type(row).__name__} has no {f.name!r} for {cls.__name__}")
            continue
        value = getattr(row, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, list):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        elif value is None and empty is not None:
            value = empty()
        values[f.name] = value
    return cls(**values)


@cache
def _reading(cls: type) -> tuple[tuple[Field[Any], type | None], ...]:
    # Per field, the empty container a stored None reads as: a list or dict field that is not optional.
    def empty(f: Field[Any]) -> type | None:
        kind = str(f.type)
        return None if "None" in kind else {"list": list, "dict": dict}.get(kind.partition("[")[0])

    return tuple((f, empty(f)) for f in fields(cls))


@dataclass(frozen=True)
class VersionRecord:
    """One revision of a model and where it stands in the model store."""

    id: int
    revision: str
    revision_sha: str | None
    install_state: str
    local_path: str | None
    size_bytes: int | None
    parent_version_id: int | None
    lineage: str | None
    installed_at: datetime | None
    model_id: int | None = None
    format: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    lineage_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRecord:
    """A model's metadata and its versions."""

    id: int
    name: str
    display_name: str
    source: str
    repo_id: str | None
    category: str
    tags: list[str]
    description: str
    author: str | None
    license: str | None
    parameter_count: int | None
    size_bytes: int | None
    context_length: int | None
    format: str | None
    dtype: str | None
    pipeline_tag: str | None
    gated: bool
    trust_remote_code: bool
    languages: list[str] = field(default_factory=list)
    versions: list[VersionRecord] = field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    memory_bytes: int | None = None  # what loading needs: the stated requirement, else the weights' size
    performance: dict[str, Any] = field(default_factory=dict)
    requirements: dict[str, Any] = field(default_factory=dict)
    rating: float | None = None  # share of 👍; only a search sorted by rating computes it
    # Decode tokens/s: measured here when speed_source is "answers" or "optimization report", else the catalog's.
    tokens_per_s: float | None = None
    speed_source: SpeedSource | None = None
    last_used_at: datetime | None = None  # only a search sorted by recent use computes it

    @property
    def installed(self) -> bool:
        """Whether any version is installed."""
        return any(v.install_state == "installed" for v in self.versions)

    @property
    def speed_measured(self) -> bool:
        """Whether tokens_per_s was measured on this deployment (its answers or an optimization report)."""
        return self.speed_source in ("answers", "optimization report")


class ModelPage(NamedTuple):
    """One page of models and how many match in all."""

    models: list[ModelRecord]
    total: int


@dataclass(frozen=True)
class ModelQuery:
    """What a registry search asks for: free words, filters, an order and a page."""

    text: str = ""
    category: str | None = None
    tags: tuple[str, ...] = ()
    installed: bool | None = None
    source: str | None = None
    license: str | None = None
    author: str | None = None
    min_parameters: int | None = None
    max_parameters: int | None = None
    max_size_bytes: int | None = None
    max_memory_bytes: int | None = None
    min_tokens_per_s: float | None = None
    min_accuracy: float | None = None
    sort: SortKey | None = None
    limit: int = 25
    offset: int = 0

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> ModelQuery:
        """Split `tag:x`, `category:x`, `license:x`, `author:x`, `source:x` and `speed:N` terms out of text.

        Raises:
            SearchTermInvalid: a `speed:` value that is not a number of tokens/s from 0 to MAX_TOKENS_PER_S.
        """
        # Overrides left at None (an optional command argument not given) keep what the text says.
        overrides = {key: value for key, value in overrides.items() if value is not None}
        words: list[str] = []
        found: dict[str, Any] = {"tags": ()}
        for token in text.split():
            key, sep, value = token.partition(":")
            field_name = _TERMS.get(key.lower()) if sep and value else None
            if field_name == "tags":
                found["tags"] += (value.lower(),)
            elif field_name == "min_tokens_per_s":
                found[field_name] = _tokens_per_s(token, value)
            elif field_name:
                found[field_name] = value.lower()
            else:
                words.append(token)
        query = cls(text=" ".join(words), **found)
        if "tags" in overrides:  # tags given beside the text add to the parsed ones
            overrides["tags"] = query.tags + tuple(overrides["tags"])
        return replace(query, **overrides)

    @property
    def words(self) -> list[str]:
        """Return the free words, lowercased."""
        return self.text.lower().split()

    @property
    def order(self) -> SortKey:
        """Return the sort to apply: relevance when there are words, else downloads, unless one is set."""
        return self.sort or ("relevance" if self.words else "downloads")


def _tokens_per_s(term: str, value: str) -> float:
    """The least tokens/s a `speed:` term asks for: `speed:40`, `speed:>=40` or `speed:40tok/s`."""
    from modelbay.engine.errors import SearchTermInvalid  # errors imports units only; kept local all the same

    number = value.removeprefix(">=").removeprefix(">").lower().removesuffix("tok/s").removesuffix("tokens/s")
    try:
        bound = float(number)
    except ValueError:
        bound = math.nan
    if not 0 <= bound <= MAX_TOKENS_PER_S:  # nan fails too
        raise SearchTermInvalid(term, f"give the least tokens/s as a number from 0 to {MAX_TOKENS_PER_S:,.0f}, "
                                      "like speed:40")
    return bound


@dataclass(frozen=True)
class JobRecord:
    """A job as users see it."""

    id: str
    kind: str
    queue: str
    status: str
    progress: float
    progress_detail: ProgressDetail  # its latest report, with its message
    requester: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    model_version_id: int | None = None

    @property
    def active(self) -> bool:
        """Whether the job may still run."""
        return self.status in ("queued", "started", "retrying")


class Submitted(NamedTuple):
    """A submitted job, and whether it is new (False: the active job with the same dedup key was joined)."""

    job: JobRecord
    created: bool
