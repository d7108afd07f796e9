"""The experiment statistics: mSPRT validity under peeking, power, the fixed-sample figures, SRM, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from modelbay.engine.analytics.analytics import wilson
from modelbay.engine.experiments.stats import (
    MIN_SAMPLE,
    SHARE_MIXTURE_SD,
    Totals,
    analyse,
    confidence_half_width,
    msprt_lambda,
    percentile,
    sequential_update,
    share_difference,
)
from modelbay.engine.analytics.analytics import latency_bucket

ALPHA = 0.05
RUNS, LOOKS, PER_LOOK = 500, 20, 50  # 500 experiments, each looked at 20 times, 50 more ratings per arm between looks


def _simulate(p_control: float, p_treatment: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative 👍 counts per arm at each look: arrays of shape (RUNS, LOOKS)."""
    rng = np.random.default_rng(seed)
    control = rng.binomial(PER_LOOK, p_control, (RUNS, LOOKS)).cumsum(axis=1)
    treatment = rng.binomial(PER_LOOK, p_treatment, (RUNS, LOOKS)).cumsum(axis=1)
    return control, treatment


def _msprt_rejects(control: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """Whether each run's always-valid p-value fell below alpha at some look (the functions analyse() uses)."""
    n = PER_LOOK * np.arange(1, LOOKS + 1)
    p = np.ones(RUNS)
    low, high = np.full(RUNS, -np.inf), np.full(RUNS, np.inf)
    for look in range(LOOKS):
        d, v = share_difference(treatment[:, look], n[look], control[:, look], n[look])
        p, low, high = sequential_update(d, v, SHARE_MIXTURE_SD, ALPHA, p, low, high)
    return p < ALPHA


def _naive_rejects(control: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """Whether a pooled two-proportion z-test at 5% rejected at any look (the peeking mistake)."""
    n = PER_LOOK * np.arange(1, LOOKS + 1)
    pooled = (control + treatment) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    z = np.divide(treatment / n - control / n, se, out=np.zeros_like(se), where=se > 0)
    return (2 * sps.norm.sf(np.abs(z)) < ALPHA).any(axis=1)


def test_peeking_at_aa_experiments_keeps_the_msprt_false_positive_rate_at_alpha() -> None:
    control, treatment = _simulate(0.6, 0.6, seed=1)
    msprt = _msprt_rejects(control, treatment).mean()
    naive = _naive_rejects(control, treatment).mean()
    sampling_error = math.sqrt(ALPHA * (1 - ALPHA) / RUNS)
    assert msprt <= ALPHA + 2 * sampling_error
    # Twenty peeks at a fixed-sample test: the known inflation to about 20-25%, far above alpha.
    assert naive > ALPHA + 5 * sampling_error


def test_a_real_difference_is_detected() -> None:
    control, treatment = _simulate(0.5, 0.6, seed=2)
    assert _msprt_rejects(control, treatment).mean() > 0.8


def test_the_naive_z_test_matches_statsmodels() -> None:
    z, p = proportions_ztest([70, 60], [100, 100])
    pooled = 130 / 200
    mine = 2 * sps.norm.sf(abs(0.1 / math.sqrt(pooled * (1 - pooled) * 2 / 100)))
    assert mine == pytest.approx(p)


def test_lambda_is_the_normal_mixture_likelihood_ratio() -> None:
    d, v, tau = 0.07, 0.0009, 0.1
    null = sps.norm.pdf(d, 0, math.sqrt(v))
    mixed, _ = integrate.quad(lambda theta: sps.norm.pdf(d, theta, math.sqrt(v)) * sps.norm.pdf(theta, 0, tau),
                              -1, 1, points=[0, d])
    assert float(msprt_lambda(d, v, tau)) == pytest.approx(mixed / null, rel=1e-6)


def test_the_confidence_sequence_is_where_lambda_stays_below_one_over_alpha() -> None:
    d, v, tau = 0.03, 0.0004, 0.1
    half = float(confidence_half_width(v, tau, ALPHA))
    assert float(msprt_lambda(d, v, tau, theta0=d + half)) == pytest.approx(1 / ALPHA)
    assert float(msprt_lambda(d, v, tau, theta0=d - half * 0.99)) < 1 / ALPHA


def _thumbs(name: str, ups: int, downs: int, weight: float = 1.0, exposures: int | None = None, **more) -> Totals:
    return Totals(name, weight, exposures=exposures if exposures is not None else ups + downs,
                  answers=ups + downs, ups=ups, downs=downs, **more)


def test_figures_use_wilson_and_the_fixed_sample_test() -> None:
    result = analyse("thumbs_up", [_thumbs("a", 60, 40), _thumbs("b", 75, 25)])
    a, b = result.variants
    assert a.interval == wilson(60, 100) and b.value == 0.75
    comparison = result.comparisons[0]
    assert comparison.difference == pytest.approx(0.15)
    assert comparison.p_value == pytest.approx(proportions_ztest([75, 60], [100, 100])[1])
    assert comparison.interval.low < 0.15 < comparison.interval.high
    assert b.p_best > 0.9 and b.expected_loss < a.expected_loss
    assert a.p_best + b.p_best == pytest.approx(1.0)


def test_p_best_is_reproducible() -> None:
    totals = [_thumbs("a", 30, 20), _thumbs("b", 33, 17), _thumbs("c", 29, 21)]
    assert analyse("thumbs_up", totals).variants[1].p_best == analyse("thumbs_up", totals).variants[1].p_best


def test_the_sequential_p_value_only_falls_across_looks() -> None:
    state = None
    seen = []
    for ups in (30, 31, 32, 60, 61):  # the treatment's lead grows, then stays
        result = analyse("thumbs_up", [_thumbs("a", 50, 50), _thumbs("b", ups, 100 - ups)], state=state)
        state = result.state()
        seen.append(result.comparisons[0].sequential.p_value)
    assert seen == sorted(seen, reverse=True)
    assert result.comparisons[0].sequential.looks == 5


def test_may_stop_says_why() -> None:
    few = analyse("thumbs_up", [_thumbs("a", 3, 2), _thumbs("b", 4, 1)])
    assert not few.verdict.may_stop and "not enough data" in few.verdict.reason
    assert str(MIN_SAMPLE) in few.verdict.reason
    even = analyse("thumbs_up", [_thumbs("a", 100, 100), _thumbs("b", 104, 96)])
    assert not even.verdict.may_stop and "no difference shown yet" in even.verdict.reason
    clear = analyse("thumbs_up", [_thumbs("a", 100, 100), _thumbs("b", 170, 30)])
    assert clear.verdict.may_stop and clear.verdict.winner == "b" and "below its alpha" in clear.verdict.reason
    worse = analyse("thumbs_up", [_thumbs("a", 170, 30), _thumbs("b", 100, 100)])
    assert worse.verdict.winner == "a"


def test_a_breached_guardrail_stops_without_shipping() -> None:
    totals = [_thumbs("a", 100, 100), _thumbs("b", 170, 30, failures=40)]
    result = analyse("thumbs_up", totals, guardrails={"error_rate": 0.05})
    assert result.verdict.may_stop and result.verdict.winner is None
    assert "error rate" in result.verdict.reason and "without shipping" in result.verdict.reason


def test_a_skewed_split_is_a_sample_ratio_mismatch() -> None:
    skewed = analyse("thumbs_up", [_thumbs("a", 10, 10, exposures=600), _thumbs("b", 10, 10, exposures=400)])
    assert skewed.srm and not skewed.verdict.may_stop and "sample ratio mismatch" in skewed.verdict.reason
    assert skewed.srm_p == pytest.approx(sps.chisquare([600, 400], [500, 500]).pvalue)
    fine = analyse("thumbs_up", [_thumbs("a", 10, 10, exposures=590, weight=0.6),
                                 _thumbs("b", 10, 10, exposures=410, weight=0.4)])
    assert not fine.srm


def _timed(name: str, values: np.ndarray) -> Totals:
    buckets: dict[int, int] = {}
    for x in values:
        buckets[latency_bucket(x)] = buckets.get(latency_bucket(x), 0) + 1
    return Totals(name, 1.0, exposures=len(values), answers=len(values), ms_sum=float(values.sum()),
                  ms_sq_sum=float((values ** 2).sum()), p95_ms=percentile(list(buckets.items()), 0.95))


def test_response_time_uses_welch() -> None:
    rng = np.random.default_rng(3)
    fast, slow = rng.normal(800, 100, 200), rng.normal(1000, 300, 150)
    result = analyse("response_time", [_timed("a", slow), _timed("b", fast)])
    comparison = result.comparisons[0]
    welch = sps.ttest_ind(fast, slow, equal_var=False)
    assert comparison.p_value == pytest.approx(welch.pvalue, rel=1e-6)
    assert comparison.difference == pytest.approx(fast.mean() - slow.mean())
    assert result.variants[0].interval.low < slow.mean() < result.variants[0].interval.high
    assert result.verdict.may_stop and result.verdict.winner == "b"  # lower is better
    assert result.variants[1].totals.p95_ms == pytest.approx(np.percentile(fast, 95), rel=0.05)


def test_analyse_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        analyse("clicks", [_thumbs("a", 1, 1), _thumbs("b", 1, 1)])
    with pytest.raises(ValueError):
        analyse("thumbs_up", [_thumbs("a", 1, 1)])


def test_a_tie_reads_as_level_and_a_clear_lead_as_ahead() -> None:
    tied = analyse("thumbs_up", [_thumbs("a", 30, 30), _thumbs("b", 30, 30)]).verdict.reason
    assert "all variants are level (P(best) " in tied and "ahead" not in tied
    three = analyse("thumbs_up", [_thumbs("a", 30, 30), _thumbs("b", 30, 30), _thumbs("c", 20, 40)]).verdict.reason
    assert "a and b are level" in three and "ahead" not in three
    leading = analyse("thumbs_up", [_thumbs("a", 50, 50), _thumbs("b", 60, 40)]).verdict.reason
    assert "no difference shown yet" in leading and "b is ahead with P(best) 9" in leading


def test_a_significantly_worse_treatment_among_three_is_named_while_the_other_is_undecided() -> None:
    result = analyse("thumbs_up", [_thumbs("a", 100, 100), _thumbs("b", 101, 99), _thumbs("c", 30, 170)])
    b, c = result.comparisons
    assert c.significant and not b.significant
    verdict = result.verdict
    assert not verdict.may_stop and verdict.winner is None and "no difference shown yet" not in verdict.reason
    assert verdict.reason.startswith("c is significantly worse than the control a on 👍 share")
    assert "may be dropped" in verdict.reason and "b is undecided" in verdict.reason
    assert f"b {b.sequential.p_value:.3g}" in verdict.reason and f"c {c.sequential.p_value:.3g}" in verdict.reason


def test_a_guardrail_the_control_breaches_is_reported() -> None:
    totals = [_thumbs("a", 100, 100, failures=40), _thumbs("b", 104, 96)]
    result = analyse("thumbs_up", totals, guardrails={"error_rate": 0.05})
    assert result.variants[0].breaches and not result.variants[1].breaches
    assert not result.verdict.may_stop and "no difference shown yet" in result.verdict.reason
    assert "the control a's error rate" in result.verdict.reason and "guardrail" in result.verdict.reason
    both = analyse("thumbs_up", [_thumbs("a", 100, 100, failures=40), _thumbs("b", 104, 96, failures=40)],
                   guardrails={"error_rate": 0.05})
    assert both.verdict.may_stop and both.verdict.reason.startswith("b's error rate")
    assert "the control a's error rate" in both.verdict.reason
