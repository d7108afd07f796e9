"""Row lengths in bins: how long a dataset's rows are, in tokens (with a model's tokenizer) or characters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["BINS", "Histogram", "histogram"]

BINS = 10  # about how many bins a histogram has (widths are round numbers, so a few more or less)
Unit = Literal["tokens", "characters"]


@dataclass(frozen=True)
class Histogram:
    """Counts of rows per length bin; bin i holds lengths from `edges[i]` up to, not including, `edges[i + 1]`.

    `limit` is the max_length the rows were measured against (tokens only) and `over` how many rows exceed it,
    counted before any policy drops or truncates them.
    """

    unit: Unit
    edges: tuple[int, ...]
    counts: tuple[int, ...]
    minimum: int
    median: int
    p95: int
    maximum: int
    mean: float
    limit: int | None = None
    over: int = 0

    @property
    def rows(self) -> int:
        """How many rows were measured."""
        return sum(self.counts)


def _round_width(raw: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least raw."""
    if raw <= 1:
        return 1
    power = 10 ** math.floor(math.log10(raw))
    return next(int(step * power) for step in (1, 2, 5, 10) if step * power >= raw)


def _percentile(ordered: Sequence[int], share: float) -> int:
    """The nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def histogram(lengths: Sequence[int], *, unit: Unit, limit: int | None = None, bins: int = BINS
              ) -> Histogram | None:
    """Bin the lengths into about `bins` bins of a round width from the smallest to the largest; None if empty."""
    if not lengths:
        return None
    ordered = sorted(lengths)
    low, high = ordered[0], ordered[-1]
    width = _round_width((high - low + 1) / bins)
    start = low // width * width
    count = (high - start) // width + 1
    counts = [0] * count
    for n in ordered:
        counts[(n - start) // width] += 1
    edges = tuple(start + i * width for i in range(count + 1))
    over = sum(1 for n in ordered if limit is not None and n > limit)
    return Histogram(unit, edges, tuple(counts), low, _percentile(ordered, 0.5), _percentile(ordered, 0.95), high,
                     sum(ordered) / len(ordered), limit, over)
