"""The experiment progress chart (PNG) and its text alternative.

Left: each variant's metric (👍 share or mean response time) with its 95% interval. Right: each treatment's
difference from the control over the looks so far, with the mSPRT confidence sequence as a band: the band narrows as
data comes in, and the difference is shown once the band leaves zero.
"""

from __future__ import annotations

import math

from modelbay.engine.analytics.figures import figure, png
from modelbay.engine.experiments.stats import THUMBS_UP, Analysis

__all__ = ["progress_png", "progress_text"]


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, "👍 share (%)") if metric == THUMBS_UP else (1.0, "mean response time (ms)")


def progress_png(analysis: Analysis, history: list[dict]) -> bytes:
    """The chart as PNG bytes."""
    scale, label = _scale(analysis.metric)
    drawn = figure(9.0, 3.6)
    left, right = drawn.subplots(1, 2)
    names = [f.totals.name for f in analysis.variants]
    for i, f in enumerate(analysis.variants):
        if f.value is None:
            continue
        low, high = f.interval if f.interval is not None else (f.value, f.value)
        left.errorbar([i], [f.value * scale], yerr=[[(f.value - low) * scale], [(high - f.value) * scale]],
                      fmt="o", capsize=6)
    left.set_xticks(range(len(names)), names)
    left.set_ylabel(label.replace("👍", "thumbs-up"))
    left.set_title("Each variant, 95% interval")
    for c in analysis.comparisons:
        looks = [(k, h["sequential"].get(c.variant), h.get("difference", {}).get(c.variant))
                 for k, h in enumerate(history, 1) if h.get("sequential", {}).get(c.variant)]
        looks = [(k, s, d) for k, s, d in looks if s.get("low") is not None and s.get("high") is not None]
        if not looks:
            continue
        xs = [k for k, _, _ in looks]
        right.fill_between(xs, [s["low"] * scale for _, s, _ in looks], [s["high"] * scale for _, s, _ in looks],
                           alpha=0.25, label=f"{c.variant} − {c.control}")
        right.plot(xs, [(d or 0.0) * scale for _, _, d in looks], marker=".")
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xlabel("look")
    right.set_title("Difference from control, always-valid band")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="best", fontsize="small")
    return png(drawn)


def progress_text(analysis: Analysis, history: list[dict]) -> str:
    """The chart's content as lines of text."""
    scale, label = _scale(analysis.metric)
    unit = " points" if analysis.metric == THUMBS_UP else " ms"
    lines = [f"Chart: {label} per variant with 95% intervals, and the difference from the control over "
             f"{len(history)} look(s) with its always-valid band."]
    for c in analysis.comparisons:
        s = c.sequential
        if c.difference is None:
            lines.append(f"{c.variant} − {c.control}: no data yet.")
            continue
        band = ("not computed yet (too little data)" if s.looks == 0 or not (math.isfinite(s.low)
                and math.isfinite(s.high)) else f"{s.low * scale:+.1f} to {s.high * scale:+.1f}{unit}")
        lines.append(f"{c.variant} − {c.control}: {c.difference * scale:+.1f}{unit} now; always-valid band {band}.")
    return "\n".join(lines)
