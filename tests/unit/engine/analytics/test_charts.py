"""engine/analytics/charts.py: each chart is a PNG and its text alternative carries the same figures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from modelbay.engine.analytics.analytics import Metrics
from modelbay.engine.analytics.charts import (
    dashboard_png, dashboard_text, latency_png, latency_text, ms_text, satisfaction_png, satisfaction_text,
)
from modelbay.engine.analytics.compare import Column
from modelbay.engine.analytics.series import Point, Series

PNG = b"\x89PNG\r\n\x1a\n"
START = datetime(2025, 3, 1, tzinfo=timezone.utc)


def _series(hours: int, p50: float, ups: int, downs: int) -> Series:
    points = tuple(Point(START + timedelta(hours=h), 10, 0, p50 + h, 2 * p50 + h, ups, downs) for h in range(hours))
    return Series("hour", START, points)


def _metrics(requests: int, ups: int, downs: int) -> Metrics:
    return Metrics(requests=requests, failures=1 if requests else 0, p50_ms=420.0 if requests else None,
                   p95_ms=1250.0 if requests else None, mean_ttft_ms=30.0, tokens_per_s=40.0, output_tokens=100,
                   ups=ups, downs=downs)


def test_response_time_chart_and_text() -> None:
    named = {"fast": _series(3, 100.0, 0, 0), "idle": Series("hour", START, ())}
    assert latency_png(named).startswith(PNG)
    text = latency_text(named)
    assert "fast: 30 answers over 3 hours; p95 highest 202 ms (01 Mar 02:00)" in text
    assert "  01 Mar 00:00  p50 100 ms · p95 200 ms · 10 answers" in text
    assert "idle: no answers in this period" in text


def test_the_text_lists_the_latest_buckets_and_counts_the_rest() -> None:
    text = latency_text({"long": _series(20, 100.0, 1, 1)})
    assert "(12 earlier hours not listed)" in text and "01 Mar 19:00" in text and "01 Mar 11:00" not in text


def test_satisfaction_chart_and_text_carry_the_interval() -> None:
    named = {"liked": _series(2, 100.0, 8, 2), "unrated": _series(2, 100.0, 0, 0)}
    assert satisfaction_png(named).startswith(PNG)
    text = satisfaction_text(named)
    assert "liked: 20 ratings over 2 hours" in text and "80% 👍 of 10 (49%–94%)" in text
    assert "unrated: no ratings in this period" in text
    assert satisfaction_png({"unrated": named["unrated"]}).startswith(PNG)  # an empty chart still draws


def test_dashboard_chart_and_text() -> None:
    rows = [Column("busy", "Busy", _metrics(120, 30, 10), None, _series(4, 300.0, 3, 1)),
            Column("quiet", "Quiet", _metrics(0, 0, 0), None, Series("hour", START, ()))]
    assert dashboard_png(rows).startswith(PNG)
    assert dashboard_text(rows).splitlines() == [
        "busy: 120 answers (1 failed) · p50 420 ms · p95 1.25 s · 75% 👍 of 40 (60%–86%)", "quiet: no answers"]


def test_times_read_as_people_read_them() -> None:
    assert [ms_text(v) for v in (None, 12.4, 999.0, 1250.0)] == ["-", "12 ms", "999 ms", "1.25 s"]
