"""The dataset card: what a report looks like in chat (summary, fields, problems, bars, example, buttons)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from modelbay.bot.commands.datasets import render
from modelbay.bot.reply import Attachment
from modelbay.engine.datasets.records import DatasetRecord, DatasetReport
from modelbay.engine.datasets.report import build
from modelbay.engine.datasets.split import split
from modelbay.engine.datasets.tokens import load_tokenizer
from modelbay.engine.datasets.validation import validate
from tests.support.tinymodel import TinyModelSpec, cached_tiny_model


def _row(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(cached_tiny_model(TinyModelSpec()))


def _report(tmp_path: Path, lines: list[str], tokenizer: Any = None, **options: Any) -> DatasetReport:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    read = validate(path, path.name)
    record = DatasetRecord(id=9, owner="console:me", name="pairs", filename="pairs.jsonl", sha256="ab" * 32,
                           size_bytes=path.stat().st_size, format=read.format, format_given=False, source="console",
                           rows=read.rows, valid_rows=len(read.examples), duplicates=0,
                           created_at=datetime.now(timezone.utc), path=str(path))
    settings = {"max_length": 64, "policy": "drop", **options}
    return build(record, read, split(read.examples, 0.25, 3), tokenizer=tokenizer,
                 model="tiny-chat" if tokenizer else None, validation_from="25% held out, seed 3", seed=3,
                 fraction=0.25, **settings)


def test_a_card_with_problems_lengths_an_example_and_the_train_button(tmp_path: Path, tokenizer: Any) -> None:
    lines = [_row(f"What is word{i}?", f"Word{i} means thing{i}.") for i in range(8)]
    lines[2] = '{"messages": ['
    lines.append(_row("Go on " * 30, "Done."))
    chart = Attachment("dataset-9-lengths.png", b"\x89PNG", "image/png")
    reply = render(_report(tmp_path, lines, tokenizer), chart)
    text = reply.plain()
    assert reply.title == "Dataset #9 · pairs" and reply.tone == "warning" and reply.attachments == [chart]
    assert "9 rows read from `pairs.jsonl`" in text and "8 valid, 1 with problems, 1 more left out by the drop " \
                                                          "policy. Train on 5, validate on 2." in text
    assert "• bad JSON: 1 (line 3)" in text and "line 3: not valid JSON at column 15: Expecting value" in text
    assert "• longer than max_length: 1 (line 9)" in text
    assert "Lengths** (tokens, with tiny-chat's tokenizer and chat template)" in text and "│" in text
    assert "«Word0 means thing0.<|im_end|>»" in text and "<|im_start|>user\nWhat is word0?" in text
    fields = {f.name: f.value for f in reply.fields}
    assert fields["Format"] == "chat JSONL (detected)" and fields["Kinds"] == "chat 8"
    assert fields["Split"] == "train 5 · validation 2 (25% held out, seed 3)"
    assert fields["Policy"] == "drop rows over 64 tokens: 1 dropped"
    assert [(b.label, b.command) for b in reply.buttons] == [
        ("Train on this", "/train start dataset:9 model:tiny-chat"), ("Preview rows", "/datasets preview 9")]


def test_without_a_model_lengths_are_characters_and_the_button_names_only_the_dataset(tmp_path: Path) -> None:
    reply = render(_report(tmp_path, [_row("a", "b"), _row("c", "d")]))
    text = reply.plain()
    assert reply.tone == "success" and "Lengths** (characters; add `model:<base>` to count tokens)" in text
    assert "user: a\nassistant: «b»\n" in text
    assert reply.buttons[0].command == "/train start dataset:9"
    assert "applied once a `model:` counts tokens" in {f.name: f.value for f in reply.fields}["Policy"]
    assert "`/datasets info 9 model:<base>` counts tokens" in (reply.footer or "")


def test_a_fatal_row_or_nothing_to_train_on_has_no_train_button(tmp_path: Path, tokenizer: Any) -> None:
    lines = [_row("a", "b"), _row("Go on " * 30, "Done.")]
    reply = render(_report(tmp_path, lines, tokenizer, policy="fail"))
    assert reply.tone == "error" and [b.label for b in reply.buttons] == ["Preview rows"]
    assert "⛔ Training would stop: line 2:" in reply.plain()
    assert "fail on a row over 64 tokens: 1 such row" in {f.name: f.value for f in reply.fields}["Policy"]


def test_text_that_would_close_the_code_block_is_defused(tmp_path: Path) -> None:
    reply = render(_report(tmp_path, [_row("Show ``` fences", "```python\nx\n```")]))
    example = reply.text.split("**Example**", 1)[1]
    assert example.count("```") == 2 and "ˋˋˋpython" in example
