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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from modelbay.engine.analytics.figures import figure, png

__all__ = ["OUTCOMES", "BattleCounts", "Fit", "Leaderboard", "Standing", "battle_counts", "chart", "fit",
           "leaderboard", "rating", "standings_text"]

OUTCOMES = ("a", "b", "tie", "both_bad")  # a vote's outcome codes 0..3
BASE = 1000.0  # the scale's mean
SCALE = 400.0 / math.log(10.0)  # rating points per unit of theta (natural log odds)
RIDGE = 1e-6  # weak L2 on theta: finite strengths for a model that never lost; negligible otherwise
_MAX_STEP = 3.0  # largest change of any theta in one Newton step (damps the first steps of separated data)
_TOLERANCE = 1e-9
_MAX_ITERATIONS = 100


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
    """One model's line on a leaderboard (strength and interval on the rating scale)."""

    version_id: int
    model: str
    label: str
    strength: float
    low: float
    high: float
    rank: int
    battles: int  # decisive and tied votes it took part in
    wins: int
    ties: int
    win_fraction: float  # (wins + ties / 2) / battles
    both_bad: int  # "both bad" votes it took part in, kept out of the fit


@dataclass(frozen=True)
class Leaderboard:
    """A category's board (None: every category), best first; `votes` counts every vote, both-bad included."""

    category: str | None
    standings: list[Standing]
    votes: int
    rounds: int


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
    ranks = result.rank
    standings = []
    for k, version_id in enumerate(counts.models):
        model, label = names.get(version_id, (str(version_id), str(version_id)))
        standings.append(Standing(
            version_id, model, label, float(result.strength[k]), float(result.low[k]), float(result.high[k]),
            int(ranks[k]), int(battles[k]), int(wins[k]), int(ties[k]),
            float((wins[k] + ties[k] / 2) / battles[k]) if battles[k] else 0.0, int(bad[k])))
    standings.sort(key=lambda s: (s.rank, -s.strength))
    return Leaderboard(category, standings, counts.votes, rounds)


def standings_text(board: Leaderboard) -> list[list[str]]:
    """The board as table rows: rank, model, strength (−low/+high), battles, win %, both bad."""
    return [[str(s.rank), s.label, f"{s.strength:.0f} (−{s.strength - s.low:.0f}/+{s.high - s.strength:.0f})",
             f"{s.battles:,}", f"{s.win_fraction:.0%}", f"{s.both_bad:,}"] for s in board.standings]


def chart(board: Leaderboard) -> bytes:
    """The board as a PNG: each model's strength with its 95% interval as a horizontal bar, best on top."""
    standings = board.standings
    fig = figure(7.0, 1.2 + 0.45 * max(1, len(standings)))
    axes = fig.add_subplot(1, 1, 1)
    y = np.arange(len(standings))[::-1]
    strengths = np.array([s.strength for s in standings])
    errors = np.array([[s.strength - s.low for s in standings], [s.high - s.strength for s in standings]])
    axes.errorbar(strengths, y, xerr=errors, fmt="o", color="#1f6feb", ecolor="#8c959f", capsize=4)
    axes.set_yticks(y, [f"{s.rank}. {s.label}" for s in standings])
    axes.axvline(BASE, color="#d0d7de", linewidth=1, zorder=0)
    axes.set_xlabel(f"strength (Bradley-Terry, 95% interval from {board.rounds} bootstrap rounds)")
    title = "Arena leaderboard" + (f": {board.category}" if board.category else "")
    axes.set_title(f"{title} ({board.votes:,} votes)")
    fig.tight_layout()
    return png(fig)
