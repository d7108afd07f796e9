"""Length histograms: round bin widths, percentiles, rows over the limit; drawn as unicode bars and a PNG."""

from __future__ import annotations

from modelbay.engine.datasets.charts import bars, png
from modelbay.engine.datasets.histogram import histogram


def test_bins_of_a_round_width_cover_every_length() -> None:
    h = histogram([3, 10, 12, 19, 20, 47, 95], unit="tokens", limit=40)
    assert h is not None
    assert h.edges == (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
    assert h.counts == (1, 3, 1, 0, 1, 0, 0, 0, 0, 1) and h.rows == 7
    assert (h.minimum, h.median, h.p95, h.maximum, h.over) == (3, 19, 95, 95, 2)
    assert histogram([], unit="tokens") is None
    same = histogram([5, 5, 5], unit="characters")
    assert same is not None and same.edges == (5, 6) and same.counts == (3,)


def test_bars_scale_to_the_fullest_bin_and_mark_bins_past_the_limit() -> None:
    h = histogram([3, 10, 12, 19, 20, 47, 95], unit="tokens", limit=40)
    assert h is not None
    lines = bars(h, width=6).splitlines()
    assert lines[0] == "  0–9 │██     1"
    assert lines[1] == "10–19 │██████ 3"
    assert lines[3] == "30–39 │       0"
    assert lines[4] == "40–49 │██     1 ✂"
    assert lines[-2] == "tokens per row: min 3 · median 19 · p95 95 · max 95"
    assert lines[-1] == "max_length 40: 2 rows longer (✂ marks bins past it)"
    narrow = histogram([7, 7, 9], unit="characters")
    assert narrow is not None and bars(narrow, width=4).splitlines()[:3] == ["7 │████ 2", "8 │     0", "9 │██   1"]


def test_the_chart_is_a_png() -> None:
    h = histogram(list(range(1, 300, 7)), unit="tokens", limit=128)
    assert h is not None
    data = png(h, "Dataset #1 · pairs: tokens per row")
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
