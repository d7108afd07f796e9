"""Recommendation ranking without services: better evidence ranks first, with the reason naming it."""

from __future__ import annotations

from modelbay.engine.analytics.recommend import Evidence, rank, reason


def _e(name: str, **kw: object) -> Evidence:
    return Evidence(model=name, display_name=name.title(), category="code", installed=True, **kw)  # type: ignore[arg-type]


def test_a_well_rated_model_beats_a_lucky_few_ratings() -> None:
    ranked = rank([_e("lucky", answers=3, ups=3), _e("proven", answers=80, ups=70, downs=10), _e("unused")],
                  task="code")
    assert [s.model for s in ranked] == ["proven", "lucky", "unused"]
    assert ranked[0].reason.startswith("👍 88% of 80 rated code answers here")
    assert ranked[-1].score == 0 and ranked[-1].reason == "no answers, ratings or battles here yet"


def test_arena_speed_and_fit_count_and_are_said() -> None:
    fast = _e("fast", answers=10, ups=5, downs=5, tokens_per_s=55.0, speed_source="answers", fit="int8",
              fit_known=True)
    strong = _e("strong", answers=10, ups=5, downs=5, arena_strength=1150.0, arena_low=1100.0, arena_battles=120)
    plain = _e("plain", answers=10, ups=5, downs=5)
    ranked = rank([plain, fast, strong])
    assert [s.model for s in ranked] == ["strong", "fast", "plain"]
    assert "arena 1,150 (lower bound 1,100, 120 battles)" in ranked[0].reason
    assert "55 tokens/s measured" in ranked[1].reason and "fits at int8" in ranked[1].reason


def test_fits_only_leaves_out_what_does_not_fit() -> None:
    big = _e("big", answers=50, ups=50, fit=None, fit_known=True)
    small = _e("small", answers=1, ups=1, fit="4bit", fit_known=True)
    assert [s.model for s in rank([big, small], fits_only=True)] == ["small"]
    assert "does not fit this hardware" in reason(big)


def test_a_report_speed_is_named_as_such() -> None:
    text = reason(_e("variant", tokens_per_s=41.6, speed_source="optimization report"))
    assert text == "42 tokens/s measured (optimization report)"


def test_counts_agree_with_their_nouns_and_negative_figures_keep_their_minus() -> None:
    assert reason(_e("one", answers=1, ups=1), task="code").startswith("👍 100% of 1 rated code answer here")
    assert reason(_e("unrated", answers=1)).startswith("1 answer here, none rated yet")
    weak = reason(_e("weak", arena_strength=-133.0, arena_low=-250.0, arena_battles=1))
    assert "arena −133 (lower bound −250, 1 battle)" in weak


def test_fits_only_keeps_a_model_of_unknown_size_and_says_nothing_of_its_fit() -> None:
    unknown = _e("unknown", answers=5, ups=5)  # no parameter count and no size: fit_known False
    stored = _e("stored", answers=1, ups=1, fit="as stored", fit_known=True)
    assert [s.model for s in rank([unknown, stored], fits_only=True)] == ["unknown", "stored"]
    assert "fit" not in reason(unknown) and "fits as stored" in reason(stored)
