"""The registry's speed filter on both databases: tokens/s measured here (answers, else the newest optimization report)
wins over the catalog's figure, in search, info, lists, `/models search speed:` and the REST parameter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelbay.bot import Actor, Dispatcher
from modelbay.config import load_settings
from modelbay.engine.analytics.recommend import measured_speeds as recommend_speeds
from modelbay.engine.catalog import search
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import UsageHourly
from modelbay.engine.errors import SearchTermInvalid
from modelbay.engine.records import ModelQuery
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL
from tests.support.chat import installed

GB = 1_000_000_000
HOUR = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
MODELS = [
    # catalog 80 tokens/s, measured 20 here from its answers over two versions: the measurement wins
    dict(name="quick-on-paper", repo_id="acme/quick-on-paper", category="chat", description="Fast, it says.",
         downloads=50, performance={"tokens_per_s": 80}),
    # no catalog figure; two optimization reports, the newer one measured 65 tokens/s (the newest measured none)
    dict(name="squeezed", repo_id="acme/squeezed", category="chat", description="An int8 variant.", downloads=40),
    # a report says 30 but its answers say 12: answers first
    dict(name="answered", repo_id="acme/answered", category="chat", description="Used a lot.", downloads=30),
    # only the catalog's 40
    dict(name="catalogued", repo_id="acme/catalogued", category="code", description="Code model.", downloads=20,
         performance={"tokens_per_s": 40}),
    # nothing known
    dict(name="unknown", repo_id="acme/unknown", category="chat", description="No figures.", downloads=10),
]


def _report(tokens_per_s: float | None) -> dict:
    return {"report": {"variant": {"tokens_per_s": tokens_per_s, "perplexity": 9.5}, "parent": {"tokens_per_s": 20}}}


@pytest.fixture
def registry(database: Database) -> Registry:
    registry = Registry(database)
    registry.upsert_many(MODELS, source="hub")
    ids = {m.name: m.id for m in registry.search(ModelQuery(limit=10)).models}
    first = registry.add_version(ids["quick-on-paper"], "main")
    second = registry.add_version(ids["quick-on-paper"], "v2")
    registry.add_version(ids["squeezed"], "a", lineage="optimize", lineage_params=_report(55.0))
    registry.add_version(ids["squeezed"], "b", lineage="optimize", lineage_params=_report(65.0))
    registry.add_version(ids["squeezed"], "c", lineage="optimize", lineage_params=_report(None))
    registry.add_version(ids["squeezed"], "d", lineage="finetune", lineage_params=_report(500.0))  # not a report
    answered = registry.add_version(ids["answered"], "main", lineage="optimize", lineage_params=_report(30.0))
    with database.session() as session:
        session.add_all([
            UsageHourly(model_version_id=first.id, hour=HOUR, requests=2, tps_sum=20.0, tps_count=2),
            UsageHourly(model_version_id=second.id, hour=HOUR, requests=1, tps_sum=40.0, tps_count=1),
            UsageHourly(model_version_id=second.id, hour=HOUR + timedelta(hours=1), requests=3),  # no figures
            UsageHourly(model_version_id=answered.id, hour=HOUR - timedelta(days=60), requests=1, tps_sum=12.0,
                        tps_count=1),
        ])
    return registry


def _names(registry: Registry, query: ModelQuery) -> list[str]:
    return [m.name for m in registry.search(query).models]


EXPECTED = {"quick-on-paper": (20.0, "answers"), "squeezed": (65.0, "optimization report"),
            "answered": (12.0, "answers"), "catalogued": (40.0, "catalog"), "unknown": (None, None)}


def test_measured_figures_win_over_the_catalog_in_every_record(registry: Registry) -> None:
    found = {m.name: (m.tokens_per_s, m.speed_source) for m in registry.search(ModelQuery(limit=10)).models}
    assert found == EXPECTED  # exact: 60 / 3 and the stored figures
    listed = {m.name: (m.tokens_per_s, m.speed_source) for m in registry.list_models(limit=10).models}
    assert listed == found
    assert (registry.get("squeezed").tokens_per_s, registry.get("squeezed").speed_measured) == (65.0, True)
    assert (registry.get("catalogued").speed_source, registry.get("catalogued").speed_measured) == ("catalog", False)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (ModelQuery(min_tokens_per_s=50), ["squeezed"]),  # quick-on-paper's catalog 80 is not what it did here
        (ModelQuery(min_tokens_per_s=15), ["quick-on-paper", "squeezed", "catalogued"]),
        (ModelQuery(min_tokens_per_s=0), ["quick-on-paper", "squeezed", "answered", "catalogued"]),  # unknown: out
        (ModelQuery.parse("speed:15 category:chat"), ["quick-on-paper", "squeezed"]),
        (ModelQuery.parse("speed:>=12 used"), ["answered"]),  # with ranked words
        (ModelQuery.parse("speed:20tok/s", sort="name"), ["catalogued", "quick-on-paper", "squeezed"]),
        (ModelQuery(min_tokens_per_s=15, sort="rating"), ["quick-on-paper", "squeezed", "catalogued"]),
        (ModelQuery(min_tokens_per_s=15, sort="recent"), ["quick-on-paper", "squeezed", "catalogued"]),
        (ModelQuery(min_tokens_per_s=10**6), []),
    ],
)
def test_the_speed_filter_compares_the_measured_figure(registry: Registry, query: ModelQuery,
                                                       expected: list[str]) -> None:
    page = registry.search(query)
    assert [m.name for m in page.models] == expected and page.total == len(expected)


def test_totals_past_the_last_page_count_with_the_measured_figures(registry: Registry) -> None:
    assert registry.search(ModelQuery(min_tokens_per_s=15, limit=1)).total == 3
    assert registry.search(ModelQuery(min_tokens_per_s=15, offset=10)) == ([], 3)


def test_recommend_reads_the_same_figures_over_its_period(registry: Registry, database: Database) -> None:
    with database.session() as session:
        every = search.measured_speeds(session)
        recent = search.measured_speeds(session, since=HOUR - timedelta(days=30))
    names = {m.id: m.name for m in registry.search(ModelQuery(limit=10)).models}
    measured = {k: v for k, v in EXPECTED.items() if v[1] not in (None, "catalog")}
    assert {names[i]: v for i, v in every.items()} == measured
    # Answers from 60 days ago are out of a 30-day period: the report's figure stands in.
    assert {names[i]: v for i, v in recent.items()} == {"quick-on-paper": (20.0, "answers"),
                                                        "squeezed": (65.0, "optimization report"),
                                                        "answered": (30.0, "optimization report")}
    assert recommend_speeds(database, HOUR - timedelta(days=30)) == recent


@pytest.mark.parametrize("term", ["speed:fast", "speed:-1", "speed:nan", "speed:inf", "speed:1e9", "speed:>"])
def test_a_speed_term_that_is_not_a_number_is_refused_in_one_line(term: str) -> None:
    with pytest.raises(SearchTermInvalid) as raised:
        ModelQuery.parse(f"qwen {term}")
    assert "like speed:40" in str(raised.value) and "\n" not in str(raised.value)
    assert ModelQuery.parse("qwen speed:40").min_tokens_per_s == 40.0
    assert ModelQuery.parse("qwen speed:40", min_tokens_per_s=10).min_tokens_per_s == 10.0  # an argument wins
    assert ModelQuery.parse("speed:").text == "speed:"  # an empty term stays a word, as tag: does


# -- end to end: real answers measured, then /models search speed:, /models info and REST ------------------------------

ME = Actor("console", "me")


@pytest.fixture
def runtime(database: Database, redis, tmp_path: Path, tiny_chat_model: Path) -> Iterator[Runtime]:  # noqa: ANN001
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             environment="test", chat_temperature=0.0, chat_max_tokens=8)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model, "tiny-chat")
    installed(runtime.registry, tiny_chat_model, "tiny-paper")
    runtime.registry.upsert({"name": "tiny-paper", "performance": {"tokens_per_s": 0.5}}, source="local")
    yield runtime
    runtime.close()


def test_models_search_by_speed_shows_measured_figures(runtime: Runtime) -> None:
    from modelbay.engine.chat.records import Place

    chat = runtime.chats.open(Place("console", "c1", None), ME.key, "tiny-chat")
    answer = list(runtime.chats.answer(chat, ME.key, "Hello"))[-1].answer
    assert answer.tokens_per_s and answer.tokens_per_s > 0.5
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str):  # noqa: ANN202
        return asyncio.run(dispatcher.dispatch_line(line, ME))

    found = run("/models search tiny source:registry speed:0.5")
    cells = {row[0]: row[5] for row in found.table.rows}
    assert found.table.columns[5] == "Tokens/s"
    assert cells["tiny-chat"].endswith("(measured here)") and cells["tiny-paper"] == "0.5 (catalog)"
    faster = run(f"/models search tiny speed:{answer.tokens_per_s / 2:.3f}")
    assert [row[0] for row in faster.table.rows] == ["tiny-chat"]
    assert "Only the registry was searched" in faster.footer  # the sources state no speed
    assert "huggingface, local" not in faster.footer and "the Hugging Face Hub" in faster.footer
    alone = run(f"/models search speed:{answer.tokens_per_s / 2:.3f}")  # a speed bound alone is a search
    assert [row[0] for row in alone.table.rows] == ["tiny-chat"] and alone.title.endswith("tokens/s")
    none = run("/models search speed:50000")
    assert none.text == "Nothing matches that speed. Try a lower speed: or fewer words."
    assert run("/models search").title == "Check the command"  # neither words nor a speed
    plain = run("/models search no-such-words-anywhere source:registry")
    assert plain.text.endswith("Try fewer words or another source.")
    assert run("/models search tiny speed:fast").title == "Check the command"
    info = run("/models info tiny-chat")
    speed = next(f.value for f in info.fields if f.name == "Speed")
    assert speed.endswith("tokens/s (measured here, from its answers)")
    paper = next(f.value for f in run("/models info tiny-paper").fields if f.name == "Speed")
    assert paper == "0.5 tokens/s (catalog)"


def test_rest_filters_by_measured_speed(runtime: Runtime) -> None:
    import httpx
    from pydantic import SecretStr

    from modelbay.adapters.api import create_app
    from modelbay.engine.chat.records import Place
    from tests.support.asgi import serve

    chat = runtime.chats.open(Place("console", "c2", None), ME.key, "tiny-chat")
    measured = list(runtime.chats.answer(chat, ME.key, "Hello"))[-1].answer.tokens_per_s
    runtime.settings.api_token = SecretStr("t")
    runtime.settings.roles = {"admin": ["api:*"]}
    with serve(create_app(runtime)) as url, httpx.Client(base_url=url, headers={"Authorization": "Bearer t"},
                                                         timeout=60) as api:
        listed = api.get("/api/marketplace/models", params={"min_tokens_per_s": measured / 2}).json()
        assert [(m["id"], m["speed_source"]) for m in listed["models"]] == [("tiny-chat", "answers")]
        assert listed["models"][0]["tokens_per_s"] > measured / 2 and listed["total"] == 1
        termed = api.get("/api/marketplace/models", params={"q": "speed:0.5", "sort": "name"}).json()
        assert [(m["id"], m["speed_source"]) for m in termed["models"]] == [("tiny-chat", "answers"),
                                                                           ("tiny-paper", "catalog")]
        found = api.get("/api/marketplace/search", params={"q": "tiny", "min_tokens_per_s": 0.5}).json()
        assert {r["id"]: r["speed_source"] for r in found["results"]} == {"tiny-chat": "answers",
                                                                          "tiny-paper": "catalog"}
        assert any("Only the registry was searched" in n for n in found["notices"])
        for bad in ("nan", "inf", "-1", "fast"):
            assert api.get("/api/marketplace/models", params={"min_tokens_per_s": bad}).status_code == 422
        refused = api.get("/api/marketplace/models", params={"q": "speed:fast"})
        assert refused.status_code == 422 and "like speed:40" in refused.json()["error"]
