"""A variant against its parent: ratios, budgets per kind, the verdict's noise rule, the report rows and the chart."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from modelbay.engine.optimization.charts import ChartRow, variants_png, variants_text
from modelbay.engine.optimization.compare import (
    DEFAULT_BUDGETS,
    Z_ONE_SIDED_95,
    Budget,
    Comparison,
    Verdict,
    verdict,
)
from modelbay.engine.optimization.config import BUDGET_KINDS
from modelbay.engine.optimization.measure import KlStats, Measurement

PARENT = Measurement(format="transformers", size_bytes=4_000_000, load_s=0.5, peak_load_bytes=8_000_000,
                     ttft_ms=20.0, tokens_per_s=100.0, perplexity=10.0, perplexity_se=0.4, nll_mean=math.log(10.0),
                     tokens=2000, sparsity=0.0, parameters=1_000_000, device="cpu", threads=2)


def _variant(ratio: float, *, size: int = 1_000_000, speed: float | None = 150.0) -> Measurement:
    ppl = PARENT.perplexity * ratio
    return dataclasses.replace(PARENT, size_bytes=size, perplexity=ppl, perplexity_se=ppl * 0.04,
                               nll_mean=math.log(ppl), tokens_per_s=speed, ttft_ms=15.0, sparsity=None)


def _kl(ratio: float, ln_se: float) -> KlStats:
    return KlStats(kl_mean=0.01, kl_se=0.001, kl_p99=0.08, top1_agreement=0.97, top1_se=0.004, tokens=2000,
                   ln_ratio_mean=math.log(ratio), ln_ratio_se=ln_se)


def _compare(ratio: float, ln_se: float = 0.002) -> Comparison:
    return Comparison(PARENT, _variant(ratio), _kl(ratio, ln_se))


def test_every_budget_kind_the_config_names_has_a_default() -> None:
    assert set(DEFAULT_BUDGETS) == set(BUDGET_KINDS)
    assert DEFAULT_BUDGETS["8-bit"] == 0.02 and DEFAULT_BUDGETS["4-bit"] == 0.08


def test_a_persons_percent_replaces_the_default_and_false_removes_it() -> None:
    assert Budget.of("8-bit") == Budget(0.02, "8-bit")
    asked = Budget.of("8-bit", 1)
    assert asked.max_ppl_increase == pytest.approx(0.01) and asked.asked
    assert "you set" in asked.describe()
    assert Budget.of("4-bit", False).max_ppl_increase is None
    with pytest.raises(ValueError, match="no default budget"):
        Budget.of("3-bit")
    with pytest.raises(ValueError, match="negative"):
        Budget.of("8-bit", -1)


def test_ratios_are_variant_over_parent() -> None:
    comparison = _compare(1.01)
    assert comparison.size_ratio == pytest.approx(0.25)
    assert comparison.ppl_ratio == pytest.approx(1.01)
    assert comparison.speed_ratio == pytest.approx(1.5)
    assert comparison.ttft_ratio == pytest.approx(0.75)
    assert Comparison(PARENT, _variant(1.0, speed=None)).speed_ratio is None


def test_a_variant_clearly_inside_its_budget_is_within_and_the_reason_names_the_figures() -> None:
    result = verdict(_compare(1.01), Budget.of("8-bit"))
    assert result.label == "within budget" and result.within
    assert "+1.00%" in result.reason and "+2% budget for 8-bit" in result.reason and "10.00 → 10.10" in result.reason


def test_a_variant_past_its_budget_is_over() -> None:
    result = verdict(_compare(1.05), Budget.of("8-bit"))
    assert result.label == "over budget" and not result.within
    assert "+5.00%" in result.reason and "over the +2% budget" in result.reason


def test_a_variant_inside_only_by_its_point_estimate_is_not_offered_as_within() -> None:
    comparison = _compare(1.015, ln_se=0.01)  # upper bound 1.015 * exp(1.645 * 0.01) is past +2%
    assert comparison.ppl_ratio_upper == pytest.approx(1.015 * math.exp(Z_ONE_SIDED_95 * 0.01))
    result = verdict(comparison, Budget.of("8-bit"))
    assert result.label == "over budget"
    assert "could be up to" in result.reason and "not shown within" in result.reason


def test_without_kl_the_ratio_error_combines_both_errors_and_is_wider_than_the_paired_one() -> None:
    unpaired = Comparison(PARENT, _variant(1.01))
    assert unpaired.ln_ratio_se == pytest.approx(math.hypot(0.04, 0.04))
    assert unpaired.ln_ratio_se > _compare(1.01).ln_ratio_se
    assert verdict(unpaired, Budget.of("8-bit")).label == "over budget"  # the text cannot show it within


def test_no_budget_gives_no_verdict_but_still_the_figures() -> None:
    result = verdict(_compare(1.5), Budget.of("4-bit", False))
    assert result.label == "no budget" and "+50.00%" in result.reason


def test_a_better_variant_is_within_any_budget() -> None:
    assert verdict(_compare(0.98), Budget.of("16-bit")).within


def test_records_go_through_json_and_back() -> None:
    comparison = _compare(1.03)
    data = json.loads(json.dumps(comparison.to_dict()))
    assert Comparison.from_dict(data) == comparison
    assert data["ratios"]["perplexity"] == pytest.approx(1.03)
    budget = Budget.of("4-bit", 5)
    assert Budget.from_dict(json.loads(json.dumps(budget.to_dict()))) == budget
    result = verdict(comparison, budget)
    assert Verdict.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    label, reason = result
    assert (label, reason) == (result.label, result.reason)
    assert Measurement.from_dict({**PARENT.to_dict(), "unknown": 1}) == PARENT


def _rows() -> list[ChartRow]:
    return [ChartRow.of("tiny", PARENT, parent=True),
            ChartRow.of("tiny-int8", _variant(1.01), verdict="within budget"),
            ChartRow.of("tiny-nf4", _variant(1.2, size=600_000, speed=None), verdict="over budget")]


def test_the_chart_is_a_png() -> None:
    png = variants_png(_rows())
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    with pytest.raises(ValueError):
        variants_png([])


def test_the_charts_text_lists_the_parent_first_and_each_variants_ratios() -> None:
    text = variants_text(list(reversed(_rows())))
    lines = text.splitlines()
    assert lines[0].startswith("tiny ") and lines[0].endswith("(parent)")
    assert "0.25x size" in lines[2] and "1.010x ppl" in lines[2] and "1.50x speed" in lines[2]
    assert "within budget" in lines[2]
    assert "—" in lines[1] and "over budget" in lines[1]
    assert ChartRow.from_dict(json.loads(json.dumps(_rows()[1].to_dict()))) == _rows()[1]
    assert ChartRow.of("tiny", PARENT.to_dict(), parent=True) == _rows()[0]  # from a stored report
