"""Time series from the rollups on both DBs, against exact figures computed from the same answers in Python."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from modelbay.engine.analytics.analytics import Analytics, AnswerEvent, wilson
from modelbay.engine.analytics.series import grain_for, series
from modelbay.engine.db.database import Database
from tests.support.measured import random_events, two_versions


@pytest.fixture
def versions(database: Database) -> list[int]:
    return two_versions(database)


def _events(version_ids: list[int], now: datetime, count: int, days: float) -> list[AnswerEvent]:
    return random_events(version_ids, now, count, days, seed=11)


def _floor(at: datetime, grain: str) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if grain == "day" else at


def _exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@pytest.mark.parametrize(("days", "grain"), [(2, "hour"), (9, "day")])
def test_series_match_the_answers_bucket_by_bucket(database: Database, versions: list[int], days: int,
                                                   grain: str) -> None:
    analytics = Analytics(database)
    now = datetime.now(timezone.utc)
    events = _events(versions, now, 2500, days=days)
    analytics.record_answers(events)
    # Ratings of some answers, counted against their answer's hour as Chats does.
    rng = random.Random(3)
    rated: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    with database.session() as session:
        for e in events[:600]:
            up = rng.random() < 0.7
            analytics.add_rating(session, e.model_version_id, e.at, int(up), int(not up))
            rated[_floor(e.at, grain)][0 if up else 1] += 1
    since = now - timedelta(days=days)
    found = series(database, versions, since, grain)  # type: ignore[arg-type]
    assert found.grain == grain and found.since == _floor(since, grain)
    by_bucket: dict[datetime, list[AnswerEvent]] = defaultdict(list)
    for e in events:
        if e.at >= _floor(since, grain):
            by_bucket[_floor(e.at, grain)].append(e)
    assert [p.start for p in found.points] == sorted(by_bucket)
    assert found.requests == sum(len(v) for v in by_bucket.values())
    for point in found.points:
        chosen = by_bucket[point.start]
        assert point.requests == len(chosen) and point.failures == sum(e.failed for e in chosen)
        for q, got in ((0.5, point.p50_ms), (0.95, point.p95_ms)):
            exact = _exact_percentile([e.total_ms for e in chosen], q)
            assert got is not None and abs(got - exact) / exact < 0.05  # one 5% bucket
        ups, downs = rated.get(point.start, [0, 0])
        assert (point.ups, point.downs) == (ups, downs)
        if point.ratings:
            assert point.satisfaction_interval == wilson(ups, ups + downs)
        else:
            assert point.satisfaction is None and point.satisfaction_interval is None


def test_a_series_of_no_versions_or_no_answers_is_empty(database: Database, versions: list[int]) -> None:
    now = datetime.now(timezone.utc)
    assert series(database, [], now - timedelta(hours=24)).points == ()
    empty = series(database, versions, None)
    assert empty.points == () and empty.grain == "day" and empty.requests == 0


def test_the_grain_follows_the_period() -> None:
    now = datetime(2025, 1, 10, tzinfo=timezone.utc)
    assert grain_for(now - timedelta(hours=24), now) == "hour"
    assert grain_for(now - timedelta(days=7), now) == "day"
    assert grain_for(None, now) == "day"
    with pytest.raises(ValueError, match="grain"):
        series(Database("sqlite://"), [1], now, "week")  # type: ignore[arg-type]
