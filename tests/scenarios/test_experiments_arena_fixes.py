"""Review fixes of experiments and the arena, end to end with two tiny models on SQLite and PostgreSQL: /privacy
delete erases arena votes and battle text and an experiment assignment (re-joining counts once), opted-out people's
battles keep no text and their ratings no experiment totals, a model's name is no alias and stop/ship say what the
alias opens, an experiment chat never names its model, a tiny split share is refused, a fallback battle is stored
under "any", a battle left answering reads as failed, a category read from the first word is said on the card, and
over REST only admins name a user and a blank prompt is the sample prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from modelbay.bot import Actor
from modelbay.bot.context import Context
from modelbay.bot.conversation import converse
from modelbay.config import Settings
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.experiments import ArenaBattle, ArenaVote
from modelbay.engine.errors import ExperimentModelHidden, NeedsInstall
from modelbay.engine.experiments.arena import DEFAULT_PROMPT, SideDone, sample_prompt
from modelbay.engine.experiments.experiments import VariantSpec
from modelbay.runtime import Runtime
from tests.support.chat import installed
from tests.support.lab import Lab, ask, two_model_lab

ADMIN, ANN, BOB = Actor("console", "admin"), Actor("console", "ann"), Actor("console", "bob")
TOKEN = "fixes-token"


@pytest.fixture
def lab(settings: Settings, database_url: str, database: Database, tiny_chat_model: Path,
        tiny_model: Path) -> Iterator[Lab]:
    with two_model_lab(settings, database_url, tiny_chat_model, tiny_model, token=TOKEN, chat_max_tokens=6,
                       store_transcripts=True, arena_bootstrap_rounds=10) as run:
        yield run


def _battle(runtime: Runtime, user: str, prompt: str = "Hi") -> int:
    battle = runtime.arena.start(user, prompt)
    assert [d for d in runtime.arena.run(battle, battle.prompt) if isinstance(d, SideDone)]
    return battle.id


def _people(runtime: Runtime, name: str) -> int:
    return sum(v.exposures for v in runtime.experiments.get(name).variants)


def test_privacy_delete_erases_assignments_votes_and_battle_text_and_opt_outs_keep_none(lab) -> None:
    runtime = lab.runtime
    runtime.experiments.start("blind", [VariantSpec("tiny-chat"), VariantSpec("tiny-base")],
                              created_by="console:admin")
    # One person is one exposure: erased, then joining again, counts once.
    lab("/chat exp:blind", ANN, room="ann")
    assert _people(runtime, "blind") == 1
    mine = _battle(runtime, ANN.key, "Ann's secret question")
    assert runtime.arena.get(mine).prompt == "Ann's secret question"
    theirs = _battle(runtime, BOB.key)
    runtime.arena.vote(mine, ANN.key, "a")
    runtime.arena.vote(mine, BOB.key, "b")
    runtime.arena.vote(theirs, ANN.key, "tie")

    erased = lab("/privacy delete", ANN)
    assert "experiment assignments: 1" in erased.text and "arena votes: 2" in erased.text, erased.text
    assert "arena battles made anonymous: 1" in erased.text
    assert _people(runtime, "blind") == 0
    lab("/chat exp:blind", ANN, room="ann2")
    assert _people(runtime, "blind") == 1
    with runtime.db.session() as session:
        row = session.get(ArenaBattle, mine)
        assert row.user_key == "forgotten" and row.prompt is None
        assert all("text" not in side for side in row.details.values()) and row.details["a"]["status"]
        votes = {(v.battle_id, v.user_key) for v in session.scalars(select(ArenaVote))}
    assert votes == {(mine, BOB.key)}  # Bob's vote on Ann's battle still counts
    assert runtime.arena.leaderboard().votes == 1

    # Opted out: a battle keeps no text, and ratings in an experiment chat add nothing to its totals.
    lab("/privacy optout", BOB)
    quiet = _battle(runtime, BOB.key, "Bob's private question")
    with runtime.db.session() as session:
        row = session.get(ArenaBattle, quiet)
        assert row.prompt is None and all("text" not in side for side in row.details.values())
    opened = runtime.experiments.open(Place("console", "bob"), BOB.key, "exp:blind")
    message = ask(runtime, opened.session.id, BOB.key, "Hello")
    runtime.chats.rate(message, BOB.key, up=True)
    variants = runtime.experiments.get("blind").variants
    assert sum(v.ups + v.downs + v.answers for v in variants) == 0 and _people(runtime, "blind") == 1


def test_aliases_never_take_a_models_name_and_stop_and_ship_say_what_the_alias_opens(lab) -> None:
    runtime = lab.runtime
    refused = lab("/experiments start x tiny-chat | tiny-base alias:tiny-chat")
    assert refused.title == "Check the experiment" and "choose another alias" in refused.text
    tiny = lab("/experiments start x tiny-chat | tiny-base split:1e-300/1")
    assert tiny.title == "Check the experiment" and "at least 1%" in tiny.text, tiny.text
    assert lab("/experiments start x tiny-chat | tiny-base split:1/99").title == "Experiment x started"
    lab("/experiments start one tiny-chat | tiny-base alias:helper")
    stopped = lab("/experiments stop one")
    assert "`/chat helper` now opens nothing" in stopped.text, stopped.text
    lab("/experiments start two tiny-chat | tiny-base alias:helper")
    shipped = lab("/experiments ship two b")
    assert "`/chat helper` now opens experiment `two`'s shipped variant b (`tiny-base`)" in shipped.text
    assert "(before: the running experiment `two`" in shipped.text
    assert "`/chat" not in lab("/experiments stop x").text  # x has no alias: nothing to say about one
    assert runtime.experiments.open(Place("console", "h"), ANN.key, "helper").session.model_name == "tiny-base"
    # A model registered under the alias later wins: `/chat <model>` always opens the model.
    installed(runtime.registry, Path(runtime.registry.get("tiny-chat").versions[-1].local_path), name="helper")
    assert runtime.experiments.open(Place("console", "h"), ANN.key, "helper").experiment is None
    assert runtime.experiments.alias_opens("helper") == "the model `helper`"


def test_an_experiment_chat_never_names_its_model(lab) -> None:
    runtime = lab.runtime
    lab("/experiments start hide tiny-chat | tiny-base")
    card = lab("/chat exp:hide", ANN, room="hide")
    assert card.title == "Chatting in experiment hide" and "tiny" not in card.plain().lower(), card.plain()
    session = runtime.chats.current(Place("console", "hide"))
    assert session.experiment == "hide"
    message = ask(runtime, session.id, ANN.key, "Hello")
    assert "tiny" not in lab(f"/rate up message:{message}", ANN, room="hide").plain().lower()

    def fails(chat):  # the model's own error names it
        raise NeedsInstall(chat.model_name)

    runtime.chats._lease = fails  # type: ignore[method-assign]
    ctx = Context(runtime, ANN, "user", Place("console", "hide"))

    async def talk() -> None:
        async for _ in converse(ctx, "Hello again"):
            pass

    with pytest.raises(ExperimentModelHidden) as hidden:
        asyncio.run(talk())
    assert "tiny" not in str(hidden.value) and "`hide`" in str(hidden.value)
    ended = lab("/chat end", ANN, room="hide")
    assert ended.text.startswith("Chat in experiment `hide` ended.") and "tiny" not in ended.text


def test_arena_fallback_category_stale_battles_and_the_category_read_from_the_first_word(lab) -> None:
    runtime = lab.runtime
    code = runtime.arena.start(ANN.key, "Write a loop", "code")  # no code models: any two answer
    assert code.fallback and runtime.arena.get(code.id).category == "any"
    card = lab("/arena code Write a loop", ANN)
    assert "counts on the overall leaderboard only" in card.text
    battle = int(card.title.rsplit("#", 1)[1])
    assert runtime.arena.get(battle).category == "any"
    assert runtime.arena.leaderboard("code").votes == 0

    read = lab("/arena chat is better than code?", ANN)
    assert "Read “chat” as the category" in read.text and "`/arena category:any chat …`" in read.text
    assert "**Prompt:** is better than code?" in read.text
    literal = lab("/arena category:any chat is better than code?", ANN)
    assert "**Prompt:** chat is better than code?" in literal.text and "Read “" not in literal.text
    blank = runtime.arena.start(ANN.key, "   ", None)
    assert blank.prompt == DEFAULT_PROMPT and runtime.arena.start(ANN.key, None, "code").prompt == sample_prompt("code")

    # Never streamed: still answering long after any answer could take, so it reads as failed.
    stale = runtime.arena.start(ANN.key, "Hello")
    assert runtime.arena.get(stale.id).status == "answering"
    with runtime.db.session() as session:
        session.execute(update(ArenaBattle).where(ArenaBattle.id == stale.id).values(
            created_at=datetime.now(timezone.utc) - timedelta(hours=2)))
    assert runtime.arena.get(stale.id).status == "failed"
    refused = lab(f"/arena vote {stale.id} a", BOB)
    assert refused.title == "Not ready to vote" and "never finished answering" in refused.text
    assert "`/arena` starts a new battle" in refused.text


def test_rest_only_admins_name_a_user_and_a_blank_prompt_is_the_sample(lab) -> None:
    from modelbay.adapters.api import create_app

    runtime = lab.runtime
    client = TestClient(create_app(runtime))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    made = client.post("/api/arena/battles", json={"prompt": "   "}, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["prompt"] == DEFAULT_PROMPT and made.json()["category"] == "any"
    battle = made.json()["id"]
    assert client.post(f"/api/arena/battles/{battle}/votes", json={"outcome": "a", "user": "ann"},
                       headers=headers).status_code == 201  # an admin caller may name a user
    runtime.settings.roles = {"user": ["api:*"]}  # now a user-token caller
    named = client.post(f"/api/arena/battles/{battle}/votes", json={"outcome": "b", "user": "bob"}, headers=headers)
    assert named.status_code == 403 and named.json()["type"] == "NotAllowed" and "admin" in named.json()["error"]
    started = client.post("/api/arena/battles", json={"prompt": "Hi", "user": "bob"}, headers=headers)
    assert started.status_code == 403
    own = client.post(f"/api/arena/battles/{battle}/votes", json={"outcome": "b"}, headers=headers)
    assert own.status_code == 201, own.text
    with runtime.db.session() as session:
        assert {v.user_key for v in session.scalars(select(ArenaVote))} == {"api:ann", "api:token"}


def test_numbers_past_the_id_columns_are_refused_in_one_line_not_a_database_error(lab) -> None:
    # Answers and battles have INTEGER ids: PostgreSQL refuses a larger number in a lookup (a 500, not "not found").
    for line in ("/arena vote 2147483648 a", "/rate up message:2147483648"):
        reply = lab(line)
        assert reply.tone == "warning" and "2,147,483,647" in reply.text, (line, reply.text)
    missing = lab("/arena vote 2147483647 a")
    assert missing.title == "Battle not found", missing.text
    assert lab("/rate up message:2147483647").title != "Unexpected error"
