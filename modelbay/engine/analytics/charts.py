"""Analytics charts as PNG with their text alternatives: response time over time (p50 line, p50-p95 band),
satisfaction over time (👍 share with its Wilson 95% band), and the dashboard (p95 over time beside each model's
👍 share with its interval).

Each drawing has a `*_text` function giving the same figures as lines of text, which every reply that carries the
image also carries. Series come from `series.series` (the rollups); drawing is matplotlib on `figures.figure()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from modelbay.engine.analytics.analytics import wilson
from modelbay.engine.analytics.compare import Column
from modelbay.engine.analytics.figures import band, figure, png
from modelbay.engine.analytics.series import Point, Series
from modelbay.engine.units import plural

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["CHARTS", "dashboard_figure", "dashboard_png", "dashboard_text", "latency_figure", "latency_png",
           "latency_text", "ms_text", "satisfaction_figure", "satisfaction_png", "satisfaction_text"]

CHARTS = ("response-time", "satisfaction", "dashboard")  # the names REST serves as /api/analytics/charts/<name>.png
_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD")
_MOST_POINTS = 8  # buckets a text alternative lists one by one per model (the most recent)


def ms_text(value: float | None) -> str:
    """A response time as people read it: `840 ms`, `1.25 s`, `-` when unknown."""
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _when(at: datetime, grain: str) -> str:
    return at.strftime("%d %b %H:00") if grain == "hour" else at.strftime("%d %b")


def _share(p: Point) -> str:
    low, high = p.satisfaction_interval or (0.0, 1.0)
    return f"{p.satisfaction:.0%} 👍 of {p.ratings} ({low:.0%}–{high:.0%})"


_BUCKET = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_FEW_TICKS = 12  # up to this many buckets in view, every bucket gets a tick; beyond, matplotlib picks them


def _time_axis(axes: Axes, grain: str, times: Sequence[datetime]) -> None:
    """Show the drawn buckets with one bucket of room either side, ticked on bucket starts (never between them).

    matplotlib widens a single date to years on each side; a new deployment's first day is one bucket."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, DateFormatter, date2num
    from matplotlib.ticker import FixedLocator

    step = _BUCKET.get(grain, _BUCKET["day"])
    first, last = min(times), max(times)
    axes.set_xlim(first - step, last + step)
    buckets = round((last - first) / step) + 3
    if buckets <= _FEW_TICKS:
        axes.xaxis.set_major_locator(FixedLocator([date2num(first + k * step) for k in range(-1, buckets - 1)]))
        axes.xaxis.set_major_formatter(DateFormatter("%H:00\n%d %b" if grain == "hour" else "%d %b\n%Y"))
    else:
        locator = AutoDateLocator(minticks=3, maxticks=8)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_xlabel(f"time (UTC, per {grain})")
    axes.grid(True, alpha=0.3)


def _empty(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, what, ha="center", va="center", transform=axes.transAxes, color="#8C8C8C")
    axes.set_xticks([])
    axes.set_yticks([])


def _draw_latency(axes: Axes, named: Mapping[str, Series], *, shaded: bool = True) -> None:
    drawn: list[datetime] = []
    for i, (name, s) in enumerate(named.items()):
        color = _COLORS[i % len(_COLORS)]
        points = [p for p in s.points if p.p50_ms is not None]
        if not points:
            continue
        times = [p.start for p in points]
        p50 = [p.p50_ms for p in points]
        p95 = [p.p95_ms if p.p95_ms is not None else p.p50_ms for p in points]
        few = len(points) < 30  # markers while points can be told apart; one point is only a marker
        axes.plot(times, p50, color=color, marker="o" if few else None, markersize=4, label=f"{name} p50")
        axes.plot(times, p95, color=color, linestyle="--", linewidth=1, marker="v" if few else None, markersize=4,
                  markerfacecolor="none", label=f"{name} p95")
        if shaded:
            band(axes, times, p50, p95, color)
        drawn += times
    if not drawn:
        _empty(axes, "no answers in this period")
        return
    axes.set_ylabel("response time (ms)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7, loc="upper left")
    _time_axis(axes, next(iter(named.values())).grain, drawn)


def latency_figure(named: Mapping[str, Series], title: str = "Response time") -> Figure:
    """Each model's p50 response time (solid, round markers) and p95 (dashed, triangles) per bucket, the band
    between them shaded (an error bar at a single bucket); the time axis shows one bucket of room either side; about
    800x400 pixels. A model with no answers is left out; with none at all the chart says so."""
    drawn = figure(8, 4)
    axes = drawn.add_subplot()
    _draw_latency(axes, named)
    axes.set_title(title)
    return drawn


def latency_png(named: Mapping[str, Series], title: str = "Response time") -> bytes:
    """`latency_figure` as PNG bytes."""
    return png(latency_figure(named, title))


def latency_text(named: Mapping[str, Series]) -> str:
    """The response-time chart as text: per model, its range over the period and its latest buckets."""
    lines = []
    for name, s in named.items():
        points = [p for p in s.points if p.p50_ms is not None]
        if not points:
            lines.append(f"{name}: no answers in this period")
            continue
        worst = max(points, key=lambda p: p.p95_ms or 0.0)
        lines.append(f"{name}: {plural(s.requests, 'answer')} over {plural(len(points), s.grain)}; p95 highest "
                     f"{ms_text(worst.p95_ms)} ({_when(worst.start, s.grain)})")
        shown = points[-_MOST_POINTS:]
        if len(points) > len(shown):
            lines.append(f"  ({plural(len(points) - len(shown), 'earlier ' + s.grain)} not listed)")
        lines += [f"  {_when(p.start, s.grain)}  p50 {ms_text(p.p50_ms)} · p95 {ms_text(p.p95_ms)} · "
                  f"{plural(p.requests, 'answer')}" for p in shown]
    return "\n".join(lines)


def _draw_satisfaction(axes: Axes, named: Mapping[str, Series]) -> None:
    from matplotlib.ticker import PercentFormatter

    drawn: list[datetime] = []
    for i, (name, s) in enumerate(named.items()):
        color = _COLORS[i % len(_COLORS)]
        points = [p for p in s.points if p.ratings]
        if not points:
            continue
        times = [p.start for p in points]
        intervals = [wilson(p.ups, p.ratings) for p in points]
        axes.plot(times, [p.ups / p.ratings for p in points], color=color, marker="o", markersize=4, label=name)
        band(axes, times, [i.low for i in intervals], [i.high for i in intervals], color)
        drawn += times
    if not drawn:
        _empty(axes, "no ratings in this period")
        return
    axes.set_ylabel("thumbs-up share (95% interval)")  # the default font has no emoji
    axes.set_ylim(-0.02, 1.02)  # a share of 0% or 100% keeps its whole marker
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.legend(fontsize=7, loc="lower left")
    _time_axis(axes, next(iter(named.values())).grain, drawn)


def satisfaction_figure(named: Mapping[str, Series], title: str = "Satisfaction") -> Figure:
    """Each model's thumbs-up share per bucket with its Wilson 95% interval shaded (an error bar at a single bucket);
    buckets without ratings are skipped; about 800x400 pixels."""
    drawn = figure(8, 4)
    axes = drawn.add_subplot()
    _draw_satisfaction(axes, named)
    axes.set_title(title)
    return drawn


def satisfaction_png(named: Mapping[str, Series], title: str = "Satisfaction") -> bytes:
    """`satisfaction_figure` as PNG bytes."""
    return png(satisfaction_figure(named, title))


def satisfaction_text(named: Mapping[str, Series]) -> str:
    """The satisfaction chart as text: per model, its rated buckets (the latest ones) with share and interval."""
    lines = []
    for name, s in named.items():
        points = [p for p in s.points if p.ratings]
        if not points:
            lines.append(f"{name}: no ratings in this period")
            continue
        lines.append(f"{name}: {plural(sum(p.ratings for p in points), 'rating')} over "
                     f"{plural(len(points), s.grain)}")
        shown = points[-_MOST_POINTS:]
        if len(points) > len(shown):
            lines.append(f"  ({plural(len(points) - len(shown), 'earlier ' + s.grain)} not listed)")
        lines += [f"  {_when(p.start, s.grain)}  {_share(p)}" for p in shown]
    return "\n".join(lines)


def dashboard_figure(rows: Sequence[Column], title: str = "Models") -> Figure:
    """Two panels, about 1100x420 pixels: each model's p50/p95 over time (left) and its thumbs-up share with the
    Wilson 95% interval as an error bar, labelled with its rating count (right)."""
    from matplotlib.ticker import PercentFormatter

    drawn = figure(11, 4.2)
    left, right = drawn.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    named = {row.name: row.series for row in rows}
    _draw_latency(left, named, shaded=False)
    left.set_title("response time (p50 solid, p95 dashed)")
    rated = [r for r in rows if r.metrics.ratings]
    if not rated:
        _empty(right, "no ratings in this period")
    else:
        colors = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(named)}
        for i, row in enumerate(rated):
            m = row.metrics
            low, high = m.satisfaction_interval or (0.0, 1.0)
            share = m.satisfaction or 0.0
            right.errorbar(share, i, xerr=[[share - low], [high - share]], fmt="o", capsize=4,
                           color=colors.get(row.name, _COLORS[i % len(_COLORS)]))
            right.annotate(f"{share:.0%} of {m.ratings}", (share, i), textcoords="offset points", xytext=(0, 7),
                           ha="center", fontsize=8)
        right.set_yticks(range(len(rated)), [r.name for r in rated], fontsize=8)
        right.set_ylim(-0.6, len(rated) - 0.4)
        right.invert_yaxis()
        right.set_xlim(0, 1)
        right.xaxis.set_major_formatter(PercentFormatter(1.0))
        right.set_xlabel("thumbs-up share (95% Wilson interval)")
        right.grid(True, axis="x", alpha=0.3)
    right.set_title("satisfaction")
    drawn.suptitle(title)
    return drawn


def dashboard_png(rows: Sequence[Column], title: str = "Models") -> bytes:
    """`dashboard_figure` as PNG bytes."""
    return png(dashboard_figure(rows, title))


def dashboard_text(rows: Sequence[Column]) -> str:
    """The dashboard as text: one line per model with its answers, p50/p95 and thumbs-up share with interval."""
    lines = []
    for row in rows:
        m = row.metrics
        if not m.requests and not m.ratings:
            lines.append(f"{row.name}: no answers")
            continue
        low, high = m.satisfaction_interval or (0.0, 1.0)
        rated = f"{m.satisfaction:.0%} 👍 of {m.ratings} ({low:.0%}–{high:.0%})" if m.ratings else "no ratings"
        failed = f" ({m.failures:,} failed)" if m.failures else ""
        lines.append(f"{row.name}: {plural(m.requests, 'answer')}{failed} · p50 {ms_text(m.p50_ms)} · p95 "
                     f"{ms_text(m.p95_ms)} · {rated}")
    return "\n".join(lines)
