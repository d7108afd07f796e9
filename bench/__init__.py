"""Benchmarks: each `python bench/NAME.py` compares against a baseline in the same run and prints a JSON line."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def latency_stats(samples: list[float]) -> dict[str, float]:
    """Median and 95th percentile of durations in seconds, as milliseconds."""
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2)}


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Call fn `repeats` times: the median wall time in milliseconds and the last result."""
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), value
