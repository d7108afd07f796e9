"""The statistics of an A/B experiment, from each variant's running totals (no raw rows are read).

Per variant: 👍 share with a Wilson 95% interval (or mean response time with a t interval); against the control
(the first variant): the difference with a fixed-sample 95% interval and test (statsmodels' Newcomb interval and
two-proportion z-test; Welch's t for response times), Bayesian P(best) and expected loss (Beta(1 + 👍, 1 + 👎)
posteriors, Monte Carlo with a fixed seed; normal posteriors of the means for response time), and a sequential
test valid at any look: the mixture sequential probability ratio test (mSPRT) with a normal mixture N(0, tau^2)
over the difference, from Johari, Koomen, Pekelis and Walsh, "Peeking at A/B Tests: Why it matters, and what to
do about it" (KDD 2017), and Johari, Pekelis and Walsh, "Always Valid Inference" (arXiv:1512.04922). For an
estimate d with variance V (plug-in, from the totals):

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 V (V + tau^2)))

Lambda is (asymptotically) a martingale under no difference, so by Ville's inequality P(ever Lambda >= 1/alpha) <=
alpha: the always-valid p-value is the running minimum of 1/Lambda over the looks, kept between looks, and the
matching confidence sequence {theta : Lambda(theta) < 1/alpha} is d +- sqrt(V (V + tau^2) / tau^2 *
(2 log(1/alpha) + log((V + tau^2) / V))), intersected over the looks. With more than one treatment each comparison
with the control gets alpha / (variants - 1) (Bonferroni). Sample ratio mismatch: scipy's chi-square test of the
exposures against the split, a warning below p = 0.001.

The unit is the rating (👍 share) or the answer (response time), not the person: a person's ratings are not
independent of each other, which the intervals ignore (the usual simplification of per-event metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelbay.engine.analytics.analytics import Interval, bucket_bounds, wilson

__all__ = [
    "METRICS",
    "MIN_SAMPLE",
    "Analysis",
    "Comparison",
    "Sequential",
    "Totals",
    "VariantFigures",
    "Verdict",
    "analyse",
    "confidence_half_width",
    "mean_difference",
    "msprt_lambda",
    "percentile",
    "sequential_update",
    "share_difference",
]

THUMBS_UP = "thumbs_up"
RESPONSE_TIME = "response_time"
METRICS = (THUMBS_UP, RESPONSE_TIME)
MIN_SAMPLE = 20  # ratings (👍 share) or timed answers (response time) per variant before any test is read
MIN_GUARD = 20  # answers per variant before a guardrail can be judged breached
SHARE_MIXTURE_SD = 0.10  # tau of the mixture over a 👍-share difference: effects of about 10 points
TIME_MIXTURE_FRACTION = 0.20  # tau over a response-time difference: 20% of the control's mean at the first look
SRM_P = 0.001  # a split this unlikely under the configured weights is a sample ratio mismatch
POSTERIOR_DRAWS = 20_000
POSTERIOR_SEED = 16  # fixed: the same totals always give the same P(best)
LEVEL = 0.10  # variants whose P(best) is within this of the leader's are level, not behind (ties read ~50/50)


@dataclass(frozen=True)
class Totals:
    """One variant's running totals (what experiment_variants keeps) and its p95 response time from the histogram."""

    name: str
    weight: float
    exposures: int = 0
    answers: int = 0  # answered or failed (a stopped answer is not counted)
    failures: int = 0
    ups: int = 0
    downs: int = 0
    ms_sum: float = 0.0  # response times of the answers that did not fail
    ms_sq_sum: float = 0.0
    p95_ms: float | None = None

    @property
    def ratings(self) -> int:
        """👍 plus 👎."""
        return self.ups + self.downs

    @property
    def timed(self) -> int:
        """Answers with a response time (those that did not fail)."""
        return self.answers - self.failures

    @property
    def share(self) -> float | None:
        """The 👍 share of ratings."""
        return self.ups / self.ratings if self.ratings else None

    @property
    def mean_ms(self) -> float | None:
        """Mean response time (ms)."""
        return self.ms_sum / self.timed if self.timed else None

    @property
    def var_ms(self) -> float | None:
        """Sample variance of response times (ms^2), from the sum and the sum of squares."""
        n = self.timed
        if n < 2:
            return None
        return max(0.0, (self.ms_sq_sum - self.ms_sum * self.ms_sum / n) / (n - 1))

    @property
    def error_rate(self) -> float | None:
        """Failed answers over answers."""
        return self.failures / self.answers if self.answers else None


@dataclass(frozen=True)
class Sequential:
    """The mSPRT state of one comparison: always-valid p-value and confidence sequence, both running over looks."""

    p_value: float = 1.0
    low: float = -math.inf
    high: float = math.inf
    looks: int = 0
    tau: float | None = None  # fixed at the first look (response time: from the control's mean then)

    def to_dict(self) -> dict[str, Any]:
        """JSON for experiments.details (infinite bounds as None)."""
        return {"p": self.p_value, "low": _finite(self.low), "high": _finite(self.high), "looks": self.looks,
                "tau": self.tau}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Sequential:
        """The state stored by to_dict (a fresh one for None)."""
        if not data:
            return cls()
        low, high = data.get("low"), data.get("high")
        return cls(float(data.get("p", 1.0)), -math.inf if low is None else float(low),
                   math.inf if high is None else float(high), int(data.get("looks", 0)), data.get("tau"))


@dataclass(frozen=True)
class Comparison:
    """A treatment against the control: difference (treatment minus control), fixed-sample and sequential results."""

    variant: str
    control: str
    difference: float | None
    interval: Interval | None  # fixed-sample 95%: right only if this is the one and only look
    p_value: float | None  # fixed-sample test: same caveat
    sequential: Sequential
    alpha: float  # the share of alpha this comparison gets (Bonferroni)

    @property
    def significant(self) -> bool:
        """Whether the always-valid p-value is below this comparison's alpha."""
        return self.sequential.p_value < self.alpha


@dataclass(frozen=True)
class VariantFigures:
    """One variant's figures: totals, its metric with a 95% interval, P(best), expected loss, guardrail breaches."""

    totals: Totals
    value: float | None  # 👍 share, or mean response time in ms
    interval: Interval | None
    p_best: float | None
    expected_loss: float | None  # share points (0..1) or ms given up by choosing it, if another is better
    breaches: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Whether the experiment may stop now, why, and the variant to ship if one has won."""

    may_stop: bool
    reason: str
    winner: str | None = None


@dataclass(frozen=True)
class Analysis:
    """Everything the status card says, computed from totals."""

    metric: str
    alpha: float
    variants: list[VariantFigures]
    comparisons: list[Comparison]
    srm_p: float | None
    verdict: Verdict
    guardrails: dict[str, float] = field(default_factory=dict)

    @property
    def srm(self) -> bool:
        """Whether the exposures are off the split (sample ratio mismatch)."""
        return self.srm_p is not None and self.srm_p < SRM_P

    def state(self) -> dict[str, Any]:
        """The sequential state to keep in experiments.details for the next look."""
        return {"sequential": {c.variant: c.sequential.to_dict() for c in self.comparisons}}


# -- the sequential test (vectorised: the simulations in the tests use the same functions) -------------------------

def msprt_lambda(estimate: Any, variance: Any, tau: Any, theta0: float = 0.0) -> Any:
    """The normal-mixture mSPRT statistic for H0: theta = theta0 (Johari et al. 2017, eq. for the normal mixture).

    Arrays broadcast; a zero variance gives 1 (no evidence).
    """
    v = np.asarray(variance, dtype=float)
    t2 = np.asarray(tau, dtype=float) ** 2
    d = np.asarray(estimate, dtype=float) - theta0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lambda = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
    return np.where(v > 0, np.exp(np.minimum(log_lambda, 700.0)), 1.0)


def confidence_half_width(variance: Any, tau: Any, alpha: float) -> Any:
    """Half width of the mSPRT confidence sequence {theta : Lambda(theta) < 1/alpha} around the estimate."""
    v = np.asarray(variance, dtype=float)
    t2 = np.asarray(tau, dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + np.log((v + t2) / v)))
    return np.where(v > 0, half, np.inf)


def sequential_update(estimate: Any, variance: Any, tau: Any, alpha: float, p_before: Any = 1.0,
                      low_before: Any = -np.inf, high_before: Any = np.inf) -> tuple[Any, Any, Any]:
    """One look: (always-valid p-value, low, high) = running min of 1/Lambda and the intersected sequence.

    An empty intersection (possible with plug-in variances) falls back to this look's interval.
    """
    p = np.minimum(p_before, 1.0 / msprt_lambda(estimate, variance, tau))
    half = confidence_half_width(variance, tau, alpha)
    now_low, now_high = np.asarray(estimate) - half, np.asarray(estimate) + half
    low, high = np.maximum(low_before, now_low), np.minimum(high_before, now_high)
    empty = low > high
    return p, np.where(empty, now_low, low), np.where(empty, now_high, high)


def share_difference(ups: Any, n: Any, ups0: Any, n0: Any) -> tuple[Any, Any]:
    """(difference of 👍 shares, its variance): shares from the counts; the variance uses (ups + 1) / (n + 2) so a
    share of 0 or 1 does not claim zero variance."""
    ups, n, ups0, n0 = (np.asarray(x, dtype=float) for x in (ups, n, ups0, n0))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = ups / n - ups0 / n0
        p, p0 = (ups + 1) / (n + 2), (ups0 + 1) / (n0 + 2)
        v = p * (1 - p) / n + p0 * (1 - p0) / n0
    return d, v


def mean_difference(mean: float, var: float, n: int, mean0: float, var0: float, n0: int) -> tuple[float, float]:
    """(difference of means, its variance var/n + var0/n0): Welch's unpooled variance."""
    return mean - mean0, var / n + var0 / n0


# -- percentiles from the latency histogram ------------------------------------------------------------------------

def percentile(buckets: list[tuple[int, int]], q: float) -> float | None:
    """A quantile of response times (ms) from (bucket, count) rows (analytics.latency_bucket), interpolated
    geometrically inside its bucket, as /analytics does."""
    rows = sorted(buckets)
    total = sum(n for _, n in rows)
    if total == 0:
        return None
    upto = 0
    for bucket, n in rows:
        upto += n
        if upto >= q * total and n:
            low, high = bucket_bounds(bucket)
            inside = (q * total - (upto - n)) / n
            return low * (high / low) ** min(max(inside, 0.0), 1.0)
    return None


# -- the analysis --------------------------------------------------------------------------------------------------

def analyse(metric: str, totals: list[Totals], *, alpha: float = 0.05, guardrails: dict[str, float] | None = None,
            state: dict[str, Any] | None = None) -> Analysis:
    """Figures, comparisons with the control (totals[0]), SRM check and the may-stop verdict.

    `state` is what the previous look's `Analysis.state()` returned (experiments.details); the new state is in the
    result. O(variants) apart from the fixed-size posterior draws.

    Raises:
        ValueError: an unknown metric, or fewer than two variants.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    if len(totals) < 2:
        raise ValueError("an experiment has at least two variants")
    guardrails = {k: float(v) for k, v in (guardrails or {}).items() if v is not None}
    before = (state or {}).get("sequential", {})
    share_alpha = alpha / (len(totals) - 1)
    figures = _figures(metric, totals, guardrails)
    control = totals[0]
    comparisons = [_compare(metric, t, control, share_alpha, Sequential.from_dict(before.get(t.name)))
                   for t in totals[1:]]
    srm_p = _srm(totals)
    analysis = Analysis(metric, alpha, figures, comparisons, srm_p, Verdict(False, ""), guardrails)
    return Analysis(metric, alpha, figures, comparisons, srm_p, _verdict(analysis), guardrails)


def _figures(metric: str, totals: list[Totals], guardrails: dict[str, float]) -> list[VariantFigures]:
    rng = np.random.default_rng(POSTERIOR_SEED)
    if metric == THUMBS_UP:
        draws = np.stack([rng.beta(1 + t.ups, 1 + t.downs, POSTERIOR_DRAWS) for t in totals], axis=1)
        best = draws.argmax(axis=1)
        loss = draws.max(axis=1, keepdims=True) - draws
        known = [t.ratings > 0 for t in totals]  # a prior alone says nothing about which is best
    else:
        known = [t.timed >= 2 and t.var_ms > 0 for t in totals]
        if all(known):
            draws = np.stack([rng.normal(t.mean_ms, math.sqrt(t.var_ms / t.timed), POSTERIOR_DRAWS) for t in totals],
                             axis=1)
            best = draws.argmin(axis=1)
            loss = draws - draws.min(axis=1, keepdims=True)
    figures = []
    for i, t in enumerate(totals):
        if metric == THUMBS_UP:
            value, interval = t.share, (wilson(t.ups, t.ratings) if t.ratings else None)
        else:
            value, interval = t.mean_ms, _t_interval(t)
        p_best = loss_i = None
        if all(known):
            p_best, loss_i = float(np.mean(best == i)), float(loss[:, i].mean())
        figures.append(VariantFigures(t, value, interval, p_best, loss_i, _breaches(t, guardrails)))
    return figures


def _t_interval(t: Totals) -> Interval | None:
    from scipy import stats as sps  # scipy.stats and statsmodels load when a status is read, not at start-up

    if t.timed < 2:
        return None
    half = sps.t.ppf(0.975, t.timed - 1) * math.sqrt(t.var_ms / t.timed)
    return Interval(t.mean_ms - half, t.mean_ms + half)


def _breaches(t: Totals, guardrails: dict[str, float]) -> tuple[str, ...]:
    found = []
    limit = guardrails.get("p95_ms")
    if limit is not None and t.timed >= MIN_GUARD and t.p95_ms is not None and t.p95_ms > limit:
        found.append(f"p95 response time {t.p95_ms:,.0f} ms is over the {limit:,.0f} ms guardrail")
    limit = guardrails.get("error_rate")
    if limit is not None and t.answers >= MIN_GUARD and t.error_rate > limit:
        found.append(f"error rate {t.error_rate:.1%} is over the {limit:.1%} guardrail")
    return tuple(found)


def _compare(metric: str, t: Totals, control: Totals, alpha: float, before: Sequential) -> Comparison:
    from scipy import stats as sps
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    if metric == THUMBS_UP:
        if t.ratings == 0 or control.ratings == 0:
            return Comparison(t.name, control.name, None, None, None, before, alpha)
        d, v = (float(x) for x in share_difference(t.ups, t.ratings, control.ups, control.ratings))
        low, high = confint_proportions_2indep(t.ups, t.ratings, control.ups, control.ratings, compare="diff")
        if t.ups + control.ups in (0, t.ratings + control.ratings):  # all 👍 or all 👎: the z statistic is undefined
            p_fixed = 1.0
        else:
            p_fixed = float(proportions_ztest([t.ups, control.ups], [t.ratings, control.ratings])[1])
        interval = Interval(float(low), float(high))
        enough = min(t.ratings, control.ratings) >= MIN_SAMPLE
        tau = before.tau or SHARE_MIXTURE_SD
    else:
        if t.timed < 2 or control.timed < 2:
            return Comparison(t.name, control.name, None, None, None, before, alpha)
        d, v = mean_difference(t.mean_ms, t.var_ms, t.timed, control.mean_ms, control.var_ms, control.timed)
        result = sps.ttest_ind_from_stats(t.mean_ms, math.sqrt(t.var_ms), t.timed, control.mean_ms,
                                          math.sqrt(control.var_ms), control.timed, equal_var=False)
        p_fixed = float(result.pvalue) if math.isfinite(result.pvalue) else 1.0
        df = _welch_df(t, control)
        half = sps.t.ppf(0.975, df) * math.sqrt(v) if df > 0 else math.inf
        interval = Interval(d - half, d + half)
        enough = min(t.timed, control.timed) >= MIN_SAMPLE
        tau = before.tau or max(TIME_MIXTURE_FRACTION * control.mean_ms, 1.0)
    sequential = before
    if enough and v > 0:
        p, low_s, high_s = sequential_update(d, v, tau, alpha, before.p_value, before.low, before.high)
        sequential = Sequential(float(p), float(low_s), float(high_s), before.looks + 1, float(tau))
    return Comparison(t.name, control.name, d, interval, p_fixed, sequential, alpha)


def _welch_df(t: Totals, c: Totals) -> float:
    a, b = t.var_ms / t.timed, c.var_ms / c.timed
    denominator = a * a / (t.timed - 1) + b * b / (c.timed - 1)
    return (a + b) ** 2 / denominator if denominator > 0 else 0.0


def _srm(totals: list[Totals]) -> float | None:
    """p-value of the chi-square goodness-of-fit of exposures to the split (None below 5 expected per variant)."""
    from scipy import stats as sps

    observed = np.array([t.exposures for t in totals], dtype=float)
    weights = np.array([t.weight for t in totals], dtype=float)
    expected = observed.sum() * weights / weights.sum()
    if observed.sum() == 0 or expected.min() < 5:
        return None
    return float(sps.chisquare(observed, expected).pvalue)


def _verdict(a: Analysis) -> Verdict:
    names = [f.totals.name for f in a.variants]
    by_name = {f.totals.name: f for f in a.variants}
    if a.srm:
        return Verdict(False, f"the exposures are off the split (sample ratio mismatch, p = {a.srm_p:.1g}), so "
                              "assignment or logging is broken and no figure here can be trusted; find the cause "
                              "first")
    better = [c for c in a.comparisons if c.significant and _improves(a.metric, c.difference)]
    worse = [c for c in a.comparisons if c.significant and not _improves(a.metric, c.difference)]
    what = "👍 share" if a.metric == THUMBS_UP else "response time"
    p_text = ", ".join(f"{c.variant} {c.sequential.p_value:.3g}" for c in a.comparisons)
    winner = None
    if better:
        winner = max(better, key=lambda c: by_name[c.variant].p_best or 0.0).variant
        lead = next(c for c in better if c.variant == winner)
    elif len(worse) == len(a.comparisons):
        winner, lead = names[0], worse[0]
    if winner is not None:
        breaches = by_name[winner].breaches
        evidence = (f"the always-valid p-value ({lead.sequential.p_value:.3g}) is below its alpha "
                    f"({lead.alpha:.3g}), valid however often you looked")
        if breaches:
            return Verdict(True, f"{winner} has the better {what} ({evidence}), but its {breaches[0]}: stop without "
                                 f"shipping it")
        kept = " and the guardrails hold" if a.guardrails else ""
        return Verdict(True, f"{winner} has the better {what}: {evidence}{kept}", winner)
    control = a.variants[0]
    # A guardrail the control breaches too is worth saying, but it tells nothing against the treatments.
    control_note = (f"; note that the control {control.totals.name}'s {control.breaches[0]} too, so the guardrail "
                    "is breached by what runs today as well" if control.breaches else "")
    broken = [f for f in a.variants[1:] if f.breaches]
    if broken:
        return Verdict(True, f"{broken[0].totals.name}'s {broken[0].breaches[0]}: stop it rather than wait for the "
                             f"{what} result{control_note}")
    alpha = a.comparisons[0].alpha
    sample = [(f.totals.name, f.totals.ratings if a.metric == THUMBS_UP else f.totals.timed) for f in a.variants]
    short = [(name, n) for name, n in sample if n < MIN_SAMPLE]
    unit = "ratings" if a.metric == THUMBS_UP else "answers"
    if worse:  # 3+ variants: some treatments are significantly worse, the others undecided
        dropped = [c.variant for c in worse]
        undecided = [c for c in a.comparisons if not c.significant]
        short_text = (f"; {_listed([f'{name} has {n} {unit}' for name, n in short])} of the {MIN_SAMPLE} needed"
                      if short else "")
        return Verdict(False, f"{_listed(dropped)} {'is' if len(dropped) == 1 else 'are'} significantly worse than "
                              f"the control {names[0]} on {what} (always-valid p-value "
                              f"{', '.join(f'{c.variant} {c.sequential.p_value:.3g}' for c in worse)}, below alpha "
                              f"{alpha:.3g}): {'it' if len(dropped) == 1 else 'they'} may be dropped; "
                              f"{_listed([c.variant for c in undecided])} "
                              f"{'is' if len(undecided) == 1 else 'are'} undecided (always-valid p-value "
                              f"{', '.join(f'{c.variant} {c.sequential.p_value:.3g}' for c in undecided)}, not "
                              f"below alpha){short_text}{control_note}. Keep it running for the undecided; looking "
                              "again does not spoil the test")
    if short:
        have = ", ".join(f"{name} has {n}" for name, n in short)
        return Verdict(False, f"not enough data yet: each variant needs at least {MIN_SAMPLE} {unit} ({have})"
                              f"{control_note}")
    chance = _standing(a)
    return Verdict(False, f"no difference shown yet: the always-valid p-value ({p_text}) is not below alpha "
                          f"({alpha:.3g}){chance}{control_note}. Keep it running; looking again does not spoil "
                          "the test")


def _listed(names: list[str]) -> str:
    """"b", "b and c", "b, c and d"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _standing(a: Analysis) -> str:
    """"; b is ahead with P(best) 81%", or "; a and b are level (P(best) a 51%, b 49%)" when none leads clearly."""
    ranked = sorted((f for f in a.variants if f.p_best is not None), key=lambda f: -(f.p_best or 0.0))
    if not ranked:
        return ""
    top = ranked[0].p_best or 0.0
    level = [f for f in a.variants if f.p_best is not None and top - f.p_best < LEVEL]  # in the variants' order
    if len(level) == 1:
        return f"; {ranked[0].totals.name} is ahead with P(best) {top:.0%}"
    names = [f.totals.name for f in level]
    together = f"{', '.join(names[:-1])} and {names[-1]}"
    chances = ", ".join(f"{f.totals.name} {f.p_best:.0%}" for f in level)
    return f"; {'all variants' if len(level) == len(a.variants) else together} are level (P(best) {chances})"


def _improves(metric: str, difference: float | None) -> bool:
    return difference is not None and (difference > 0 if metric == THUMBS_UP else difference < 0)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
