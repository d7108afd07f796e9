"""/arena end to end with two tiny models answering in this process: a battle streams both answers, the vote buttons
come when both are done, a vote reveals the names, a second vote and votes past the daily cap are refused, and the
leaderboard fits the votes with intervals and a chart; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbay.bot import Actor, Dispatcher, Reply
from modelbay.config import Settings
from modelbay.engine.db.database import Database
from modelbay.runtime import Runtime
from tests.support.chat import installed

ANN, BOB = Actor("console", "ann"), Actor("console", "bob")


@pytest.fixture
def arena(settings: Settings, database_url: str, database: Database, tiny_chat_model: Path,
          tiny_model: Path) -> Iterator:
    """Run lines as people; `battle` runs /arena and follows its stream as an adapter does."""
    settings.database_url = database_url
    settings.chat_temperature = 0.0
    settings.chat_max_tokens = 12
    settings.arena_daily_votes = 2
    settings.arena_bootstrap_rounds = 50
    runtime = Runtime(settings)
    runtime.prepare()
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str, actor: Actor = ANN) -> Reply:
        return asyncio.run(dispatcher.dispatch_line(line, actor))

    async def follow(line: str, actor: Actor) -> tuple[Reply, list[Reply], Reply | None]:
        reply = await dispatcher.dispatch_line(line, actor)
        if reply.progress is None:
            return reply, [], None
        shown, last = [], None
        async for event in reply.progress.events():
            last = event
            shown.append(reply.progress.view(reply, event))
        return reply, shown, await reply.progress.finish(last)

    run.battle = lambda line, actor=ANN: asyncio.run(follow(line, actor))  # type: ignore[attr-defined]
    run.runtime = runtime  # type: ignore[attr-defined]
    run.models = (tiny_chat_model, tiny_model)  # type: ignore[attr-defined]
    yield run
    runtime.close()


def test_a_battle_streams_both_answers_then_votes_reveal_names_and_the_leaderboard_fits_them(arena) -> None:
    runtime = arena.runtime
    refused = arena("/arena hello there")
    assert refused.title == "Not enough models" and "none is" in refused.text and "/models install" in refused.text
    installed(runtime.registry, arena.models[0], name="tiny-chat")
    assert "only one is" in arena("/arena hello").text
    installed(runtime.registry, arena.models[1], name="tiny-base")

    card, shown, final = arena.battle("/arena chat Hello, how are you?")
    assert card.title.startswith("Arena battle #") and card.progress.status == "started"
    assert "**Prompt:** Hello, how are you?" in card.text and "tiny" not in card.text  # anonymous
    assert len(shown) >= 3 and "▍" in shown[1].text  # grew in place while both were written
    battle = int(card.title.rsplit("#", 1)[1])
    assert [b.command for b in final.buttons] == [f"/arena vote {battle} {v}" for v in ("a", "b", "tie", "bad")]
    a_text = final.text.split("**Model A**\n", 1)[1].split("\n\n**Model B**", 1)[0]
    b_text = final.text.split("**Model B**\n", 1)[1]
    assert a_text.strip() and b_text.strip() and "tiny" not in final.text
    stored = runtime.arena.get(battle)
    assert stored.status == "ready" and stored.category == "chat"
    assert stored.details["a"]["output_tokens"] and stored.details["b"]["ttft_ms"] is not None
    assert "text" not in stored.details["a"]  # transcripts are off

    revealed = arena(f"/arena vote {battle} a")
    assert revealed.ephemeral and revealed.title == "Thanks for your vote"
    assert {stored.a.model, stored.b.model} == {"tiny-chat", "tiny-base"}
    assert f"Model A was **{stored.a.label}** (`{stored.a.model}`)" in revealed.text
    assert revealed.footer.startswith("1 vote left today")
    again = arena(f"/arena vote {battle} b")
    assert again.title == "Already voted" and f"battle #{battle}" in again.text
    assert arena(f"/arena vote {battle} tie", BOB).title == "Thanks for your vote"
    assert arena("/arena vote 999999 a").title == "Battle not found"

    _, _, second = arena.battle("/arena Say something nice.")
    other = int(second.title.rsplit("#", 1)[1])
    assert runtime.arena.get(other).category == "any"
    assert arena(f"/arena vote {other} bad").title == "Thanks for your vote"
    _, _, third = arena.battle("/arena What is two plus two?")
    capped = arena(f"/arena vote {int(third.title.rsplit('#', 1)[1])} a")
    assert capped.title == "Daily votes used" and "MODELBAY_ARENA_DAILY_VOTES" in capped.text

    board = arena("/arena leaderboard")
    assert board.table.columns[:3] == ["Rank", "Model", "Strength (95% CI)"]
    assert sorted(row[1] for row in board.table.rows) == sorted([stored.a.label, stored.b.label])
    # Two counted battles each: provisional, so no interval and no rank (see the leaderboard's MIN_BATTLES)
    assert [row[2] for row in board.table.rows] == ["provisional (2 battles)"] * 2
    assert [row[0] for row in board.table.rows] == ["–", "–"] and "fewer than 20 battles" in board.text
    assert "3 votes" in board.text and board.attachments[0].data.startswith(b"\x89PNG")
    assert [row[5] for row in board.table.rows] == ["1", "1"]  # both bad, kept apart
    assert sum(int(row[3]) for row in board.table.rows) == 2 * 2  # a and tie count; both bad does not
    chat_board = arena("/arena leaderboard chat")
    assert "2 votes" in chat_board.text and chat_board.title == "Arena leaderboard · chat"
    assert "Not enough votes yet" in arena("/arena leaderboard code").text


def test_the_console_prints_a_battle_when_both_answers_are_in_and_takes_the_vote(settings: Settings,
                                                                                  tiny_chat_model: Path,
                                                                                  tiny_model: Path) -> None:
    import io

    from rich.console import Console as RichConsole

    from modelbay.adapters.console import ConsoleApp

    settings.chat_temperature, settings.chat_max_tokens, settings.arena_bootstrap_rounds = 0.0, 8, 20
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model, name="tiny-chat")
    installed(runtime.registry, tiny_model, name="tiny-base")
    buffer = io.StringIO()
    out = RichConsole(file=buffer, force_terminal=False, width=120, color_system=None)
    script = "/arena Hello there\n/arena vote 1 b\n/arena leaderboard\n"
    try:
        assert ConsoleApp(Dispatcher(runtime, reraise_unknown=True), stdin=io.StringIO(script), out=out).run() == 0
    finally:
        runtime.close()
    shown = buffer.getvalue()
    assert "Battle #1 arena-1: finished - both answered" in shown and "/arena vote 1 bad" in shown
    assert "Model A was Tiny Chat (tiny-chat)" in shown or "Model A was Tiny Base (tiny-base)" in shown
    assert "arena-leaderboard.png" in shown and "Strength (95% CI)" in shown


def test_a_fallback_battle_says_so_above_the_prompt_in_every_view(arena) -> None:
    installed(arena.runtime.registry, arena.models[0], name="tiny-chat")
    installed(arena.runtime.registry, arena.models[1], name="tiny-base")
    first, views, final = arena.battle("/arena category:code Say hi.")  # both tiny models are chat models
    for reply in (first, *views, final):
        above, prompt = reply.text.split("\n\n**Prompt:** ", 1)  # its own paragraph, never run into the prompt
        assert above.startswith("Fewer than two code models are installed, so any two answer")
        assert prompt.startswith("Say hi.")


def test_each_side_of_a_battle_is_counted_in_analytics_and_metrics_unless_the_asker_opted_out(arena) -> None:
    from sqlalchemy import select

    from modelbay.engine.db.schema.analytics import AnalyticsEvent

    runtime = arena.runtime
    installed(runtime.registry, arena.models[0], name="tiny-chat")
    installed(runtime.registry, arena.models[1], name="tiny-base")
    card, _, _ = arena.battle("/arena Hello, how are you?")
    battle = runtime.arena.get(int(card.title.rsplit("#", 1)[1]))
    with runtime.db.session() as session:
        events = session.scalars(select(AnalyticsEvent).where(AnalyticsEvent.event_type == "answer")).all()
        seen = {e.model_version_id: (e.user_key, e.backend, e.output_tokens, e.ttft_ms, e.total_ms, e.details)
                for e in events}
    assert set(seen) == {battle.a.version_id, battle.b.version_id} and len(events) == 2
    for side in ("a", "b"):
        user_key, backend, output_tokens, ttft_ms, total_ms, details = seen[battle.side(side).version_id]
        assert user_key == battle.user_key and backend
        assert output_tokens == battle.details[side]["output_tokens"] and ttft_ms is not None and total_ms > 0
        assert details == {"source": "arena", "battle_id": battle.id, "side": side}
    registry = runtime.telemetry.registry
    for model in ("tiny-chat", "tiny-base"):
        assert registry.get_sample_value("modelbay_answers_total", {"model": model, "status": "ok"}) == 1
        assert registry.get_sample_value("modelbay_response_seconds_count", {"model": model}) == 1
    for side in ("a", "b"):  # the rollups /analytics, compare and the dashboard read
        figures = runtime.analytics.metrics([battle.side(side).version_id], None)
        assert figures.requests == 1 and figures.failures == 0 and figures.p50_ms is not None

    runtime.analytics.set_opt_out(BOB.key, True)  # an opted-out asker's battle is counted nowhere
    arena.battle("/arena Say something nice.", BOB)
    with runtime.db.session() as session:
        assert len(session.scalars(select(AnalyticsEvent).where(AnalyticsEvent.event_type == "answer")).all()) == 2
    assert registry.get_sample_value("modelbay_answers_total", {"model": "tiny-chat", "status": "ok"}) == 1
