"""The arena's Bradley-Terry fit: it agrees with choix and with scipy on the raw likelihood, recovers known strengths
with bootstrap intervals that cover them, ignores the order of votes (an online Elo does not), keeps both-bad votes
out of the fit, and ranks by interval overlap."""

from __future__ import annotations

import math

import choix
import numpy as np
import pytest
from scipy.optimize import minimize

from modelbay.engine.analytics.leaderboard import (
    MIN_BATTLES,
    SCALE,
    BattleCounts,
    Fit,
    battle_counts,
    chart,
    fit,
    leaderboard,
    standings_text,
)


def _votes(truth: np.ndarray, n: int, rng: np.random.Generator, tie: float = 0.1, bad: float = 0.03):
    """Simulated votes from known natural-log strengths: random pairs, the winner drawn from Bradley-Terry."""
    m = truth.size
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    p = 1.0 / (1.0 + np.exp(truth[b] - truth[a]))
    u, kind = rng.random(n), rng.random(n)
    outcome = np.where(kind < bad, 3, np.where(kind < bad + tie, 2, np.where(u < p, 0, 1)))
    return a + 100, b + 100, outcome  # ids that are not indices


def _theta(result: Fit) -> np.ndarray:
    return (result.strength - 1000.0) / SCALE


def test_the_fit_agrees_with_choix_on_decisive_votes() -> None:
    rng = np.random.default_rng(7)
    truth = rng.normal(0, 0.8, 8)
    a, b, outcome = _votes(truth, 3000, rng, tie=0.0, bad=0.0)
    ours = _theta(fit(battle_counts(a, b, outcome), rounds=0))
    data = [(x - 100, y - 100) if o == 0 else (y - 100, x - 100) for x, y, o in zip(a, b, outcome, strict=True)]
    theirs = choix.opt_pairwise(truth.size, data, alpha=1e-6)  # the same weak ridge
    theirs -= theirs.mean()
    assert list(np.argsort(ours)) == list(np.argsort(theirs))
    assert np.abs(ours - theirs).max() < 1e-4


def test_the_fit_with_ties_is_the_maximum_of_the_raw_likelihood() -> None:
    """Ties as half a win and half a loss, checked against scipy's optimiser on the likelihood written per vote."""
    rng = np.random.default_rng(3)
    truth = rng.normal(0, 0.5, 5)
    a, b, outcome = _votes(truth, 800, rng, tie=0.25, bad=0.05)
    ours = _theta(fit(battle_counts(a, b, outcome), rounds=0))
    keep = outcome != 3
    ia, ib, o = a[keep] - 100, b[keep] - 100, outcome[keep]
    score = np.where(o == 0, 1.0, np.where(o == 1, 0.0, 0.5))

    def negative(theta: np.ndarray) -> float:
        d = theta[ia] - theta[ib]
        return -float(np.sum(score * -np.logaddexp(0, -d) + (1 - score) * -np.logaddexp(0, d)))

    found = minimize(negative, np.zeros(5), method="BFGS", options={"gtol": 1e-8}).x
    assert np.abs(ours - (found - found.mean())).max() < 1e-3


def test_known_strengths_are_recovered_in_order_with_intervals_that_cover_them() -> None:
    """200 simulated leaderboards: the intervals hold the true strengths at least 90% of the time."""
    rng = np.random.default_rng(2024)
    truth = np.array([-0.9, -0.4, 0.0, 0.5, 0.8])
    truth = truth - truth.mean()
    covered = total = in_order = 0
    for board in range(200):
        a, b, outcome = _votes(truth, 2000, rng, tie=0.0)  # ties that ignore strength would pull strengths in
        result = fit(battle_counts(a, b, outcome), rounds=100, seed=board)
        true_rating = 1000.0 + SCALE * truth
        covered += int(np.sum((result.low <= true_rating) & (true_rating <= result.high)))
        total += truth.size
        in_order += list(np.argsort(result.strength)) == list(np.argsort(truth))
    assert covered / total >= 0.90
    assert in_order >= 190  # strengths 0.3-0.5 apart with 2,000 votes: the order is almost always right


def test_the_order_of_votes_changes_nothing_unlike_an_online_elo() -> None:
    rng = np.random.default_rng(11)
    a, b, outcome = _votes(np.array([0.0, 0.3, 0.6, -0.2]), 1500, rng)
    shuffled = rng.permutation(a.size)
    first = fit(battle_counts(a, b, outcome), rounds=50, seed=1)
    again = fit(battle_counts(a[shuffled], b[shuffled], outcome[shuffled]), rounds=50, seed=1)
    assert np.array_equal(first.strength, again.strength) and np.array_equal(first.rounds, again.rounds)

    def elo(order: np.ndarray, k: float = 32.0) -> dict[int, float]:
        ratings = {int(m): 1000.0 for m in set(a.tolist()) | set(b.tolist())}
        for x, y, o in zip(a[order], b[order], outcome[order], strict=True):
            if o == 3:
                continue
            expected = 1.0 / (1.0 + 10 ** ((ratings[int(y)] - ratings[int(x)]) / 400))
            won = 1.0 if o == 0 else 0.0 if o == 1 else 0.5
            ratings[int(x)] += k * (won - expected)
            ratings[int(y)] -= k * (won - expected)
        return ratings

    assert elo(np.arange(a.size)) != elo(shuffled)


def test_both_bad_votes_stay_out_of_the_fit_and_are_reported_apart() -> None:
    a, b, outcome = [1, 1, 2, 1], [2, 3, 3, 3], ["a", "b", "tie", "a"]
    without = leaderboard(battle_counts(a, b, outcome), rounds=0)
    with_bad = leaderboard(battle_counts(a + [1, 1], b + [2, 3], outcome + ["both_bad", "both_bad"]), rounds=0)
    assert [s.strength for s in without.standings] == [s.strength for s in with_bad.standings]
    bad = {s.version_id: s.both_bad for s in with_bad.standings}
    assert bad == {1: 2, 2: 1, 3: 1} and with_bad.votes == 6 and without.votes == 4
    one = {s.version_id: s for s in with_bad.standings}[1]
    assert (one.battles, one.wins, one.ties, one.win_fraction) == (3, 2, 0, pytest.approx(2 / 3))


def test_rank_is_one_plus_the_models_whose_interval_is_wholly_above() -> None:
    low, high = np.array([1100.0, 1050.0, 1000.0, 900.0]), np.array([1200.0, 1120.0, 1060.0, 1040.0])
    result = Fit((1, 2, 3, 4), (low + high) / 2, np.empty((0, 4)), low, high)
    assert list(result.rank) == [1, 1, 2, 3]  # 3: below 1's lower bound 1100; 4: below 1's and 2's (1050)


def test_a_model_that_never_lost_keeps_a_finite_strength_and_the_board_draws() -> None:
    board = leaderboard(battle_counts([5, 5, 6], [6, 7, 7], ["a", "a", "tie"]), {5: ("m5", "Model Five")},
                        category="code", rounds=20)
    assert board.standings[0].label == "Model Five" and math.isfinite(board.standings[0].strength)
    assert standings_text(board)[0][:3] == ["–", "Model Five", "won all 2 (provisional)"]
    assert chart(board).startswith(b"\x89PNG")
    assert board.standings[-1].label == "7"  # no name given: its id


def _mixed(rng: np.random.Generator, n: int = 3000) -> tuple[list[int], list[int], list[int]]:
    """Votes among models 1, 2, 3 (strengths 1, 0, -1) with every pair both ways: all settled, ranks 1, 2, 3."""
    a, b, outcome = _votes(np.array([1.0, 0.0, -1.0]), n, rng, tie=0.1, bad=0.0)
    return list(a - 99), list(b - 99), list(outcome)


def test_one_vote_is_provisional_not_an_extreme_figure_with_a_zero_width_interval() -> None:
    board = leaderboard(battle_counts([1], [2], ["a"]), rounds=50)
    one, two = board.standings
    assert (one.rank, two.rank) == (None, None) and one.provisional and two.provisional
    assert (one.separated, two.separated) == ("won", "lost") and not one.settled
    assert one.high - one.low < 1e-6  # what the bootstrap gives (every resample is that vote): why it is not shown
    rows = standings_text(board)
    assert [r[:3] for r in rows] == [["–", "1", "won all 1 (provisional)"], ["–", "2", "lost all 1 (provisional)"]]
    assert not any("(−" in r[2] for r in rows) and board.groups == 2
    mixed = leaderboard(battle_counts([1, 1, 2], [2, 2, 1], ["a", "b", "tie"]), rounds=20)
    assert [r[2] for r in standings_text(mixed)] == ["provisional (3 battles)"] * 2 and mixed.groups == 1


def test_provisional_models_are_unranked_listed_last_and_nobody_is_ranked_against_them() -> None:
    a, b, outcome = _mixed(np.random.default_rng(5))
    before = {s.version_id: s for s in leaderboard(battle_counts(a, b, outcome), rounds=100).standings}
    # Model 9: 5 battles, 4 wins over the best model: a high figure and a bootstrap interval that means little.
    a += [9] * 5
    b += [1] * 5
    outcome += [0, 0, 0, 0, 1]
    board = leaderboard(battle_counts(a, b, outcome), rounds=100)
    settled = [s for s in board.standings if s.settled]
    assert [s.version_id for s in settled] == [1, 2, 3] and [s.rank for s in settled] == [1, 2, 3]
    nine = board.standings[-1]
    assert nine.version_id == 9 and nine.rank is None and nine.provisional and nine.separated is None
    assert standings_text(board)[-1][:3] == ["–", "9", "provisional (5 battles)"] and MIN_BATTLES > 5
    assert nine.low > settled[2].high  # ranked by overlap as if sure, it would push model 3 down to 4th
    for s in settled:  # anchored on the settled models: 9's run-off rounds do not widen their intervals
        width = before[s.version_id].high - before[s.version_id].low
        assert abs(s.strength - before[s.version_id].strength) < 1.0 and s.high - s.low < 1.5 * width


def test_a_model_that_won_every_battle_says_so_and_is_unranked_however_many_battles() -> None:
    a, b, outcome = _mixed(np.random.default_rng(8))
    a += [7] * 15 + [2] * 15
    b += [1] * 15 + [7] * 15
    outcome += [0] * 15 + [1] * 15  # model 7 beats 1 fifteen times and 2 fifteen times
    board = leaderboard(battle_counts(a, b, outcome), {7: ("champ", "Champ")}, rounds=50)
    champ = next(s for s in board.standings if s.version_id == 7)
    assert (champ.separated, champ.provisional, champ.rank, champ.interval) == ("won", False, None, "won all 30")
    assert board.standings[-1] is champ and board.groups == 2  # {7} never lost to the others' group
    assert [s.rank for s in board.standings[:3]] == [1, 2, 3]


def test_the_chart_draws_unranked_models_hollow_and_without_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelbay.engine.analytics import leaderboard as module

    drawn = []
    monkeypatch.setattr(module, "png", lambda fig: drawn.append(fig) or b"\x89PNG")
    a, b, outcome = _mixed(np.random.default_rng(1))
    a += [9] * 3 + [8] * 25
    b += [1] * 3 + [3] * 25
    outcome += [0, 1, 2] + [1] * 25  # 9: provisional; 8: lost all 25
    board = leaderboard(battle_counts(a, b, outcome), rounds=30)
    assert chart(board) == b"\x89PNG"
    axes = drawn[0].axes[0]
    assert len(axes.containers) == 1 and len(axes.containers[0].lines[2][0].get_segments()) == 3  # 3 bars
    hollow = [line for line in axes.lines if line.get_markerfacecolor() == "none"]
    assert sorted(line.get_marker() for line in hollow) == ["<", "o"]  # lost all: arrow at the left edge
    left, right = axes.get_xlim()
    assert all(left <= x <= right for line in hollow for x in line.get_xdata())
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert "–  9: provisional (3 battles)" in labels and "–  8: lost all 25" in labels and "1. 1" in labels


def test_counts_from_grouped_rows_match_counts_from_votes_and_bad_input_is_refused() -> None:
    rows = [(1, 2, "a", 3), (2, 1, "a", 1), (1, 2, "tie", 2), (2, 1, "both_bad", 1)]
    grouped = BattleCounts.from_rows(rows)
    expanded = battle_counts([r[0] for r in rows for _ in range(r[3])], [r[1] for r in rows for _ in range(r[3])],
                             [r[2] for r in rows for _ in range(r[3])])
    assert grouped.models == expanded.models == (1, 2)
    assert (grouped.wins_i.tolist(), grouped.wins_j.tolist(), grouped.ties.tolist(), grouped.both_bad.tolist()) == (
        [3], [1], [2], [1]) == (expanded.wins_i.tolist(), expanded.wins_j.tolist(), expanded.ties.tolist(),
                                expanded.both_bad.tolist())
    assert BattleCounts.from_rows([]).votes == 0 and leaderboard(BattleCounts.from_rows([])).standings == []
    with pytest.raises(ValueError, match="unknown outcome"):
        battle_counts([1], [2], ["draw"])
    with pytest.raises(ValueError, match="two different models"):
        battle_counts([1], [1], ["a"])
    with pytest.raises(ValueError, match="not in `models`"):
        battle_counts([1], [9], ["a"], models=[1, 2])
