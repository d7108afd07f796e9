"""engine/analytics/analytics.py's figures without a database: latency buckets, percentiles read from them,
Wilson intervals, periods and tokens per second."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from modelbay.engine.analytics.analytics import (
    AnswerEvent,
    _percentiles,
    bucket_bounds,
    latency_bucket,
    parse_period,
    tokens_per_second,
    wilson,
)


def test_each_response_time_falls_inside_its_bucket() -> None:
    for ms in (0.2, 1.0, 1.04, 7.3, 99.9, 1234.5, 10_000.0, 599_999.0):
        low, high = bucket_bounds(latency_bucket(ms))
        assert low <= max(ms, 1.0) < high
        assert high / low == pytest.approx(1.05)


def test_wilson_interval_matches_the_textbook_values() -> None:
    # 8 of 10: the Wilson 95% interval is 0.490 to 0.943 (e.g. Newcombe 1998, method 3).
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-3)


def test_periods_parse_and_bad_ones_are_named() -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    assert parse_period("24h", now) == now - timedelta(hours=24)
    assert parse_period("2w", now) == now - timedelta(weeks=2)
    assert parse_period("all", now) is None
    with pytest.raises(ValueError, match="24h, 7d"):
        parse_period("yesterday", now)


def test_buckets_cover_every_time_once_in_order() -> None:
    rng = random.Random(2)
    times = sorted(rng.lognormvariate(6, 2) for _ in range(2000))
    buckets = [latency_bucket(ms) for ms in times]
    assert buckets == sorted(buckets) and latency_bucket(0) == latency_bucket(1.0) == 0
    for bucket in range(1, 300):  # each bucket starts where the one before ends
        assert bucket_bounds(bucket)[0] == pytest.approx(bucket_bounds(bucket - 1)[1])


def test_percentiles_from_the_histogram_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(5)
    times = sorted(rng.lognormvariate(7, 0.6) for _ in range(5000))
    counts: dict[int, int] = {}
    for ms in times:
        counts[latency_bucket(ms)] = counts.get(latency_bucket(ms), 0) + 1
    histogram, upto = [], 0
    for bucket in sorted(counts):
        upto += counts[bucket]
        histogram.append((bucket, counts[bucket], upto, len(times)))
    p50, p95 = _percentiles(histogram, (0.5, 0.95))
    for got, q in ((p50, 0.5), (p95, 0.95)):
        exact = times[math.ceil(q * len(times)) - 1]
        assert abs(got - exact) / exact < 0.05  # one 5% bucket
    assert _percentiles([], (0.5,)) == [None]


@pytest.mark.parametrize(("ups", "n"), [(0, 1), (1, 1), (3, 7), (50, 100), (999, 1000)])
def test_a_wilson_interval_holds_the_observed_share_and_narrows_with_more_votes(ups: int, n: int) -> None:
    low, high = wilson(ups, n)
    assert 0.0 <= low <= ups / n <= high <= 1.0
    wider_low, wider_high = wilson(ups * 10, n * 10)
    assert wider_high - wider_low < high - low


def test_tokens_per_second_counts_the_whole_answer_time() -> None:
    assert tokens_per_second(50, 2000.0) == 25.0
    assert tokens_per_second(0, 2000.0) is None and tokens_per_second(None, 10.0) is None
    assert tokens_per_second(5, 0.0) is None


def test_a_period_is_counted_back_from_now_in_hours_days_or_weeks() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_period(" 7D ", now) == now - timedelta(days=7) and parse_period("ALL", now) is None
    for bad in ("7", "d", "-1d", "1.5h", "10000d", "7m"):
        with pytest.raises(ValueError, match=f"got {bad!r}"):
            parse_period(bad, now)


def test_an_answer_reported_from_outside_has_no_speed_measured_here() -> None:
    ours = AnswerEvent(1, "t:U1", None, None, "vllm", 10, 100, 50.0, 1000.0)
    reported = AnswerEvent(1, "external:u", None, None, "external", 10, 100, None, 1000.0, measured=False)
    assert ours.tokens_per_s == pytest.approx(100.0) and reported.tokens_per_s is None
