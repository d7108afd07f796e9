"""The shipped catalog: it validates, covers every category, and loads into the registry once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from modelbay.engine.catalog.curated import load_catalog
from modelbay.engine.db.database import Database
from modelbay.engine.errors import CatalogInvalid, ModelNotFound
from modelbay.engine.catalog.registry import Registry


def test_shipped_catalog_is_valid_and_covers_every_category() -> None:
    entries = load_catalog()
    categories = Counter(e.category for e in entries)
    assert set(categories) == {"chat", "code", "creative", "analysis", "embedding", "domain"}
    assert all(count >= 2 for count in categories.values())
    assert len({e.name for e in entries}) == len(entries)
    assert len({e.repo_id.lower() for e in entries}) == len(entries)
    for entry in entries:
        assert entry.parameter_count and entry.license and entry.pipeline_tag, entry.name
    # The security-relevant flags are carried, not defaulted away.
    assert any(e.trust_remote_code for e in entries)
    assert any(e.gated for e in entries)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("name: Bad Name\n    display_name: x\n    repo_id: a/b\n    category: chat",
         "Catalog entry `Bad Name` is invalid: name: Value error, name must be lowercase"),
        ("name: ok\n    display_name: x\n    repo_id: ../etc\n    category: chat",
         "Catalog entry `ok` is invalid: repo_id: Value error, repo_id must look like owner/name"),
        ("name: ok\n    display_name: x\n    repo_id: a/b\n    category: music",
         "Catalog entry `ok` is invalid: category: Input should be"),
        ("name: ok\n    display_name: x\n    repo_id: a/b\n    category: chat\n    color: red",
         "Catalog entry `ok` is invalid: color: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_entry_is_named(tmp_path: Path, entry: str, problem: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(f"version: 1\nmodels:\n  - {entry}\n")
    with pytest.raises(CatalogInvalid) as caught:
        load_catalog(path)
    assert str(caught.value).startswith(problem)


def test_sync_is_idempotent_and_lookups_work(database: Database) -> None:
    registry = Registry(database)
    entries = load_catalog()
    registry.sync_catalog(entries)
    registry.sync_catalog(entries)
    models, total = registry.list_models(limit=100)
    assert total == len(entries) == len(models)

    chat, chat_total = registry.list_models(category="chat", limit=2)
    assert len(chat) == 2 and chat_total == sum(e.category == "chat" for e in entries)
    assert registry.list_models(installed=True) == ([], 0)

    by_name = registry.get("qwen2.5-0.5b-instruct")
    assert registry.get("QWEN/qwen2.5-0.5b-INSTRUCT").id == by_name.id  # repo ids, any case
    assert by_name.parameter_count == 494032768 and by_name.license == "apache-2.0"

    with pytest.raises(ModelNotFound) as caught:
        registry.get("qwen2.5-0.5b")
    assert caught.value.suggestions[0] == "qwen2.5-0.5b-instruct"
