"""The arena leaderboard: Bradley-Terry strengths by maximum likelihood, bootstrap intervals, ranks by overlap.

Method (Chiang et al. 2024, "Chatbot Arena: An Open Platform for Evaluating LLMs by Human Preference", and the
LMSYS leaderboard notebook; the model is Bradley & Terry 1952): model i beats model j with probability
sigma(theta_i - theta_j). A tie counts as half a win and half a loss; "both bad" is kept apart (no preference).
Battles are aggregated into count cells (unordered pair x outcome) and the log-likelihood of the counts is
maximised by Newton's method, with a very weak ridge (RIDGE) so that a model that never lost keeps a finite
strength and the strengths sum to zero. Strengths are reported on the LMSYS scale, 1000 + 400 * theta / ln 10, where
a 400-point gap means 10:1 odds. The 95% interval of each strength is the 2.5th and 97.5th percentile over bootstrap
rounds; a round resamples the battles with replacement, which for counts is one multinomial draw over the cells.
All rounds are fitted at once: the parameters are a (rounds x models) array and each Newton step solves the
rounds' (models x models) systems together. A model's rank is 1 + the number of models whose lower bound is above
its upper bound (LMSYS's rank by interval overlap).

Small samples: with a handful of votes the maximum-likelihood strength runs far out and the bootstrap interval
collapses (one vote: every resample is that same vote, so the interval has zero width). The fit stays as it is, but a
model with fewer than MIN_BATTLES counted battles is *provisional*: its interval is not shown as one, it takes no rank
and other models are not ranked against it; it is listed after the ranked models. A model that won (or lost) every
battle it fought is *separated*: its likelihood keeps rising as its strength runs off, so the figure is only where the
ridge stopped it; the board says "won all N" instead, and it is not ranked either. Whether the maximum-likelihood
strengths exist at all (Zermelo 1929, Ford 1957) is whether the graph "i beat j at least once" (a tie both ways) is
strongly connected; `Leaderboard.groups` counts its strongly connected components (1: every strength is determined
by the data; more: the gaps between groups rest on the ridge). Strengths are identified only up to a constant, so
the board puts the mean of the settled models at 1000 (in the fit and in each bootstrap round): a provisional
model's run-off in some rounds then moves only itself, not the settled models' intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from modelbay.engine.analytics.figures import figure, png
from modelbay.engine.units import number, plural

__all__ = ["MIN_BATTLES", "OUTCOMES", "BattleCounts", "Fit", "Leaderboard", "Standing", "battle_counts", "chart", "fit",
           "groups", "leaderboard", "rating", "standings_text"]

OUTCOMES = ("a", "b", "tie", "both_bad")  # a vote's outcome codes 0..3
BASE = 1000.0  # the scale's mean
SCALE = 400.0 / math.log(10.0)  # rating points per unit of theta (natural log odds)
RIDGE = 1e-6  # weak L2 on theta: finite strengths for a model that never lost; negligible otherwise
_MAX_STEP = 3.0  # largest change of any theta in one Newton step (damps the first steps of separated data)
_TOLERANCE = 1e-9
_MAX_ITERATIONS = 100
# Fewer counted battles than this and a model is provisional (unranked, no interval shown). At 20 battles near even
# odds the standard error of a strength is about 2/sqrt(20) = 0.45 natural-log units (78 points), so a 95% interval
# spans about ±150 points: wide, but a real interval. Below it a percentile bootstrap over so few votes is too
# discrete to trust (with one vote, or votes all one way, every resample is the same and the interval has no width).
MIN_BATTLES = 20


@dataclass(frozen=True)
class BattleCounts:
    """Votes aggregated by unordered pair: for pair p, models i[p] < j[p] (indices into `models`).

    `wins_i[p]`: votes for model i[p]; `wins_j[p]`: for model j[p]; `ties[p]`; `both_bad[p]`. All int arrays (P,).
    """

    models: tuple[int, ...]  # model version ids (or any labels), in index order
    i: np.ndarray
    j: np.ndarray
    wins_i: np.ndarray
    wins_j: np.ndarray
    ties: np.ndarray
    both_bad: np.ndarray

    @property
    def votes(self) -> int:
        """Every vote, both-bad included."""
        return int(self.wins_i.sum() + self.wins_j.sum() + self.ties.sum() + self.both_bad.sum())

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int, str, int]]) -> BattleCounts:
        """Counts from grouped rows (model A's id, model B's id, outcome, count), as a SQL GROUP BY returns them.

        Raises:
            ValueError: an outcome is not one of OUTCOMES.
        """
        rows = list(rows)
        if not rows:
            return battle_counts([], [], [])
        a, b, outcome, count = zip(*rows, strict=True)
        return battle_counts(a, b, outcome, count)


def battle_counts(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray,
                  outcome: Sequence[str | int] | np.ndarray, count: Sequence[int] | np.ndarray | None = None,
                  models: Sequence[int] | None = None) -> BattleCounts:
    """Aggregate votes (model A, model B, outcome; optionally a count per row) into per-pair cells.

    `outcome` is OUTCOMES' codes ("a", "b", "tie", "both_bad") or their indices 0..3. `models` fixes the model
    order (default: the sorted ids seen). Order of the votes does not matter. Arrays of shape (N,).

    Raises:
        ValueError: an outcome is unknown, a battle pits a model against itself, or the lengths differ.
    """
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    raw = np.asarray(outcome).reshape(-1)
    if raw.dtype.kind in "US" or raw.dtype == object:
        codes = {name: k for k, name in enumerate(OUTCOMES)}
        try:
            out = np.fromiter((codes[str(o)] for o in raw), dtype=np.int64, count=raw.size)
        except KeyError as exc:
            raise ValueError(f"unknown outcome {exc.args[0]!r}; outcomes are {', '.join(OUTCOMES)}") from None
    else:
        out = raw.astype(np.int64)
        if out.size and (out.min() < 0 or out.max() > 3):
            raise ValueError("outcome codes are 0..3 (a, b, tie, both_bad)")
    n = np.ones(a.size, dtype=np.int64) if count is None else np.asarray(count, dtype=np.int64).reshape(-1)
    if not (a.size == b.size == out.size == n.size):
        raise ValueError("a, b, outcome and count must have the same length")
    if np.any(a == b):
        raise ValueError("a battle needs two different models")
    ids = np.array(sorted(set(a.tolist()) | set(b.tolist())) if models is None else list(models), dtype=np.int64)
    m = ids.size
    sorter = np.argsort(ids)
    ia, ib = (sorter[np.searchsorted(ids, x, sorter=sorter).clip(0, max(m - 1, 0))] for x in (a, b))
    if m and (np.any(ids[ia] != a) or np.any(ids[ib] != b)):
        raise ValueError("a vote names a model that is not in `models`")
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    swapped = ia > ib  # A is the higher index: "a" wins belong to j
    # cells: 0 low index wins, 1 high index wins, 2 tie, 3 both bad
    cell = np.where(out == 0, np.where(swapped, 1, 0), np.where(out == 1, np.where(swapped, 0, 1), out))
    flat = (lo * m + hi) * 4 + cell
    table = np.bincount(flat, weights=n, minlength=m * m * 4).reshape(m * m, 4).astype(np.int64)
    pair = np.flatnonzero(table.sum(axis=1))
    return BattleCounts(tuple(int(x) for x in ids), pair // m, pair % m, table[pair, 0], table[pair, 1],
                        table[pair, 2], table[pair, 3])


@dataclass(frozen=True)
class Fit:
    """Strengths on the rating scale: the fit to all votes, and the bootstrap rounds' (rounds x models) array."""

    models: tuple[int, ...]
    strength: np.ndarray  # (M,)
    rounds: np.ndarray  # (R, M); R = 0 without bootstrap
    low: np.ndarray  # (M,) 2.5th percentile (= strength without rounds)
    high: np.ndarray  # (M,) 97.5th percentile

    @property
    def rank(self) -> np.ndarray:
        """1 + the number of models whose lower bound is above this model's upper bound, (M,) ints."""
        return 1 + (self.low[None, :] > self.high[:, None]).sum(axis=1)


def rating(theta: np.ndarray) -> np.ndarray:
    """Natural-log strengths to the LMSYS rating scale (1000 + 400 log10 odds)."""
    return BASE + SCALE * theta


def _newton(pairs_i: np.ndarray, pairs_j: np.ndarray, wins: np.ndarray, totals: np.ndarray, m: int) -> np.ndarray:
    """Maximise the Bradley-Terry log-likelihood for R count sets at once; (R, P) wins of i and totals -> (R, M)."""
    r = wins.shape[0]
    theta = np.zeros((r, m))
    # Each pair's contribution to the Hessian is w * (e_i - e_j)(e_i - e_j)^T: its four entries, flattened.
    diag_i, diag_j = pairs_i * m + pairs_i, pairs_j * m + pairs_j
    off_ij, off_ji = pairs_i * m + pairs_j, pairs_j * m + pairs_i
    spread = np.zeros((pairs_i.size, m * m))
    rows = np.arange(pairs_i.size)
    spread[rows, diag_i] += 1
    spread[rows, diag_j] += 1
    spread[rows, off_ij] -= 1
    spread[rows, off_ji] -= 1
    incidence = np.zeros((pairs_i.size, m))
    incidence[rows, pairs_i] = 1
    incidence[rows, pairs_j] = -1
    ridge = RIDGE * np.eye(m)
    active = np.ones(r, dtype=bool)
    for _ in range(_MAX_ITERATIONS):
        t = theta[active]
        p = 1.0 / (1.0 + np.exp(t[:, pairs_j] - t[:, pairs_i]))  # P(i beats j), (R', P)
        residual = wins[active] - totals[active] * p
        gradient = residual @ incidence - RIDGE * t
        hessian = ((totals[active] * p * (1.0 - p)) @ spread).reshape(-1, m, m) + ridge
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, _MAX_STEP / np.maximum(biggest, 1e-300))
        theta[active] = t + step
        still = biggest[:, 0] > _TOLERANCE
        if not still.any():
            break
        index = np.flatnonzero(active)
        active[index[~still]] = False
    return theta - theta.mean(axis=1, keepdims=True)


def fit(counts: BattleCounts, rounds: int = 200, seed: int = 0) -> Fit:
    """Fit Bradley-Terry strengths to all votes and to `rounds` bootstrap resamples of the battles.

    Ties are half a win for each side; both-bad votes are left out. Strengths are on the rating scale (mean 1000).
    The same counts and seed give the same result whatever order the votes came in.

    Raises:
        ValueError: fewer than two models have a decisive or tied vote.
    """
    m = len(counts.models)
    pi, pj = counts.i, counts.j
    wins = counts.wins_i + 0.5 * counts.ties
    totals = (counts.wins_i + counts.wins_j + counts.ties).astype(float)
    if m < 2 or totals.sum() == 0:
        raise ValueError("a leaderboard needs votes between at least two models")
    theta = _newton(pi, pj, wins[None, :], totals[None, :], m)[0]
    strength = rating(theta)
    if rounds <= 0:
        return Fit(counts.models, strength, np.empty((0, m)), strength.copy(), strength.copy())
    # Resampling battles = one multinomial draw over the (pair, outcome) cells per round.
    cells = np.concatenate([counts.wins_i, counts.wins_j, counts.ties]).astype(float)
    n = int(cells.sum())
    draws = np.random.default_rng(seed).multinomial(n, cells / n, size=rounds)
    p = pi.size
    b_wins = draws[:, :p] + 0.5 * draws[:, 2 * p:]
    b_totals = (draws[:, :p] + draws[:, p:2 * p] + draws[:, 2 * p:]).astype(float)
    boot = rating(_newton(pi, pj, b_wins, b_totals, m))
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return Fit(counts.models, strength, boot, low, high)


@dataclass(frozen=True)
class Standing:
    """One model's line on a leaderboard (strength and interval on the rating scale).

    `rank` is None for a model that is not `settled` (provisional or separated): its maximum-likelihood figure is
    kept, but it is not ranked and nobody is ranked against it.
    """

    version_id: int
    model: str
    label: str
    strength: float
    low: float
    high: float
    rank: int | None
    battles: int  # decisive and tied votes it took part in
    wins: int
    ties: int
    win_fraction: float  # (wins + ties / 2) / battles
    both_bad: int  # "both bad" votes it took part in, kept out of the fit
    provisional: bool = False  # fewer than MIN_BATTLES battles
    separated: str | None = None  # "won" or "lost": it won (lost) every battle it fought, no tie

    @property
    def settled(self) -> bool:
        """Enough battles and not separated: its strength and interval mean what they say."""
        return not self.provisional and self.separated is None

    @property
    def interval(self) -> str:
        """The strength cell: "1,032 (−25/+27)", "provisional (3 battles)", "won all 3 (provisional)", "lost all 40"."""
        if self.separated is not None:
            return f"{self.separated} all {self.battles:,}" + (" (provisional)" if self.provisional else "")
        if self.provisional:
            return f"provisional ({plural(self.battles, 'battle')})"
        return f"{number(self.strength)} (−{number(self.strength - self.low)}/+{number(self.high - self.strength)})"


@dataclass(frozen=True)
class Leaderboard:
    """A category's board (None: every category), best first; `votes` counts every vote, both-bad included."""

    category: str | None
    standings: list[Standing]
    votes: int
    rounds: int
    groups: int = 1  # strongly connected groups of the "beat at least once" graph; > 1: some gaps rest on the ridge


def leaderboard(counts: BattleCounts, names: dict[int, tuple[str, str]] | None = None, *, category: str | None = None,
                rounds: int = 200, seed: int = 0) -> Leaderboard:
    """The leaderboard of counted votes: fit, intervals, rank, battles, wins and both-bad counts per model.

    `names` maps a model id to (model name, label); missing ids are shown as their number. An empty board (no
    standings) when fewer than two models have votes that count.
    """
    names = names or {}
    totals = counts.wins_i + counts.wins_j + counts.ties
    if len(counts.models) < 2 or totals.sum() == 0:
        return Leaderboard(category, [], counts.votes, 0)
    result = fit(counts, rounds, seed)
    m = len(counts.models)
    battles = np.bincount(counts.i, totals, m) + np.bincount(counts.j, totals, m)
    wins = np.bincount(counts.i, counts.wins_i, m) + np.bincount(counts.j, counts.wins_j, m)
    ties = np.bincount(counts.i, counts.ties, m) + np.bincount(counts.j, counts.ties, m)
    bad = np.bincount(counts.i, counts.both_bad, m) + np.bincount(counts.j, counts.both_bad, m)
    provisional = battles < MIN_BATTLES
    separated = np.where((battles > 0) & (wins == battles), "won",
                         np.where((battles > 0) & (wins == 0) & (ties == 0), "lost", ""))
    settled = ~provisional & (separated == "")
    result = _anchored(result, settled)
    # Rank among the settled only: 1 + the settled models whose lower bound is above this one's upper bound.
    above = (result.low[None, :] > result.high[:, None]) & settled[None, :]
    ranks = 1 + above.sum(axis=1)
    standings = []
    for k, version_id in enumerate(counts.models):
        model, label = names.get(version_id, (str(version_id), str(version_id)))
        standings.append(Standing(
            version_id, model, label, float(result.strength[k]), float(result.low[k]), float(result.high[k]),
            int(ranks[k]) if settled[k] else None, int(battles[k]), int(wins[k]), int(ties[k]),
            float((wins[k] + ties[k] / 2) / battles[k]) if battles[k] else 0.0, int(bad[k]),
            bool(provisional[k]), str(separated[k]) or None))
    # The ranked first (by rank, then strength); then the rest by win share and battles (their figures run off).
    standings.sort(key=lambda s: (0, s.rank, -s.strength) if s.settled else (1, -s.win_fraction, -s.battles))
    return Leaderboard(category, standings, counts.votes, rounds, groups(counts))


def _anchored(result: Fit, settled: np.ndarray) -> Fit:
    """Strengths are fixed only up to a constant; put the settled models' mean at BASE in the fit and in every round.

    `fit` centres all models, so in a bootstrap round where a provisional model's few votes all went one way its
    run-off strength would drag the mean, shifting every settled model and widening their intervals for nothing.
    """
    if not settled.any():
        return result
    strength = result.strength - (result.strength[settled].mean() - BASE)
    if result.rounds.shape[0] == 0:
        return Fit(result.models, strength, result.rounds, strength.copy(), strength.copy())
    rounds = result.rounds - (result.rounds[:, settled].mean(axis=1, keepdims=True) - BASE)
    low, high = np.percentile(rounds, [2.5, 97.5], axis=0)
    return Fit(result.models, strength, rounds, low, high)


def groups(counts: BattleCounts) -> int:
    """How many strongly connected groups the graph "i beat j at least once" (a tie: both ways) has, among models
    with a counted battle. The maximum-likelihood strengths exist, without the ridge, exactly when it is one (Ford
    1957, "Solution of a ranking problem from binary comparisons", condition on the comparison graph)."""
    beat_j, beat_i = counts.wins_i + counts.ties > 0, counts.wins_j + counts.ties > 0
    played = np.zeros(len(counts.models), dtype=bool)
    played[counts.i[beat_i | beat_j]] = played[counts.j[beat_i | beat_j]] = True
    if not played.any():
        return 0
    src = np.concatenate([counts.i[beat_j], counts.j[beat_i]])
    dst = np.concatenate([counts.j[beat_j], counts.i[beat_i]])
    m = len(counts.models)
    # scipy's sparse graphs only here: a board is read far less often than this module is imported (every process).
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(m, m)).tocsr()
    _, label = connected_components(graph, directed=True, connection="strong")
    return int(np.unique(label[played]).size)


def standings_text(board: Leaderboard) -> list[list[str]]:
    """The board as table rows: rank ("–" when unranked), model, strength (−low/+high) or why it has none
    ("provisional (3 battles)", "won all 3"), battles, win %, both bad."""
    return [[str(s.rank) if s.rank is not None else "–", s.label, s.interval, f"{s.battles:,}",
             f"{s.win_fraction:.0%}", f"{s.both_bad:,}"] for s in board.standings]


def chart(board: Leaderboard) -> bytes:
    """The board as a PNG, best on top: a settled model's strength with its 95% interval as a horizontal bar; a
    provisional one as a hollow circle without a bar; a separated one as a hollow arrow at the edge it runs to."""
    standings = board.standings
    fig = figure(7.0, 1.2 + 0.45 * max(1, len(standings)))
    axes = fig.add_subplot(1, 1, 1)
    y = np.arange(len(standings))[::-1]
    settled = np.array([s.settled for s in standings], dtype=bool)
    shown = [s for s in standings if s.separated is None]  # the figures that mean something set the axis
    left = min([s.low for s in shown if s.settled] + [s.strength for s in shown] + [BASE - 100.0])
    right = max([s.high for s in shown if s.settled] + [s.strength for s in shown] + [BASE + 100.0])
    pad = 0.08 * (right - left)
    left, right = left - pad, right + pad
    if settled.any():
        ranked = [s for s in standings if s.settled]
        errors = np.array([[s.strength - s.low for s in ranked], [s.high - s.strength for s in ranked]])
        axes.errorbar([s.strength for s in ranked], y[settled], xerr=errors, fmt="o", color="#1f6feb",
                      ecolor="#8c959f", capsize=4)
    for row, s in zip(y, standings, strict=True):
        if s.settled:
            continue
        x, marker = ((right, ">") if s.separated == "won" else (left, "<") if s.separated == "lost"
                     else (s.strength, "o"))
        axes.plot([x], [row], marker=marker, markersize=8, markerfacecolor="none", markeredgecolor="#8c959f",
                  linestyle="none", clip_on=False)
    axes.set_xlim(left, right)
    axes.set_yticks(y, [f"{s.rank}. {s.label}" if s.rank is not None else f"–  {s.label}: {s.interval}"
                        for s in standings])
    axes.axvline(BASE, color="#d0d7de", linewidth=1, zorder=0)
    axes.set_xlabel(f"strength (Bradley-Terry, 95% interval from {board.rounds} bootstrap rounds)\n"
                    f"hollow, no bar: unranked (under {MIN_BATTLES} battles, or won/lost every battle)")
    title = "Arena leaderboard" + (f": {board.category}" if board.category else "")
    axes.set_title(f"{title} ({plural(board.votes, 'vote')})")
    fig.tight_layout()
    return png(fig)
