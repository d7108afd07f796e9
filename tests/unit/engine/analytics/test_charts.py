"""engine/analytics/charts.py: each chart is a PNG and its text alternative carries the same figures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from modelbay.engine.analytics.analytics import Metrics, wilson
from modelbay.engine.analytics.charts import (
    dashboard_figure, dashboard_png, dashboard_text, latency_figure, latency_png, latency_text, ms_text,
    satisfaction_figure, satisfaction_png, satisfaction_text,
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


# -- a single time bucket: what every new deployment draws first ---------------------------------------------------

def _one_bucket(grain: str = "hour") -> Series:
    start = START.replace(hour=5) if grain == "hour" else START
    return Series(grain, start, (Point(start, 1, 0, 100.0, 200.0, 1, 0),))  # type: ignore[arg-type]


def _x_range(axes) -> tuple[datetime, datetime]:
    from matplotlib.dates import num2date

    low, high = axes.get_xlim()
    return num2date(low), num2date(high)


def test_one_bucket_pads_the_time_axis_by_a_bucket_and_ticks_bucket_starts() -> None:
    axes = latency_figure({"new": _one_bucket()}).axes[0]
    assert _x_range(axes) == (START.replace(hour=4), START.replace(hour=6))  # not 2025 to 2029
    axes.figure.canvas.draw()
    assert [t.get_text() for t in axes.get_xticklabels()] == ["04:00\n01 Mar", "05:00\n01 Mar", "06:00\n01 Mar"]
    daily = satisfaction_figure({"new": _one_bucket("day")}).axes[0]
    assert _x_range(daily) == (START - timedelta(days=1), START + timedelta(days=1))


def test_one_bucket_still_draws_both_lines_as_markers_and_the_band_as_an_error_bar() -> None:
    axes = latency_figure({"new": _one_bucket()}).axes[0]
    p50, p95 = axes.lines[:2]
    assert p50.get_marker() == "o" and p95.get_marker() == "v" and list(p95.get_ydata()) == [200.0]
    bars = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and not [c for c in axes.collections if isinstance(c, PolyCollection)]  # no empty band
    (segment,) = bars[0].lines[2][0].get_segments()
    assert [y for _, y in segment] == [100.0, 200.0]  # the p50-p95 band, as a bar


def test_one_rated_bucket_shows_its_wilson_interval_as_a_bar() -> None:
    axes = satisfaction_figure({"new": _one_bucket()}).axes[0]
    (bar,) = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    (segment,) = bar.lines[2][0].get_segments()
    interval = wilson(1, 1)
    assert [y for _, y in segment] == pytest.approx([interval.low, interval.high])
    assert axes.lines[0].get_marker() == "o" and axes.get_ylim()[0] < 0 < 1 < axes.get_ylim()[1]


def test_the_dashboard_draws_one_buckets_p95_and_many_buckets_as_lines_and_bands() -> None:
    rows = [Column("new", "New", _metrics(1, 1, 0), None, _one_bucket())]
    left = dashboard_figure(rows).axes[0]
    assert [line.get_marker() for line in left.lines[:2]] == ["o", "v"]
    assert _x_range(left) == (START.replace(hour=4), START.replace(hour=6))
    many = latency_figure({"busy": _series(40, 100.0, 1, 1)}).axes[0]
    assert [c for c in many.collections if isinstance(c, PolyCollection)]  # a shaded band
    assert many.lines[0].get_marker() in (None, "None", "")  # too many buckets for markers
    assert _x_range(many) == (START - timedelta(hours=1), START + timedelta(hours=40))


def test_counts_in_the_text_agree_with_their_nouns() -> None:
    text = latency_text({"new": _one_bucket()})
    assert text.splitlines() == ["new: 1 answer over 1 hour; p95 highest 200 ms (01 Mar 05:00)",
                                 "  01 Mar 05:00  p50 100 ms · p95 200 ms · 1 answer"]
    assert satisfaction_text({"new": _one_bucket()}).startswith("new: 1 rating over 1 hour")
    assert "(1 earlier hour not listed)" in latency_text({"long": _series(9, 100.0, 1, 1)})
    assert dashboard_text([Column("one", "One", _metrics(1, 1, 0), None, _one_bucket())])[0:14] == "one: 1 answer "
