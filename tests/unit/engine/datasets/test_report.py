"""The report: problems by reason, the policy's drops and cuts, lengths, one example, the split, readiness."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from modelbay.engine.datasets.records import DatasetRecord
from modelbay.engine.datasets.report import build
from modelbay.engine.datasets.split import split
from modelbay.engine.datasets.validation import validate
from modelbay.engine.errors import DatasetInvalid


def _row(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


def _record(path: Path) -> DatasetRecord:
    return DatasetRecord(id=4, owner="console:me", name="pairs", filename=path.name, sha256="0" * 64,
                         size_bytes=path.stat().st_size, format="chat", format_given=False, source="console",
                         rows=0, valid_rows=0, duplicates=0, created_at=datetime.now(timezone.utc), path=str(path))


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    rows = [_row(f"What is word{i}?", f"Word{i} means thing{i}.") for i in range(18)]
    rows.insert(3, '{"messages": ')  # line 4: bad JSON
    rows.append(_row("Tell me everything. " * 40, "Short."))  # line 20: long question, short answer
    rows.append(_row("What is word0?", "Word0 means thing0."))  # line 21: repeats line 1
    rows.append(_row("Say it all.", "It all. " * 60))  # line 22: a short question, a long answer
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _report(path: Path, tokenizer: Any = None, **options: Any):  # noqa: ANN202
    read = validate(path, path.name)
    parts = split(read.examples, 0.1, 0)
    settings = {"max_length": 128, "policy": "drop", **options}
    return build(_record(path), read, parts, tokenizer=tokenizer, model="tiny" if tokenizer else None,
                 validation_from="10% held out, seed 0", seed=0, fraction=0.1, **settings)


def test_with_a_tokenizer_the_policy_drops_what_is_too_long_and_says_so(pairs: Path, tokenizer: Any) -> None:
    report = _report(pairs, tokenizer)
    assert (report.rows, report.valid, report.dropped, report.duplicates) == (22, 21, 2, 1)
    assert [(p.reason, p.count, p.lines) for p in report.problems] == [("bad_json", 1, (4,)),
                                                                       ("too_long", 2, (20, 22))]
    assert report.train_rows + report.validation_rows == 19 and report.validation_rows == 2
    assert report.histogram is not None and report.histogram.unit == "tokens" and report.histogram.over == 2
    assert report.histogram.rows == 21 and report.histogram.limit == 128  # dropped rows are measured too
    assert report.example_line == 1 and [s.text for s in report.example if s.trained] == ["Word0 means thing0."
                                                                                         "<|im_end|>"]
    assert report.ready and report.fatal is None and report.model == "tiny"
    report.check()


def test_truncate_keeps_the_long_row_cut_and_fail_makes_it_fatal(pairs: Path, tokenizer: Any) -> None:
    cut = _report(pairs, tokenizer, policy="truncate")
    # Line 20's answer comes after the 128th token: cut there, nothing of it is left to train on. Line 22 keeps
    # the start of its answer.
    assert cut.dropped == 1 and cut.truncated == 1
    assert [(p.reason, p.lines) for p in cut.problems] == [("bad_json", (4,)), ("no_trained_tokens", (20,))]
    assert cut.train_rows + cut.validation_rows == 20
    kept = _report(pairs, tokenizer, policy="truncate", max_length=1024)
    assert kept.dropped == 0 and kept.truncated == 0 and kept.histogram.over == 0  # type: ignore[union-attr]
    failed = _report(pairs, tokenizer, policy="fail")
    assert failed.fatal is not None and failed.fatal.line == 20 and not failed.ready
    with pytest.raises(DatasetInvalid, match="cannot be trained on at line 20: .* the policy is fail"):
        failed.check()


def test_without_a_tokenizer_lengths_are_characters_and_the_example_turn_by_turn(pairs: Path) -> None:
    report = _report(pairs)
    assert report.histogram is not None and report.histogram.unit == "characters" and report.histogram.limit is None
    assert report.dropped == 0 and report.train_rows == 19 and report.validation_rows == 2
    assert [(s.text, s.trained) for s in report.example] == [("user: What is word0?\nassistant: ", False),
                                                              ("Word0 means thing0.", True), ("\n", False)]


def test_a_dataset_with_no_valid_row_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_row("a", "b") + "\n")
    read = validate(path, path.name)
    nothing = build(_record(path), read, split([], 0.1, 0), max_length=128, policy="drop", validation_from="",
                    seed=0, fraction=0.1)
    with pytest.raises(DatasetInvalid, match="no row is left to train on"):
        nothing.check()


def test_a_dataset_the_model_leaves_nothing_of_says_why_in_its_refusal(pairs: Path, tokenizer: Any) -> None:
    # Chat rows measured with a base model's tokenizer (no chat template): every row is refused for one reason,
    # which only that model's report shows: the refusal names it, with its first row, and the model to ask about.
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    report = _report(pairs, bare)
    assert report.train_rows == 0
    with pytest.raises(DatasetInvalid) as caught:
        report.check()
    text = str(caught.value)
    assert "no row is left to train on: refused by the chat template: 21 rows, first line 1: the tokenizer has no " \
           "chat template" in text
    assert "`/datasets info 4 model:tiny max_length:128`" in text and "\n" not in text


def test_rows_too_long_for_a_run_point_to_the_card_measured_with_that_run_s_limit_and_policy(
        pairs: Path, tokenizer: Any) -> None:
    # /train start ... max_length:8 said "`/datasets info 1 model:tiny-chat` lists the problems": that card measures
    # against 2,048 tokens and shows no row too long.
    for policy in ("drop", "truncate"):
        report = _report(pairs, tokenizer, max_length=8, policy=policy)
        assert report.train_rows == 0
        with pytest.raises(DatasetInvalid) as caught:
            report.check()
        suffix = "" if policy == "drop" else " policy:truncate"
        assert f"`/datasets info 4 model:tiny max_length:8{suffix}`" in str(caught.value)


def test_a_validation_dataset_that_is_the_training_data_is_refused_and_overlaps_are_shown(pairs: Path) -> None:
    read = validate(pairs, pairs.name)
    same = build(_record(pairs), read, split(read.examples, 0.1, 0, read.examples), max_length=128,
                 policy="drop", validation_from="dataset #4 (pairs.jsonl)", seed=0, fraction=0.0)
    assert (same.train_rows, same.overlap) == (0, len(read.examples))
    with pytest.raises(DatasetInvalid, match=r"every row it would train on is also a validation row \(21\); "
                                             "choose another validation dataset"):
        same.check()
    part = build(_record(pairs), read, split(read.examples, 0.1, 0, read.examples[:5]), max_length=128,
                 policy="drop", validation_from="dataset #5", seed=0, fraction=0.0)
    # Lines 1-5 validate; line 21 repeats line 1, so it is left out of training too.
    assert (part.train_rows, part.validation_rows, part.overlap) == (15, 5, 6)
    part.check()
