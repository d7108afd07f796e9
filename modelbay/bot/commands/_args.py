"""Arguments that several commands take, declared once: the model, a job id, a category, a period, a limit."""

from __future__ import annotations

from dataclasses import replace

from modelbay.bot.spec import Arg, ArgType
from modelbay.engine.analytics.analytics import PERIODS
from modelbay.engine.catalog.curated import CATEGORIES

__all__ = ["CATEGORIES", "CATEGORY", "JOB", "MODEL", "MODEL_OR_REPO", "PERIOD", "ROW_ID_MAX", "limit", "revision"]

MODEL = Arg("model", "Model name.", required=True, autocomplete="model")
"""An installed or registered model, by its registry name (autocompleted from the registry)."""

MODEL_OR_REPO = replace(MODEL, help="Model name or Hugging Face repo id.")
"""A model by registry name or Hugging Face repo id (commands that reach the Hub as well)."""

JOB = Arg("job", "The job id from /jobs.", required=True, autocomplete="job", max_length=64)
"""A job id (autocompleted from the caller's jobs)."""

CATEGORY = Arg("category", "Only this category.", choices=CATEGORIES)
"""An optional filter by model category."""

ROW_ID_MAX = 2**31 - 1
"""The largest number an answer or a battle can have: their ids are the database's INTEGER (PostgreSQL refuses a
larger one in a lookup, which would be a 500 rather than "not found")."""

PERIOD = Arg("period", "How far back.", choices=PERIODS, default="7d")
"""How far back analytics look: one of `PERIODS`, a week unless given."""


def limit(default: int, most: int, *, named: bool = False) -> Arg:
    """How many rows a listing shows: from 1 to `most`, `default` unless given. A group's bare listing (`/jobs`,
    `/train`, `/optimize`) takes it by name only (`limit:5`), so a stray word after it (`/jobs foo`) is a usage
    error, not a bad limit."""
    return Arg("limit", "How many to show.", type=ArgType.INTEGER, default=default, min=1, max=most, named=named)


def revision(help: str) -> Arg:  # noqa: A002 - the Arg field it fills
    """A branch, tag or commit of a model (at most 128 characters)."""
    return Arg("revision", help, max_length=128)
