"""Models side by side: each one's figures over a period from the rollups, its arena strength, and their series.

`compare` reads `Analytics.metrics` (requests, p50/p95, time to first token, tokens/s, 👍 share) and
`series.series` per model, and the arena's Bradley-Terry strength with its 95% bootstrap interval from
`Arena.leaderboard()` when an arena is given (a model with several versions shows the version with the most
battles). Nothing reads answer events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from modelbay.engine.analytics.analytics import Analytics, Metrics
from modelbay.engine.analytics.leaderboard import Leaderboard
from modelbay.engine.analytics.series import Series, series
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.database import Database

__all__ = ["DASHBOARD_MODELS", "Column", "Strength", "compare", "dashboard", "strengths"]

DASHBOARD_MODELS = 10  # installed models a dashboard shows, most used first


@dataclass(frozen=True)
class Strength:
    """A model version's arena strength (LMSYS scale) with its 95% bootstrap interval and how many battles fed it."""

    strength: float
    low: float
    high: float
    battles: int | None = None
    unranked: str | None = None  # the leaderboard's words instead: "provisional (3 battles)", "won all 3"


@dataclass(frozen=True)
class Column:
    """One model of a comparison: its names, figures over the period, arena strength and series."""

    name: str
    display_name: str
    metrics: Metrics
    strength: Strength | None
    series: Series


class _Arena(Protocol):
    """What a comparison needs of the arena (engine/experiments/arena.py sits above analytics)."""

    def leaderboard(self, category: str | None = None) -> Leaderboard: ...


def strengths(arena: _Arena | None) -> dict[int, Strength]:
    """Each model version's overall arena strength (`arena.leaderboard().standings`), by version id; empty without
    an arena or votes."""
    if arena is None:
        return {}
    return {s.version_id: Strength(s.strength, s.low, s.high, s.battles, None if s.settled else s.interval)
            for s in arena.leaderboard(None).standings}


def compare(db: Database, registry: Registry, analytics: Analytics, names: Sequence[str], since: datetime | None,
            arena: _Arena | None = None) -> list[Column]:
    """The named models' figures since `since` (None: all time), in the order named, each name once.

    Raises:
        ModelNotFound: a name matches no model (with close names suggested).
    """
    records = list({r.id: r for r in (registry.get(n) for n in names)}.values())
    by_version = strengths(arena)
    columns = []
    for record in records:
        ids = [v.id for v in record.versions]
        known = [by_version[i] for i in ids if i in by_version]
        strength = max(known, key=lambda s: s.battles or 0) if known else None
        columns.append(Column(record.name, record.display_name, analytics.metrics(ids, since), strength,
                              series(db, ids, since)))
    return columns


def dashboard(db: Database, registry: Registry, analytics: Analytics, since: datetime | None,
              most: int = DASHBOARD_MODELS) -> tuple[list[Column], int]:
    """The installed models' figures since `since`, the most answers first (then by name), at most `most` of them,
    and how many models are installed in all."""
    records, total = registry.list_models(installed=True, limit=max(most, 50), offset=0)
    columns = []
    for record in records:
        ids = [v.id for v in record.versions]
        columns.append(Column(record.name, record.display_name, analytics.metrics(ids, since), None,
                              series(db, ids, since)))
    columns.sort(key=lambda c: (-c.metrics.requests, c.name))
    return columns[:most], total
