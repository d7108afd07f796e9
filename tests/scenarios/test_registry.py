"""The registry: filters, ranked search, sorts, upserts, versions and the search columns, on both backends."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from modelbay.engine.catalog.curated import load_catalog
from modelbay.engine.db.database import Database
from modelbay.engine.errors import ModelNotFound
from modelbay.engine.records import ModelQuery, ModelRecord
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message

GB = 1_000_000_000
MODELS = [
    dict(name="coder", repo_id="acme/Coder", display_name="Coder", category="code", tags=["code", "small"],
         description="A small code model.", author="acme", license="apache-2.0", parameter_count=1 * GB,
         size_bytes=2 * GB, downloads=10, likes=1),
    dict(name="coder-7b", repo_id="acme/coder-7b", display_name="Coder 7B", category="code", tags=["code", "instruct"],
         description="Seven billion parameters of code.", author="acme", license="MIT", parameter_count=7 * GB,
         size_bytes=15 * GB, downloads=20, likes=5, performance={"tokens_per_s": 40, "accuracy": 0.7}),
    dict(name="mega-coder", repo_id="other/mega-coder", display_name="Mega Coder", category="code", tags=["code"],
         description="A large code model.", author="other", license="llama2", parameter_count=34 * GB,
         size_bytes=68 * GB, downloads=30, likes=2),
    dict(name="helper", repo_id="other/helper", display_name="Helper", category="chat", tags=["Coder", "instruct"],
         description="A general assistant.", author="other", license="apache-2.0", parameter_count=3 * GB,
         downloads=40, likes=9, requirements={"memory_bytes": 4 * GB}),
    dict(name="qwen-chat", repo_id="Qwen/Qwen-Chat", display_name="Qwen Chat", category="chat",
         tags=["instruct", "multilingual"], description="Chat model, and a good coder too.", author="Qwen",
         license="apache-2.0", parameter_count=7 * GB, size_bytes=14 * GB, downloads=1000, likes=3,
         performance={"tokens_per_s": 80}),
    dict(name="embedder", repo_id="BAAI/embedder", display_name="Embedder", category="embedding",
         tags=["embeddings"], description="Sentence embeddings for search.", author="BAAI", license="mit",
         parameter_count=GB // 10, size_bytes=4 * GB // 10, downloads=500, likes=0, performance={"accuracy": 0.9}),
]


@pytest.fixture
def registry(database: Database) -> Registry:
    """A registry holding the six models above (the embedder registered locally, the rest from the Hub)."""
    registry = Registry(database)
    assert registry.upsert_many(MODELS[:-1], source="hub") == 5
    registry.upsert(MODELS[-1], source="local")
    return registry


def _names(registry: Registry, query: ModelQuery) -> list[str]:
    return [m.name for m in registry.search(query)[0]]


def test_parse_splits_terms_out_of_the_text() -> None:
    query = ModelQuery.parse("Qwen tag:Code category:code License:MIT author:Qwen source:hub 7b odd:term tag:",
                             tags=("chat",), limit=5)
    assert query.text == "Qwen 7b odd:term tag:"
    assert query.words == ["qwen", "7b", "odd:term", "tag:"]
    assert query.tags == ("code", "chat")
    assert (query.category, query.license, query.author, query.source) == ("code", "mit", "qwen", "hub")
    assert query.limit == 5 and query.order == "relevance"
    assert ModelQuery().order == "downloads" and ModelQuery.parse("tag:code").order == "downloads"
    assert ModelQuery.parse("x", sort="likes").order == "likes"
    # An override left at None keeps the term; one given wins over it.
    assert ModelQuery.parse("category:code", category=None).category == "code"
    assert ModelQuery.parse("category:code", category="chat").category == "chat"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (ModelQuery(category="chat"), {"helper", "qwen-chat"}),
        (ModelQuery(category="music"), set()),
        (ModelQuery(tags=("code",)), {"coder", "coder-7b", "mega-coder"}),
        (ModelQuery(tags=("CODE", "instruct")), {"coder-7b"}),
        (ModelQuery(tags=("cod",)), set()),  # whole tags only
        (ModelQuery(source="local"), {"embedder"}),
        (ModelQuery(license="mit"), {"coder-7b", "embedder"}),
        (ModelQuery(author="ACME"), {"coder", "coder-7b"}),
        (ModelQuery(min_parameters=3 * GB, max_parameters=7 * GB), {"coder-7b", "helper", "qwen-chat"}),
        (ModelQuery(max_size_bytes=14 * GB), {"coder", "qwen-chat", "embedder"}),  # unknown sizes are left out
        (ModelQuery(max_memory_bytes=4 * GB), {"coder", "helper", "embedder"}),  # stated need, else the weights
        (ModelQuery(min_tokens_per_s=50), {"qwen-chat"}),
        (ModelQuery(min_accuracy=0.5), {"coder-7b", "embedder"}),
        (ModelQuery(min_tokens_per_s=10, min_accuracy=0.5), {"coder-7b"}),
        (ModelQuery.parse("tag:code license:llama2"), {"mega-coder"}),
        (ModelQuery.parse("category:code author:other"), {"mega-coder"}),
        (ModelQuery.parse("source:hub tag:instruct"), {"coder-7b", "helper", "qwen-chat"}),
        (ModelQuery.parse("qwen/qwen-chat"), {"qwen-chat"}),  # repo ids are searchable
        (ModelQuery.parse("100%"), set()),  # LIKE wildcards in words are literal
        (ModelQuery.parse("_"), set()),
    ],
)
def test_each_filter(registry: Registry, query: ModelQuery, expected: set[str]) -> None:
    models, total = registry.search(query)
    assert {m.name for m in models} == expected and total == len(expected)


def test_exact_name_beats_prefix_contains_tag_and_description(registry: Registry) -> None:
    # Downloads run the other way (qwen-chat has the most), so the order is the score's alone.
    assert _names(registry, ModelQuery.parse("coder")) == ["coder", "coder-7b", "mega-coder", "helper", "qwen-chat"]
    assert _names(registry, ModelQuery.parse("Mega Coder")) == ["mega-coder"]  # the display name, as typed


def test_every_word_must_match_somewhere(registry: Registry) -> None:
    # "code" is in coder's name, in mega-coder's, and only in qwen-chat's description ("a good coder").
    assert _names(registry, ModelQuery.parse("code model")) == ["coder", "mega-coder", "qwen-chat"]
    assert _names(registry, ModelQuery.parse("qwen instruct")) == ["qwen-chat"]
    assert _names(registry, ModelQuery.parse("qwen embeddings")) == []
    # Equal scores fall back to downloads.
    assert _names(registry, ModelQuery.parse("instruct")) == ["qwen-chat", "helper", "coder-7b"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("downloads", ["qwen-chat", "embedder", "helper", "mega-coder", "coder-7b", "coder"]),
        ("likes", ["helper", "coder-7b", "qwen-chat", "mega-coder", "coder", "embedder"]),
        ("size", ["embedder", "coder", "qwen-chat", "coder-7b", "mega-coder", "helper"]),  # smallest first
        ("name", ["coder", "coder-7b", "embedder", "helper", "mega-coder", "qwen-chat"]),
    ],
)
def test_sorts_by_metadata(registry: Registry, sort: str, expected: list[str]) -> None:
    assert _names(registry, ModelQuery(sort=sort)) == expected  # type: ignore[arg-type]


def _models(registry: Registry) -> dict[str, ModelRecord]:
    return {m.name: m for m in registry.search(ModelQuery(limit=100))[0]}


def test_sort_by_rating_is_the_share_of_thumbs_up(registry: Registry, database: Database) -> None:
    models = _models(registry)
    ratings = {"coder": [1, 1], "helper": [1, -1], "qwen-chat": [-1]}
    versions = {name: registry.add_version(models[name].id, "main").id for name in ratings}
    with database.session() as session:
        for name, thumbs in ratings.items():
            chat = ChatSession(platform="console", channel_id="c", user_key="console:me",
                               model_version_id=versions[name])
            chat.messages.extend(Message(role="assistant") for _ in thumbs)
            session.add(chat)
            session.flush()
            session.add_all(Feedback(message_id=m.id, user_key="console:me", rating=r)
                            for m, r in zip(chat.messages, thumbs))

    ranked, _ = registry.search(ModelQuery(sort="rating"))
    # Unrated models come last, by downloads.
    assert [m.name for m in ranked] == ["coder", "helper", "qwen-chat", "embedder", "mega-coder", "coder-7b"]
    assert [m.rating for m in ranked] == [1.0, 0.5, 0.0, None, None, None]
    assert _names(registry, ModelQuery.parse("coder", sort="rating")) == ["coder", "helper", "qwen-chat",
                                                                          "mega-coder", "coder-7b"]


def test_sort_by_recent_use(registry: Registry, database: Database) -> None:
    models = _models(registry)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    hour = timedelta(hours=1)
    used = {"embedder": [start], "coder": [start, start + hour], "mega-coder": [start + 2 * hour]}
    versions = {name: registry.add_version(models[name].id, "main").id for name in used}
    with database.session() as session:
        for name, times in used.items():
            session.add_all(AnalyticsEvent(event_type="inference_complete", model_version_id=versions[name],
                                           created_at=t) for t in times)
        session.add(AnalyticsEvent(event_type="inference_complete", created_at=start + timedelta(days=1)))

    ranked, _ = registry.search(ModelQuery(sort="recent"))
    assert [m.name for m in ranked] == ["mega-coder", "coder", "embedder", "qwen-chat", "helper", "coder-7b"]
    assert ranked[1].last_used_at == start + hour and ranked[3].last_used_at is None


def test_installed_filter_follows_version_states(registry: Registry) -> None:
    coder = registry.get("coder")
    version = registry.add_version(coder.id, "main", revision_sha="a" * 40)
    assert registry.search(ModelQuery(installed=True)) == ([], 0)
    registry.update_version(version.id, install_state="installed", local_path="/models/coder", size_bytes=2 * GB)
    models, total = registry.search(ModelQuery(installed=True))
    assert [m.name for m in models] == ["coder"] and total == 1 and models[0].installed
    assert registry.search(ModelQuery(installed=False))[1] == 5
    assert registry.list_models(installed=True)[1] == 1  # /models list sees it too


def test_versions_are_added_once_and_updated(registry: Registry) -> None:
    coder = registry.get("coder")
    installed_at = datetime(2026, 11, 2, tzinfo=timezone.utc)
    main = registry.add_version(coder.id, "main", install_state="queued")
    assert registry.add_version(coder.id, "main", install_state="failed") == main  # the same revision: unchanged
    tuned = registry.add_version(coder.id, "ft-1", parent_version_id=main.id, lineage="finetune",
                                 lineage_params={"method": "lora"})
    files = [{"path": "model.safetensors", "size": 10, "sha256": "b" * 64}]
    updated = registry.update_version(main.id, install_state="installed", revision_sha="c" * 40, files=files,
                                      format="safetensors", installed_at=installed_at)
    assert updated == registry.get_version(main.id)
    assert (updated.install_state, updated.files, updated.installed_at) == ("installed", files, installed_at)
    assert updated.model_id == coder.id and updated.format == "safetensors"
    assert [v.revision for v in registry.versions(coder.id)] == ["main", "ft-1"]
    assert registry.get_version(tuned.id).lineage_params == {"method": "lora"}
    assert [v.revision for v in registry.get("coder").versions] == ["main", "ft-1"]

    with pytest.raises(ValueError, match="not version fields: colour"):
        registry.update_version(main.id, colour="red")
    with pytest.raises(LookupError):
        registry.get_version(10_000)
    with pytest.raises(ModelNotFound):
        registry.add_version(10_000, "main")


def test_upsert_inserts_updates_by_repo_and_suffixes_a_taken_name(registry: Registry) -> None:
    before = registry.get("coder")
    # The same repo in another case updates the model; its name and source stay.
    updated = registry.upsert({"repo_id": "ACME/coder", "downloads": 99, "name": "renamed"}, source="local")
    assert (updated.id, updated.name, updated.source, updated.downloads) == (before.id, "coder", "hub", 99)
    assert updated.description == before.description

    # Another repo whose name is taken gets the next free suffix.
    other = registry.upsert({"repo_id": "someone/Coder", "category": "code"}, source="hub")
    third = registry.upsert({"repo_id": "third/coder", "category": "code", "display_name": "Third"}, source="hub")
    assert (other.name, other.display_name, third.name, third.display_name) == ("coder-2", "Coder", "coder-3", "Third")
    assert registry.get("someone/coder").id == other.id

    # Without a repo id, the name is the key.
    local = registry.upsert({"name": "My Model!", "category": "chat"}, source="local")
    assert local.name == "my-model" and local.repo_id is None
    assert registry.upsert({"name": "my-model", "likes": 4}, source="local").id == local.id

    with pytest.raises(ValueError, match="not model fields: colour"):
        registry.upsert({"name": "x", "category": "chat", "colour": "red"}, source="hub")
    with pytest.raises(ValueError, match="needs a category"):
        registry.upsert({"repo_id": "new/model"}, source="hub")


def test_search_columns_follow_every_write(registry: Registry) -> None:
    registry.upsert({"repo_id": "acme/coder", "tags": ["Rust"], "description": "Now about crabs.",
                     "performance": {"tokens_per_s": 120}, "requirements": {"memory_bytes": 30 * GB}}, source="hub")
    assert _names(registry, ModelQuery.parse("tag:rust")) == ["coder"]
    assert "coder" not in _names(registry, ModelQuery.parse("tag:code"))
    assert _names(registry, ModelQuery.parse("crabs")) == ["coder"]
    assert _names(registry, ModelQuery(min_tokens_per_s=100)) == ["coder"]
    assert "coder" not in _names(registry, ModelQuery(max_memory_bytes=4 * GB))
    assert registry.get("coder").memory_bytes == 30 * GB

    # A catalog sync writes them too, and adopts a Hub model with the same repo instead of adding a twin.
    entry = load_catalog()[0]
    registry.upsert({"repo_id": entry.repo_id.upper(), "category": "chat", "downloads": 7}, source="hub")
    registry.sync_catalog([entry])
    adopted = registry.get(entry.repo_id)
    assert adopted.source == "catalog" and adopted.downloads == 7 and adopted.description == entry.description
    assert _names(registry, ModelQuery.parse(f"tag:{entry.tags[0]} source:catalog")) == [adopted.name]


def test_pages_and_totals(registry: Registry) -> None:
    order = ["qwen-chat", "embedder", "helper", "mega-coder", "coder-7b", "coder"]
    pages = [registry.search(ModelQuery(limit=4, offset=offset)) for offset in (0, 4, 8)]
    assert [[m.name for m in models] for models, _ in pages] == [order[:4], order[4:], []]
    assert [total for _, total in pages] == [6, 6, 6]
    filtered = [registry.search(ModelQuery.parse("coder", limit=2, offset=offset)) for offset in (0, 4, 6)]
    assert [([m.name for m in models], total) for models, total in filtered] == [
        (["coder", "coder-7b"], 5), (["qwen-chat"], 5), ([], 5)]
    assert registry.search(ModelQuery.parse("nothing-like-this")) == ([], 0)


def test_migration_fills_the_search_columns_of_existing_models(database: Database) -> None:
    database.downgrade("0001")
    models = sa.table("models", *(sa.column(c) for c in (
        "name", "display_name", "source", "repo_id", "category", "description", "gated", "trust_remote_code",
        "downloads", "likes", "created_at", "updated_at")), sa.column("tags", sa.JSON()),
        sa.column("languages", sa.JSON()), sa.column("requirements", sa.JSON()), sa.column("performance", sa.JSON()))
    now = datetime(2026, 11, 1)
    with database.engine.begin() as connection:
        connection.execute(models.insert().values(
            name="old", display_name="Old One", source="catalog", repo_id="Org/Old", category="code",
            description="An Older model.", gated=False, trust_remote_code=False, downloads=1, likes=0,
            created_at=now, updated_at=now, tags=["Code", "Legacy"], languages=[], requirements={},
            performance={"tokens_per_s": 12.5, "accuracy": "n/a"}))
    database.upgrade()

    registry = Registry(database)
    assert _names(registry, ModelQuery.parse("older tag:legacy org/old", min_tokens_per_s=12)) == ["old"]
    assert registry.search(ModelQuery(min_accuracy=0))[1] == 0  # a figure that is not a number is unknown
    assert registry.get("old").memory_bytes is None
