"""/models recommend on both databases: real chats and ratings by two people, ranked with reasons, per person."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelbay.bot import Actor, Dispatcher
from modelbay.config import load_settings
from modelbay.engine.analytics.recommend import Recommender, reason
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.hardware import Hardware
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL
from tests.support.chat import installed

ALICE, BOB = Actor("slack", "UALICE"), Actor("slack", "UBOB")


@pytest.fixture
def runtime(database: Database, redis, tmp_path: Path, tiny_chat_model: Path) -> Iterator[Runtime]:  # noqa: ANN001
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             environment="test", chat_temperature=0.0, chat_max_tokens=8)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model, "tiny-chat")
    installed(runtime.registry, tiny_chat_model, "tiny-two")
    yield runtime
    runtime.close()


def _chat(runtime: Runtime, who: Actor, model: str, ratings: list[bool]) -> None:
    place = Place("slack", f"C-{who.user_id}-{model}", "T1")
    chat = runtime.chats.open(place, who.key, model)
    for up in ratings:
        answer = list(runtime.chats.answer(chat, who.key, "Hello"))[-1].answer
        runtime.chats.rate(answer.message_id, who.key, up)


def test_the_better_rated_model_is_recommended_first_with_its_reason(runtime: Runtime) -> None:
    _chat(runtime, ALICE, "tiny-chat", [True, True, True, True])
    _chat(runtime, BOB, "tiny-two", [False, False])
    _chat(runtime, BOB, "tiny-chat", [True])

    team = Recommender(runtime.db, runtime.arena.leaderboard).recommend("chat")
    assert [s.model for s in team] == ["tiny-chat", "tiny-two"]
    assert team[0].reason.startswith("👍 100% of 5 rated chat answers here")
    assert "tokens/s measured" in team[0].reason and team[0].score > team[1].score
    assert team[1].reason.startswith("👍 0% of 2 rated chat answers here")

    bobs = Recommender(runtime.db).recommend("chat", user_key=BOB.key)
    assert [(s.model, s.evidence.ups, s.evidence.downs) for s in bobs] == [("tiny-chat", 1, 0), ("tiny-two", 0, 2)]
    assert Recommender(runtime.db).recommend("code") == []

    dispatcher = Dispatcher(runtime, reraise_unknown=True)
    reply = asyncio.run(dispatcher.dispatch_line("/models recommend chat", ALICE))
    assert reply.title == "Recommended chat models" and reply.table.rows[0][1] == "tiny-chat"
    assert "👍 100% of 5" in reply.table.rows[0][3]
    assert reply.fields[0].name == "For you" and reply.fields[0].value.startswith("tiny-chat: 👍 100% of 4")
    assert reply.buttons[0].command == "/chat tiny-chat"
    empty = asyncio.run(dispatcher.dispatch_line("/models recommend code", ALICE))
    assert empty.text.startswith("No code models installed or used here yet")
    assert asyncio.run(dispatcher.dispatch_line("/models recommend painting", ALICE)).title == "Check the command"


def _standing(model: str, strength: float, *, settled: bool = True) -> SimpleNamespace:
    return SimpleNamespace(model=model, strength=strength, low=strength - 30, battles=40, settled=settled)


def test_arena_evidence_from_battles_started_without_a_category_counts(runtime: Runtime) -> None:
    _chat(runtime, ALICE, "tiny-chat", [True])
    _chat(runtime, ALICE, "tiny-two", [True])
    boards = {  # every battle started without a category: the chat board is empty, the overall one is not
        "chat": SimpleNamespace(standings=[_standing("tiny-two", 1200.0),
                                           _standing("tiny-chat", 900.0, settled=False)]),
        None: SimpleNamespace(standings=[_standing("tiny-chat", 1100.0), _standing("tiny-two", 950.0)]),
    }
    found = {e.model: e for e in Recommender(runtime.db, boards.__getitem__).evidence("chat")}
    assert found["tiny-chat"].arena_strength == 1100.0  # not settled on the chat board: the overall board's
    assert found["tiny-two"].arena_strength == 1200.0  # settled on the chat board: its own task's figure wins
    assert "arena 1,100" in reason(found["tiny-chat"], "chat")


def test_fits_true_keeps_models_of_unknown_parameter_count(runtime: Runtime) -> None:
    gb = 2**30
    laptop = Hardware(host="box", ram_total=24 * gb, ram_available=24 * gb, disk_free=500 * gb, disk_path="/m",
                      gpus=(), probed_at=0.0, gpu_known=True)
    runtime.registry.upsert({"name": "tiny-two", "repo_id": "local/tiny-two", "size_bytes": 2_400_000}, source="local")
    installed(runtime.registry, Path("/nowhere"), "huge-one")
    runtime.registry.upsert({"name": "huge-one", "repo_id": "local/huge-one", "size_bytes": 200 * gb}, source="local")
    fitting = {s.model: s for s in Recommender(runtime.db).recommend("chat", hardware=laptop, fits_only=True)}
    assert set(fitting) == {"tiny-two", "tiny-chat"}  # the 200 GB one is left out; the one of unknown size stays
    assert "fits as stored" in fitting["tiny-two"].reason
    assert "fit" not in fitting["tiny-chat"].reason  # unknown: neither "fits" nor "does not fit"
    everyone = {s.model: s for s in Recommender(runtime.db).recommend("chat", hardware=laptop)}
    assert "does not fit this hardware" in everyone["huge-one"].reason

    info = asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line("/models info tiny-two", ALICE))
    assert next(f.value for f in info.fields if f.name == "Fits").startswith("as stored ")
