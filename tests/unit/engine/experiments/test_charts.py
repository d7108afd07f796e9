"""engine/experiments/charts.py: the progress chart draws a first look and an empty experiment honestly."""

from __future__ import annotations

from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from modelbay.engine.experiments.charts import progress_figure, progress_text
from modelbay.engine.experiments.stats import Totals, analyse


def _thumbs(name: str, ups: int, downs: int) -> Totals:
    return Totals(name, 1.0, exposures=ups + downs, answers=ups + downs, ups=ups, downs=downs)


def _looks(analysis, count: int) -> list[dict]:
    one = {"sequential": {c.variant: c.sequential.to_dict() for c in analysis.comparisons},
           "difference": {c.variant: c.difference for c in analysis.comparisons}}
    return [one] * count


def test_an_experiment_without_ratings_has_a_percent_axis_that_says_so() -> None:
    left, right = progress_figure(analyse("thumbs_up", [_thumbs("a", 0, 0), _thumbs("b", 0, 0)]), []).axes
    assert left.get_ylabel() == "thumbs-up share (%)" and left.get_ylim() == (-2, 102)  # percent, not 0-1
    assert "no answers rated yet" in [t.get_text() for t in left.texts]
    assert "no looks with enough data yet" in [t.get_text() for t in right.texts]


def test_a_single_look_is_a_marker_with_its_band_as_a_bar_on_whole_looks() -> None:
    analysis = analyse("thumbs_up", [_thumbs("a", 30, 30), _thumbs("b", 40, 20)])
    left, right = progress_figure(analysis, _looks(analysis, 1)).axes
    assert right.get_xlim() == (0.5, 1.5)
    assert right.lines[0].get_marker() == "o"
    assert [c for c in right.containers if isinstance(c, ErrorbarContainer)]  # the band at one look
    assert not [c for c in right.collections if isinstance(c, PolyCollection)]
    assert all(float(t).is_integer() for t in right.get_xticks())
    assert 0 < left.lines[0].get_ydata()[0] < 100
    several = progress_figure(analysis, _looks(analysis, 3)).axes[1]
    assert [c for c in several.collections if isinstance(c, PolyCollection)] and several.get_xlim() == (0.5, 3.5)


def test_the_text_counts_looks_and_writes_a_real_minus() -> None:
    analysis = analyse("thumbs_up", [_thumbs("a", 40, 20), _thumbs("b", 30, 30)])
    text = progress_text(analysis, _looks(analysis, 1))
    assert "over 1 look with" in text and "b − a: −16.7 points now" in text and " -" not in text
