"""Datasets end to end: the service on SQLite and PostgreSQL, the old uploads migrated, `/datasets` through the
bot as the console and the chat platforms see it, the console itself, and the REST upload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from modelbay.adapters.api import create_app
from modelbay.bot import Actor, Dispatcher, Reply
from modelbay.config import Settings
from modelbay.engine.datasets.datasets import Datasets, owner_folder
from modelbay.engine.db.database import Database
from modelbay.engine.errors import DatasetNameTaken, DatasetNotFound, DatasetUnreadable, UploadRefused
from modelbay.runtime import Runtime
from tests.support.asgi import serve
from tests.support.chat import installed

ROOT = Path(__file__).resolve().parents[2]
ME = "console:me"
YOU = "slack:U2"


def _row(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


PAIRS = ("\n".join([_row(f"What is word{i}?", f"Word{i} means thing{i}.") for i in range(20)]
                   + ['{"messages": [', _row("Say it all.", "It all. " * 80)]) + "\n").encode()


@pytest.fixture
def datasets(settings: Settings, database: Database) -> Datasets:
    """The service over a fresh data folder, on each database."""
    return Datasets(settings, database)


def _stored(datasets: Datasets) -> list[str]:
    return sorted(p.name for p in datasets.root.iterdir() if p.is_file())


def test_the_same_bytes_twice_are_one_dataset_and_people_share_one_file(datasets: Datasets) -> None:
    first = datasets.add(ME, "pairs.jsonl", [PAIRS[:100], PAIRS[100:]], source="console")
    assert (first.rows, first.valid_rows, first.problems, first.kinds) == (22, 21, {"bad_json": 1}, {"chat": 21})
    assert first.sha256 == hashlib.sha256(PAIRS).hexdigest() and first.name == "pairs" and first.format == "chat"
    assert Path(first.path).read_bytes() == PAIRS
    again = datasets.add(ME, "copy-of-pairs.jsonl", [PAIRS], source="slack")
    assert again == first  # the same person, the same bytes: the same dataset, unchanged
    theirs = datasets.add(YOU, "pairs.jsonl", [PAIRS], source="slack")
    assert theirs.id != first.id and theirs.path == first.path and theirs.owner == YOU
    assert _stored(datasets) == [first.sha256]  # one file for both
    other = datasets.add(ME, "pairs.jsonl", [PAIRS + _row("One", "more").encode()], source="console")
    assert other.name == "pairs-2" and other.rows == 23
    with pytest.raises(DatasetNameTaken, match="already have a dataset named `pairs` \\(#"):
        datasets.add(ME, "x.jsonl", [_row("a", "b").encode()], source="console", name="pairs")
    assert _stored(datasets) == sorted([first.sha256, other.sha256])  # the refused file is not kept
    assert [d.id for d in datasets.list(ME)] == [other.id, first.id]
    assert {d.owner for d in datasets.list()} == {ME, YOU}
    assert datasets.get(str(first.id)) == first and datasets.get("pairs", owner=ME) == first
    assert datasets.get("pairs", owner=YOU) == theirs and datasets.get(f"#{other.id}") == other
    with pytest.raises(DatasetNotFound, match="No dataset `nope`"):
        datasets.get("nope")
    with pytest.raises(DatasetNotFound):
        datasets.get("99999999999999999999999")


def test_refused_files_leave_nothing_behind(datasets: Datasets, settings: Settings) -> None:
    with pytest.raises(UploadRefused, match="it is empty"):
        datasets.add(ME, "empty.jsonl", [b""], source="console")
    with pytest.raises(DatasetUnreadable, match="not the fields of a known format"):
        datasets.add(ME, "qa.csv", [b"q,a\nhi,hello\n"], source="console")
    with pytest.raises(DatasetUnreadable, match="it has no column `question` \\(mapped to prompt\\)"):
        datasets.add(ME, "qa.csv", [b"q,a\nhi,hello\n"], source="console", columns={"prompt": "question",
                                                                                     "completion": "a"})
    with pytest.raises(UploadRefused, match="datasets are .jsonl"):
        datasets.add(ME, "weights.bin", [b"x"], source="console")
    settings.upload_max_bytes = 10
    with pytest.raises(UploadRefused, match="larger than the limit"):
        Datasets(settings, datasets.db).add(ME, "big.jsonl", [b"x" * 6, b"x" * 6], source="console")
    assert datasets.list() == [] and _stored(datasets) == [] and not any((datasets.root / ".incoming").iterdir())


def test_a_format_or_column_map_given_again_reads_the_file_again(datasets: Datasets) -> None:
    data = b'{"text": "A doc.", "prompt": "Q", "completion": "A"}\n'
    first = datasets.add(ME, "mixed.jsonl", [data], source="console")
    assert (first.format, first.format_given, first.kinds) == ("completion", False, {"completion": 1})
    again = datasets.add(ME, "mixed.jsonl", [data], source="console", format="text")
    assert (again.id, again.format, again.format_given, again.kinds) == (first.id, "text", True, {"text": 1})
    assert [e.text for e in datasets.examples(first.id)] == ["A doc."]
    assert datasets.read(first.id).detected is False


def test_delete_and_forget_remove_rows_and_files_nobody_else_has(datasets: Datasets) -> None:
    mine = datasets.add(ME, "pairs.jsonl", [PAIRS], source="console")
    theirs = datasets.add(YOU, "pairs.jsonl", [PAIRS], source="slack")
    solo = datasets.add(ME, "solo.jsonl", [_row("a", "b").encode()], source="console")
    assert datasets.delete(mine.id) == mine
    assert Path(theirs.path).is_file()  # still someone's
    assert datasets.forget(ME) == 1 and not Path(solo.path).exists()
    assert [d.id for d in datasets.list()] == [theirs.id]
    assert datasets.forget(YOU) == 1 and _stored(datasets) == []


def test_split_and_examples_are_the_valid_rows_and_seeded(datasets: Datasets) -> None:
    record = datasets.add(ME, "pairs.jsonl", [PAIRS], source="console")
    held = datasets.add(ME, "held.jsonl", [(_row("x", "y") + "\n").encode()], source="console")
    examples = datasets.examples(record.id)
    assert len(examples) == 21 and [e.line for e in examples] == [*range(1, 21), 22]
    train, validation, overlap = datasets.split(record.id, validation=0.2, seed=5)
    assert (len(train), len(validation), overlap) == (17, 4, 0) and datasets.split(
        record.id, validation=0.2, seed=5) == (train, validation, 0)
    assert datasets.split(record.id, validation_ref=held.id) == (examples, datasets.examples(held.id), 0)
    report = datasets.report(record.id, validation=0.2, seed=5)
    assert (report.train_rows, report.validation_rows, report.validation_from) == (17, 4, "20% held out, seed 5")
    other = datasets.report(record.id, validation_ref="held")
    assert other.validation_from == f"dataset #{held.id} (held)" and other.validation_rows == 1


def _old_upload(settings: Settings, owner: str, upload_id: str, name: str, data: bytes, created: str) -> Path:
    """A file as the old uploads store kept it: HOME/uploads/<owner hash>/<id>_<name> and <id>.json."""
    folder = owner_folder(settings.home / "uploads", owner)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{upload_id}_{name}"
    path.write_bytes(data)
    (folder / f"{upload_id}.json").write_text(json.dumps({
        "id": upload_id, "owner": owner, "filename": name, "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "source": "slack", "created_at": created, "path": str(path)}))
    return path


def test_the_old_uploads_become_datasets_on_first_use(settings: Settings, database: Database) -> None:
    _old_upload(settings, YOU, "a1", "train.jsonl", PAIRS, "2026-11-20T10:00:00+00:00")
    _old_upload(settings, YOU, "a2", "more.csv", b"prompt,completion\nhi,hello\n", "2026-11-21T10:00:00+00:00")
    odd = _old_upload(settings, YOU, "a3", "notes.csv", b"when,what\nmonday,lunch\n", "2026-11-22T10:00:00+00:00")
    datasets = Datasets(settings, database)
    listed = datasets.list(YOU)
    assert [(d.name, d.source, d.created_at.day, d.rows) for d in listed] == [("more", "slack", 21, 1),
                                                                              ("train", "slack", 20, 22)]
    assert Path(listed[1].path).read_bytes() == PAIRS
    assert [p.name for p in odd.parent.iterdir()] and odd.is_file()  # no dataset: left where it was, logged
    assert not (odd.parent / "a1_train.jsonl").exists() and not (odd.parent / "a1.json").exists()
    assert Datasets(settings, database).list(YOU) == listed  # a later process migrates nothing twice
    assert datasets.forget(YOU) == 3 and not odd.parent.exists()


# -- through the bot ---------------------------------------------------------------------------------------------

CONSOLE = Actor("console", "me")
ALICE = Actor("slack", "U1", "alice")
BOB = Actor("discord", "42", "bob")


@pytest.fixture
def runtime(settings: Settings, database: Database, tiny_model: Path) -> Runtime:
    """A runtime on each database with the tiny model installed as `tiny-chat`; the console is admin."""
    settings.database_url = database.url
    settings.roles = {"admin": ["console:*"]}
    settings.default_role = "user"
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_model, "tiny-chat")
    yield runtime
    runtime.close()


@pytest.fixture
def run(runtime: Runtime):  # noqa: ANN201
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str, actor: Actor = CONSOLE) -> Reply:
        return asyncio.run(dispatcher.dispatch_line(line, actor))

    return run


def test_datasets_add_from_a_console_path_shows_the_card(run, runtime: Runtime, tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_bytes(PAIRS)
    card = run(f"/datasets add {tmp_path / 'pairs.jsonl'} model:tiny-chat max_length:64 validation:0.2 seed:1")
    text = card.plain()
    assert card.title == "Dataset #1 · pairs" and card.tone == "warning"
    assert "22 rows read from `pairs.jsonl`" in text and "21 valid, 1 with problems, 1 more left out by the drop " \
                                                          "policy. Train on 16, validate on 4." in text
    assert "line 21: not valid JSON" in text and "• longer than max_length: 1 (line 22)" in text
    assert "with tiny-chat's tokenizer and chat template" in text and "«Word0 means thing0.<|im_end|>»" in text
    [chart] = card.attachments
    assert chart.filename == "dataset-1-lengths.png" and chart.data.startswith(b"\x89PNG")
    assert card.buttons[0].command == "/train start dataset:1 model:tiny-chat"
    assert runtime.datasets.get(1).owner == "console:me" and runtime.datasets.get(1).source == "console"

    fails = run("/datasets info pairs model:tiny-chat policy:fail max_length:64")
    assert fails.tone == "error" and "⛔ Training would stop: line 22:" in fails.plain()
    assert [b.label for b in fails.buttons] == ["Preview rows"]
    preview = run("/datasets preview 1 rows:2 start:20").plain()
    assert "line 20 (chat)" in preview and "line 22 (chat)" in preview and "assistant: Word19 means thing19." in preview
    assert "line 21" not in preview
    missing = run(f"/datasets add {tmp_path / 'nope.jsonl'}")
    assert "`" in missing.text and "there is no such file here" in missing.text


def test_a_path_is_read_only_from_the_console_and_others_datasets_stay_private(run, runtime: Runtime,
                                                                              tmp_path: Path) -> None:
    (tmp_path / "secret.jsonl").write_bytes(PAIRS)
    refused = run(f"/datasets add {tmp_path / 'secret.jsonl'}", ALICE)
    assert refused.text == ("Adding a dataset from a path works only in the console. Send the file to ModelBay in "
                            "a direct message, or use Upload a dataset on its Home tab.")
    assert run("/datasets add", BOB).text == "Use `/datasets add` with the file as its attachment."
    assert runtime.datasets.list() == []

    record = runtime.datasets.add(ALICE.key, "mine.jsonl", [PAIRS], source="slack")
    assert "mine" in run("/datasets", ALICE).plain() and "mine" in run("/uploads", ALICE).plain()
    assert run("/datasets info 1", BOB).text == "No dataset `1`. `/datasets list` shows yours with their ids."
    assert run("/datasets delete mine", BOB).title == "Dataset not found"
    assert run("/datasets list all:true", BOB).title == "Not allowed"
    assert "slack:U1" in run("/datasets list all:true").plain()  # the console is admin here
    assert run("/datasets info 1").title == "Dataset #1 · mine"
    assert "`columns` must be field=column pairs" in run(f"/datasets add {tmp_path / 'secret.jsonl'} columns:oops").text

    assert "datasets: 1" in run("/privacy delete", ALICE).text
    assert runtime.datasets.list(ALICE.key) == [] and not Path(record.path).exists()


def test_datasets_add_in_the_console_prints_the_card_and_where_the_chart_is(tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_bytes(PAIRS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(MODELBAY_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), COLUMNS="160")
    result = subprocess.run([sys.executable, "-m", "modelbay", "console"],
                            input="/datasets add ./pairs.jsonl\n/datasets list\n", capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    chart = tmp_path / "home" / "files" / "dataset-1-lengths.png"
    assert "Dataset #1 · pairs" in out and "22 rows read" in out and "line 21: not valid JSON" in out
    assert f"attachment: {chart}" in out.replace("\n", "") and chart.read_bytes().startswith(b"\x89PNG")
    assert "/train start dataset:1" in out and "Datasets" in out and "21/22" in out


def test_rest_upload_list_and_report(runtime: Runtime, settings: Settings) -> None:
    settings.api_token = SecretStr("t0k3n")
    with serve(create_app(runtime)) as url, httpx.Client(base_url=url, headers={"Authorization": "Bearer t0k3n"},
                                                         timeout=60) as api:
        added = api.post("/api/training/datasets", files={"file": ("pairs.jsonl", PAIRS)},
                         data={"model": "tiny-chat", "max_length": "64", "policy": "truncate", "validation": "0.2"})
        assert added.status_code == 201, added.text
        report = added.json()
        assert report["dataset"]["id"] == 1 and report["dataset"]["owner"] == "api:token"
        assert "path" not in report["dataset"] and str(settings.home) not in added.text
        assert (report["rows"], report["valid"], report["truncated"], report["model"]) == (22, 21, 1, "tiny-chat")
        assert report["problems"][0]["first"][0] == {"line": 21, "reason": "bad_json", "fatal": False,
                                                     "message": "not valid JSON at column 15: Expecting value"}
        assert report["histogram"]["unit"] == "tokens" and report["ready"] is True
        assert report["train_rows"] + report["validation_rows"] == 21
        assert any(s["trained"] and "Word0 means thing0." in s["text"] for s in report["example"])

        again = api.post("/api/training/datasets", files={"file": ("other-name.jsonl", PAIRS)})
        assert again.status_code == 201 and again.json()["dataset"]["id"] == 1  # the same bytes, the same dataset
        assert [d["name"] for d in api.get("/api/training/datasets").json()["datasets"]] == ["pairs"]
        detail = api.get("/api/training/datasets/pairs", params={"validation": 0, "policy": "fail",
                                                                 "model": "tiny-chat", "max_length": 64})
        assert detail.status_code == 200 and detail.json()["fatal"]["line"] == 22
        assert detail.json()["validation_rows"] == 0 and detail.json()["ready"] is False

        refused = api.post("/api/training/datasets", files={"file": ("qa.csv", b"q,a\n1,2\n")},
                           data={"columns": "prompt=question"})
        assert refused.status_code == 422 and refused.json()["type"] == "DatasetUnreadable"
        assert api.get("/api/training/datasets/42").status_code == 404
        bad = api.post("/api/training/datasets", files={"file": ("x.jsonl", b"{}")}, data={"columns": "oops"})
        assert bad.status_code == 422 and "`columns` must be field=column pairs" in bad.json()["error"]
