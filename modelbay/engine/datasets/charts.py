"""A length histogram drawn for chat: unicode bars as text, and a PNG image (matplotlib, no display needed)."""

from __future__ import annotations

from modelbay.engine.analytics import figures
from modelbay.engine.datasets.histogram import Histogram

__all__ = ["BAR_WIDTH", "bars", "png"]

BAR_WIDTH = 24  # characters of the longest bar
_EIGHTHS = " ▏▎▍▌▋▊▉"


def _bar(count: int, most: int, width: int) -> str:
    eighths = round(count / most * width * 8) if most else 0
    if count and not eighths:
        eighths = 1  # a bin with rows never looks empty
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def bars(h: Histogram, width: int = BAR_WIDTH) -> str:
    """The histogram as lines of text: `  64–127 │██████▌ 52`, the bins over the limit marked with ✂."""
    labels = [f"{lo:,}–{hi - 1:,}" if hi - lo > 1 else f"{lo:,}" for lo, hi in zip(h.edges, h.edges[1:])]
    pad = max(len(label) for label in labels)
    most = max(h.counts)
    lines = []
    for label, lo, hi, count in zip(labels, h.edges, h.edges[1:], h.counts):
        cut = " ✂" if h.limit is not None and hi - 1 > h.limit else ""
        lines.append(f"{label:>{pad}} │{_bar(count, most, width):<{width}} {count:,}{cut}")
    lines.append(f"{h.unit} per row: min {h.minimum:,} · median {h.median:,} · p95 {h.p95:,} · max {h.maximum:,}")
    if h.limit is not None:
        lines.append(f"max_length {h.limit:,}: {h.over:,} row{'s' if h.over != 1 else ''} longer" +
                     (" (✂ marks bins past it)" if h.over else ""))
    return "\n".join(lines)


def png(h: Histogram, title: str) -> bytes:
    """The histogram as a PNG chart (bars per bin, a dashed line at max_length), about 800x400 pixels."""
    from matplotlib.ticker import MaxNLocator

    figure = figures.figure(8, 4)
    axes = figure.add_subplot()
    widths = [hi - lo for lo, hi in zip(h.edges, h.edges[1:])]
    axes.bar(h.edges[:-1], h.counts, width=widths, align="edge", color="#4C72B0", edgecolor="white")
    if h.limit is not None:
        axes.axvline(h.limit, color="#C44E52", linestyle="--", label=f"max_length {h.limit:,} ({h.over:,} over)")
        axes.legend(loc="upper right")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # lengths and row counts are whole numbers
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.set_xlabel(f"{h.unit} per row")
    axes.set_ylabel("rows")
    return figures.png(figure)
