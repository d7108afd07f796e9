"""Figures for charts: matplotlib's object API on the Agg canvas (no pyplot state, no display, safe on any thread).

Every chart in ModelBay is drawn on a `figure()` and turned into PNG bytes by `png()`; each chart module keeps its own
drawing and its text alternative.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure", "png"]


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
