"""Figures for charts: matplotlib's object API on the Agg canvas (no pyplot state, no display, safe on any thread).

Every chart in ModelBay is drawn on a `figure()` and turned into PNG bytes by `png()`; each chart module keeps its own
drawing and its text alternative. Data with a single point is the first thing every new deployment draws: lines get
markers, and `band()` turns a one-point band (which `fill_between` draws as nothing) into an error bar.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["band", "figure", "png"]


def figure(width: float = 6.4, height: float = 3.6, dpi: int = 100) -> Figure:
    """A new figure of width x height inches at dpi, attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(drawn)
    return drawn


def png(drawn: Figure) -> bytes:
    """The figure as PNG bytes, laid out tightly."""
    drawn.tight_layout()
    out = io.BytesIO()
    drawn.savefig(out, format="png")
    return out.getvalue()


def band(axes: Axes, xs: Sequence[Any], low: Sequence[float], high: Sequence[float], color: str | None = None,
         alpha: float = 0.15, label: str | None = None) -> None:
    """Shade low..high along xs; with a single x, where a shaded area has no width, a thick translucent error bar."""
    if len(xs) > 1:
        axes.fill_between(xs, low, high, color=color, alpha=alpha, label=label)
        return
    mid = [(a + b) / 2 for a, b in zip(low, high, strict=True)]
    below = [m - a for m, a in zip(mid, low, strict=True)]
    above = [b - m for m, b in zip(mid, high, strict=True)]
    axes.errorbar(xs, mid, yerr=[below, above], fmt="none", ecolor=color, elinewidth=6, alpha=max(alpha, 0.3),
                  capsize=0, label=label)
