"""The experiment progress chart (PNG) and its text alternative.

Left: each variant's metric (👍 share or mean response time) with its 95% interval. Right: each treatment's
difference from the control over the looks so far, with the mSPRT confidence sequence as a band: the band narrows as
data comes in, and the difference is shown once the band leaves zero.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from modelbay.engine.analytics.figures import band, figure, png
from modelbay.engine.experiments.stats import THUMBS_UP, Analysis
from modelbay.engine.units import number, plural

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["progress_figure", "progress_png", "progress_text"]


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, "👍 share (%)") if metric == THUMBS_UP else (1.0, "mean response time (ms)")


def _empty(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, what, ha="center", va="center", transform=axes.transAxes, color="#8C8C8C")


def progress_figure(analysis: Analysis, history: list[dict]) -> Figure:
    """The chart: each variant with its 95% interval (left), each difference from control over the looks with its
    always-valid band (right). A 👍 share is drawn in percent on a 0-100 axis; a variant or a look that is the only
    one is still drawn (a marker and an interval bar, the x range padded around it)."""
    from matplotlib.ticker import MaxNLocator

    scale, label = _scale(analysis.metric)
    drawn = figure(9.0, 3.6)
    left, right = drawn.subplots(1, 2)
    names = [f.totals.name for f in analysis.variants]
    valued = 0
    for i, f in enumerate(analysis.variants):
        if f.value is None:
            continue
        low, high = f.interval if f.interval is not None else (f.value, f.value)
        left.errorbar([i], [f.value * scale], yerr=[[(f.value - low) * scale], [(high - f.value) * scale]],
                      fmt="o", capsize=6)
        valued += 1
    left.set_xticks(range(len(names)), names)
    left.set_xlim(-0.5, max(len(names), 1) - 0.5)
    if analysis.metric == THUMBS_UP:
        left.set_ylim(-2, 102)  # percent, whole markers at 0% and 100%
    else:
        left.set_ylim(bottom=0)
    if not valued:
        _empty(left, "no answers rated yet" if analysis.metric == THUMBS_UP else "no answers yet")
    left.set_ylabel(label.replace("👍", "thumbs-up"))  # the default font has no emoji
    left.set_title("Each variant, 95% interval")
    last = 0
    for c in analysis.comparisons:
        looks = [(k, h["sequential"].get(c.variant), h.get("difference", {}).get(c.variant))
                 for k, h in enumerate(history, 1) if h.get("sequential", {}).get(c.variant)]
        looks = [(k, s, d) for k, s, d in looks if s.get("low") is not None and s.get("high") is not None]
        if not looks:
            continue
        xs = [k for k, _, _ in looks]
        line = right.plot(xs, [(d or 0.0) * scale for _, _, d in looks], marker="o", markersize=4)[0]
        band(right, xs, [s["low"] * scale for _, s, _ in looks], [s["high"] * scale for _, s, _ in looks],
             color=line.get_color(), alpha=0.25, label=f"{c.variant} − {c.control}")
        last = max(last, xs[-1])
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xlim(0.5, max(last, 1) + 0.5)  # one look either side of the data, whole looks only
    right.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if not last:
        _empty(right, "no looks with enough data yet")
    right.set_xlabel("look")
    right.set_ylabel(("difference (points)" if analysis.metric == THUMBS_UP else "difference (ms)"))
    right.set_title("Difference from control, always-valid band")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="best", fontsize="small")
    return drawn


def progress_png(analysis: Analysis, history: list[dict]) -> bytes:
    """`progress_figure` as PNG bytes."""
    return png(progress_figure(analysis, history))


def progress_text(analysis: Analysis, history: list[dict]) -> str:
    """The chart's content as lines of text."""
    scale, label = _scale(analysis.metric)
    unit = " points" if analysis.metric == THUMBS_UP else " ms"
    lines = [f"Chart: {label} per variant with 95% intervals, and the difference from the control over "
             f"{plural(len(history), 'look')} with its always-valid band."]
    for c in analysis.comparisons:
        s = c.sequential
        if c.difference is None:
            lines.append(f"{c.variant} − {c.control}: no data yet.")
            continue
        interval = ("not computed yet (too little data)" if s.looks == 0 or not (math.isfinite(s.low)
                and math.isfinite(s.high)) else f"{number(s.low * scale, 1, sign=True)} to "
                    f"{number(s.high * scale, 1, sign=True)}{unit}")
        lines.append(f"{c.variant} − {c.control}: {number(c.difference * scale, 1, sign=True)}{unit} now; "
                     f"always-valid band {interval}.")
    return "\n".join(lines)
