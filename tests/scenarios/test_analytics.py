"""Analytics on both DBs: rollups against exact figures, periods and ratings (the figures alone are unit tests:
tests/unit/engine/analytics/test_analytics.py)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from modelbay.engine.analytics.analytics import (
    Analytics,
    AnswerEvent,
    parse_period,
    wilson,
)
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from tests.support.measured import random_events, two_versions


@pytest.fixture
def versions(database: Database) -> list[int]:
    return two_versions(database)


def _events(version_ids: list[int], now: datetime, count: int, days: float) -> list[AnswerEvent]:
    return random_events(version_ids, now, count, days, seed=7)


def _exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@pytest.mark.parametrize("period", ["24h", "7d", "all"])
def test_rollup_metrics_match_the_raw_events(database: Database, versions: list[int], period: str) -> None:
    analytics = Analytics(database)
    now = datetime.now(timezone.utc)
    events = _events(versions, now, 3000, days=10)
    for start in range(0, len(events), 700):  # several writes, so rollup rows are added to, not only created
        analytics.record_answers(events[start:start + 700])
    since = parse_period(period, now)
    metrics = analytics.metrics(versions, since)
    hour = since.replace(minute=0, second=0, microsecond=0) if since else None
    chosen = [e for e in events if hour is None or e.at >= hour]
    assert metrics.requests == len(chosen)
    assert metrics.failures == sum(e.failed for e in chosen)
    assert metrics.output_tokens == sum(e.output_tokens for e in chosen)
    for q, got in ((0.5, metrics.p50_ms), (0.95, metrics.p95_ms)):
        exact = _exact_percentile([e.total_ms for e in chosen], q)
        assert abs(got - exact) / exact < 0.05  # one 5% bucket
    assert metrics.mean_ttft_ms == pytest.approx(sum(e.ttft_ms for e in chosen) / len(chosen))
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(AnalyticsEvent)) == len(events)


def test_one_version_is_measured_apart_from_another(database: Database, versions: list[int]) -> None:
    analytics = Analytics(database)
    now = datetime.now(timezone.utc)
    events = _events(versions, now, 500, days=2)
    analytics.record_answers(events)
    only = analytics.metrics(versions[:1], None)
    assert only.requests == sum(e.model_version_id == versions[0] for e in events)
    assert analytics.metrics([], None).requests == 0


def test_ratings_and_changed_ratings_count_once(database: Database, versions: list[int]) -> None:
    analytics = Analytics(database)
    answered = datetime.now(timezone.utc) - timedelta(hours=3)
    with database.session() as session:
        for _ in range(7):
            analytics.add_rating(session, versions[0], answered, ups=1, downs=0)
        analytics.add_rating(session, versions[0], answered, ups=0, downs=1)
        analytics.add_rating(session, versions[0], answered, ups=-1, downs=1)  # a 👍 changed to 👎
    metrics = analytics.metrics(versions, parse_period("24h"))
    assert (metrics.ups, metrics.downs, metrics.ratings) == (6, 2, 8)
    assert metrics.satisfaction == pytest.approx(0.75)
    assert metrics.satisfaction_interval == pytest.approx(wilson(6, 8))


def test_opting_out_is_remembered(database: Database) -> None:
    analytics = Analytics(database)
    assert not analytics.opted_out("slack:U1")
    analytics.set_opt_out("slack:U1", True)
    analytics.set_opt_out("slack:U1", True)
    assert analytics.opted_out("slack:U1")
    analytics.set_opt_out("slack:U1", False)
    assert not analytics.opted_out("slack:U1")


def test_mean_time_to_first_token_counts_only_answers_that_had_one(database: Database, versions: list[int]) -> None:
    analytics = Analytics(database)
    at = datetime.now(timezone.utc)
    timed = [AnswerEvent(versions[0], "t:U1", None, None, "vllm", 10, 5, ttft, 400.0, at=at) for ttft in (100.0, 300.0)]
    # A failed answer and one that ended before its first token: no time to first token to average.
    silent = [AnswerEvent(versions[0], "t:U1", None, None, "vllm", 10, None, None, 900.0, failed=True, at=at),
              AnswerEvent(versions[0], "t:U1", None, None, "vllm", 10, 0, None, 50.0, at=at)]
    analytics.record_answers(timed[:1] + silent[:1])
    analytics.record_answers(timed[1:] + silent[1:])  # added to the same hour's rollup row
    metrics = analytics.metrics(versions, None)
    assert metrics.requests == 4 and metrics.failures == 1
    assert metrics.mean_ttft_ms == pytest.approx(200.0)
    analytics.record_answers([AnswerEvent(versions[1], "t:U1", None, None, "vllm", 10, None, None, 5.0, at=at)])
    assert analytics.metrics(versions[1:], None).mean_ttft_ms is None  # no answer had a first token


def test_reported_answers_count_but_leave_the_speed_out(database: Database, versions: list[int]) -> None:
    analytics = Analytics(database)
    at = datetime.now(timezone.utc)
    analytics.record_answers([
        AnswerEvent(versions[0], "t:U1", None, None, "vllm", 10, 100, 50.0, 1000.0, at=at),  # 100 tokens/s here
        AnswerEvent(versions[0], "external:u", None, None, "external", 10, 100, None, 10.0, at=at, measured=False),
    ])
    metrics = analytics.metrics(versions[:1], None)
    assert metrics.requests == 2 and metrics.output_tokens == 200
    assert metrics.tokens_per_s == pytest.approx(100.0)  # the reported 10,000 tokens/s is not averaged in
    with database.session() as session:
        speeds = session.scalars(select(AnalyticsEvent.tokens_per_s).order_by(AnalyticsEvent.id)).all()
    assert speeds[0] == pytest.approx(100.0) and speeds[1] is None


def test_migration_counts_the_first_tokens_of_existing_rollups(database: Database, versions: list[int]) -> None:
    database.downgrade("0003")
    hour = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
    usage = sa.table("usage_hourly", *(sa.column(c) for c in (
        "model_version_id", "hour", "requests", "failures", "input_tokens", "output_tokens", "ttft_ms_sum",
        "total_ms_sum", "tps_sum", "tps_count", "ups", "downs")))
    with database.engine.begin() as connection:
        # Four answers before 0004: three produced tokens (100, 200 and 300 ms to the first), one failed silent.
        connection.execute(usage.insert().values(
            model_version_id=versions[0], hour=hour, requests=4, failures=1, input_tokens=40, output_tokens=30,
            ttft_ms_sum=600.0, total_ms_sum=4000.0, tps_sum=30.0, tps_count=3, ups=0, downs=0))
    database.upgrade()
    assert Analytics(database).metrics(versions, None).mean_ttft_ms == pytest.approx(200.0)
