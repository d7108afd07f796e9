"""Reading whole files: every row is valid or a problem with its line, in every kind of file (issue 14, section 4:
twenty malformed files each with its line-numbered message, an empty file, a one-row file, a CSV without the mapped
columns, roles that do not alternate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbay.engine.datasets.examples import Example, Message
from modelbay.engine.datasets.problems import REASONS
from modelbay.engine.datasets.validation import validate
from modelbay.engine.errors import DatasetUnreadable


def _chat(*turns: tuple[str, object]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})


GOOD = _chat(("user", "What color is the sky?"), ("assistant", "Blue."))
GOOD2 = _chat(("system", "Be brief."), ("user", "Hi."), ("assistant", "Hello."))


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# (file name, content, the one problem expected as "line N: message", its reason)
MALFORMED = [
    ("bad-json.jsonl", f'{GOOD}\n{{"messages": [}}\n{GOOD2}\n',
     "line 2: not valid JSON at column 15: Expecting value", "bad_json"),
    ("not-an-object.jsonl", f"{GOOD}\n[1, 2]\n", "line 2: a JSON list, expected an object with fields", "bad_row"),
    ("missing-field.jsonl", f'{GOOD}\n{GOOD2}\n{{"prompt": "x"}}\n',
     "line 3: no `messages` field for the chat format (the row has `prompt`); map columns with "
     "columns:messages=<column>", "missing_field"),
    ("messages-not-a-list.jsonl", f'{GOOD}\n{{"messages": 5}}\n',
     "line 2: messages is a number, expected a list of messages", "wrong_type"),
    ("unknown-role.jsonl", f'{GOOD}\n{_chat(("user", "Hi."), ("bot", "Hello."))}\n',
     "line 2: messages[1].role `bot` is not one of assistant, developer, system, user", "unknown_role"),
    ("user-after-user.jsonl", f'{GOOD}\n{_chat(("user", "a"), ("user", "b"), ("assistant", "c"))}\n',
     "line 2: messages[1] is user after user: turns must alternate user, assistant, user, … starting with the "
     "user", "not_alternating"),
    ("system-in-the-middle.jsonl",
     f'{_chat(("user", "a"), ("assistant", "b"), ("system", "c"), ("user", "d"), ("assistant", "e"))}\n{GOOD}\n',
     "line 1: messages[2] is a system message; only the first message may be one", "not_alternating"),
    ("assistant-first.jsonl", f'{GOOD}\n{GOOD2}\n{_chat(("assistant", "Hello."), ("user", "Hi."))}\n',
     "line 3: messages[0] is assistant first: turns must alternate user, assistant, user, … starting with the "
     "user", "not_alternating"),
    ("ends-with-the-user.jsonl", f'{GOOD}\n{_chat(("user", "a"), ("assistant", "b"), ("user", "c"))}\n',
     "line 2: the last message is from the user; a chat must end with the assistant's answer", "no_answer"),
    ("empty-answer.jsonl", f'{GOOD}\n{_chat(("user", "a"), ("assistant", "  "))}\n',
     "line 2: messages[1] (assistant) is empty", "empty_answer"),
    ("empty-question.jsonl", f'{_chat(("user", ""), ("assistant", "b"))}\n{GOOD}\n',
     "line 1: messages[0] (user) is empty", "empty_message"),
    ("message-without-content.jsonl",
     f'{GOOD}\n{{"messages": [{{"role": "user", "content": "a"}}, {{"role": "assistant"}}]}}\n',
     "line 2: messages[1] has no `content`", "missing_field"),
    ("message-not-an-object.jsonl", f'{GOOD}\n{{"messages": ["hi", "hello"]}}\n',
     "line 2: messages[0] is text, expected an object with role and content", "wrong_type"),
    ("image-part.jsonl",
     f'{GOOD}\n{_chat(("user", [{"type": "image_url", "image_url": {"url": "x"}}]), ("assistant", "A cat."))}\n',
     "line 2: messages[0].content has a part of type image_url; only text parts are read", "wrong_type"),
    ("blank-line.jsonl", f"{GOOD}\n\n{GOOD2}\n", "line 2: the line is empty", "empty_row"),
    ("latin-1.jsonl", GOOD.encode() + b"\n" + '{"messages": "caf\xe9"}'.encode("latin-1") + b"\n",
     "line 2: byte 18 of the line is not UTF-8; save the file as UTF-8", "bad_encoding"),
    ("sharegpt-unknown-from.jsonl",
     '{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}\n'
     '{"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}\n',
     "line 2: conversations[1].from `robot` is not one of assistant, bard, bing, chatgpt, gpt, human, model, "
     "system, user", "unknown_role"),
    ("alpaca-no-output.json",
     '[\n  {"instruction": "Add 2 and 2.", "input": "", "output": "4"},\n'
     '  {"instruction": "Add 3 and 3.", "input": "", "output": ""}\n]\n',
     "line 3: output is empty", "empty_answer"),
    ("completion-number.jsonl", '{"prompt": "2+2=", "completion": "4"}\n{"prompt": 2, "completion": "4"}\n',
     "line 2: prompt is a number, expected text", "wrong_type"),
    ("completion-null.jsonl", '{"prompt": "2+2=", "completion": "4"}\n{"prompt": "3+3=", "completion": null}\n',
     "line 2: completion is null, expected text", "wrong_type"),
    ("short-row.csv", "prompt,completion\nhi,hello\nlonely\nbye,goodbye\n",
     "line 3: the row has 1 field and the header 2", "bad_row"),
    ("broken-array.json", '[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c" "completion": "d"}\n]\n',
     "line 3: not valid JSON at column 18: Expecting ',' delimiter; the rest of the file could not be read",
     "bad_json"),
    ("empty-messages.jsonl", f'{GOOD}\n{{"messages": []}}\n', "line 2: messages is an empty list", "empty_row"),
    ("bad-history.jsonl",
     '{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b", "history": [["q"]]}\n',
     "line 2: history[0] is not a [question, answer] pair of texts", "wrong_type"),
]


@pytest.mark.parametrize("name, content, expected, reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_file_names_its_line_and_problem(tmp_path: Path, name: str, content: str, expected: str,
                                                        reason: str) -> None:
    read = validate(_write(tmp_path, name, content), name)
    [problem] = read.problems
    assert (str(problem), problem.reason) == (expected, reason)
    assert read.rows == len(read.examples) + 1  # nothing else left out, nothing lost
    assert problem.line not in {e.line for e in read.examples}


def test_twenty_or_more_malformed_files_cover_every_reason_reading_finds() -> None:
    token_reasons = {"template_refused", "too_long", "no_trained_tokens"}  # found by encoding: test_tokens.py
    assert len(MALFORMED) >= 20 and {m[3] for m in MALFORMED} == set(REASONS) - token_reasons


def test_an_empty_file_and_one_of_blank_lines_have_no_rows(tmp_path: Path) -> None:
    for name, content in (("empty.jsonl", ""), ("blank.jsonl", "\n\n  \n"), ("empty.csv", "prompt,completion\n"),
                          ("empty.json", "[]")):
        with pytest.raises(DatasetUnreadable, match="it has no rows"):
            validate(_write(tmp_path, name, content), name)


def test_a_file_of_one_row(tmp_path: Path) -> None:
    read = validate(_write(tmp_path, "one.jsonl", GOOD + "\n"), "one.jsonl")
    assert read.rows == 1 and read.examples == (Example(1, messages=(Message("user", "What color is the sky?"),
                                                                     Message("assistant", "Blue."))),)
    assert read.format == "chat" and read.detected and read.problems == ()


def test_a_csv_without_the_mapped_columns_names_them(tmp_path: Path) -> None:
    path = _write(tmp_path, "qa.csv", "q,a\nhi,hello\n")
    with pytest.raises(DatasetUnreadable) as refused:
        validate(path, "qa.csv", columns={"prompt": "question", "completion": "answer"})
    assert str(refused.value) == ("`qa.csv` cannot be read as a dataset: it has no column `question` (mapped to "
                                  "prompt), `answer` (mapped to completion); its columns are `q`, `a`.")
    read = validate(path, "qa.csv", columns={"prompt": "q", "completion": "a"})
    assert read.format == "completion" and read.examples == (Example(2, prompt="hi", completion="hello"),)


def test_a_csv_without_any_known_columns_says_how_to_map_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnreadable, match="its rows have `q`, `a`, not the fields of a known format .* columns:"):
        validate(_write(tmp_path, "qa.csv", "q,a\nhi,hello\n"), "qa.csv")


def test_csv_and_tsv_rows_are_numbered_from_the_header_and_quoted_newlines_kept(tmp_path: Path) -> None:
    read = validate(_write(tmp_path, "a.csv", 'instruction,output\n"two\nlines",a\n\nq,"b"\n'), "a.csv")
    assert [e.line for e in read.examples] == [2, 5]
    assert read.examples[0].messages[0].content == "two\nlines"
    assert [str(p) for p in read.problems] == ["line 4: the row is empty"]
    tsv = validate(_write(tmp_path, "a.tsv", "text\nfirst doc\nsecond doc\n"), "a.tsv")
    assert [(e.line, e.text) for e in tsv.examples] == [(2, "first doc"), (3, "second doc")]


def test_text_files_hold_a_document_per_line_or_per_block(tmp_path: Path) -> None:
    lines = validate(_write(tmp_path, "l.txt", "one\ntwo\nthree\n\n\n"), "l.txt")
    assert lines.format == "text" and [(e.line, e.text) for e in lines.examples] == [(1, "one"), (2, "two"),
                                                                                    (3, "three")]
    blocks = validate(_write(tmp_path, "b.txt", "para one\nstill one\n\n\npara two\n"), "b.txt")
    assert blocks.format == "text-blocks"
    assert [(e.line, e.text) for e in blocks.examples] == [(1, "para one\nstill one"), (5, "para two")]
    forced = validate(_write(tmp_path, "f.txt", "a\n\nb\n"), "f.txt", format="text")
    assert [str(p) for p in forced.problems] == ["line 2: the line is empty"]
    with pytest.raises(DatasetUnreadable, match="a .txt file holds plain text"):
        validate(tmp_path / "f.txt", "f.txt", format="chat")


def test_a_json_file_lists_rows_at_the_line_each_starts(tmp_path: Path) -> None:
    content = '[{"text": "a"},\n\n {"text":\n  "b"}, "c",\n {"text": "d"}]'
    read = validate(_write(tmp_path, "rows.json", content), "rows.json")
    assert [(e.line, e.text) for e in read.examples] == [(1, "a"), (3, "b"), (5, "d")]
    assert [str(p) for p in read.problems] == ["line 4: a JSON string, expected an object with fields"]
    jsonl = validate(_write(tmp_path, "lines.json", '{"text": "a"}\n{"text": "b"}\n'), "lines.json")
    assert jsonl.file_type == "json" and [e.text for e in jsonl.examples] == ["a", "b"]


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                   [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]]})
    pq.write_table(table, tmp_path / "chat.parquet")
    read = validate(tmp_path / "chat.parquet", "chat.parquet")
    assert read.format == "chat" and [e.line for e in read.examples] == [1]
    assert [str(p) for p in read.problems] == ["line 2: messages[1] is user after user: turns must alternate user, "
                                               "assistant, user, … starting with the user"]
    _write(tmp_path, "fake.parquet", "not parquet")
    with pytest.raises(DatasetUnreadable, match="not a Parquet file"):
        validate(tmp_path / "fake.parquet", "fake.parquet")
    # The stored file is named by its hash: errors name the file as its owner knows it.
    with pytest.raises(DatasetUnreadable, match="^`theirs.parquet` cannot be read"):
        validate(tmp_path / "fake.parquet", "theirs.parquet")


def test_duplicates_are_counted_with_the_line_they_repeat(tmp_path: Path) -> None:
    read = validate(_write(tmp_path, "d.jsonl", f"{GOOD}\n{GOOD2}\n{GOOD}\n{GOOD}\n"), "d.jsonl")
    assert read.duplicates == ((3, 1), (4, 1)) and len(read.examples) == 4


def test_a_named_format_overrides_detection_and_unknown_kinds_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.jsonl", '{"text": "a", "prompt": "p", "completion": "c"}\n')
    assert validate(path, "t.jsonl").format == "completion"
    assert validate(path, "t.jsonl", format="text").examples == (Example(1, text="a"),)
    with pytest.raises(DatasetUnreadable, match="datasets are .jsonl"):
        validate(path, "t.xlsx")
    with pytest.raises(DatasetUnreadable, match="there is no format `yaml`"):
        validate(path, "t.jsonl", format="yaml")  # type: ignore[arg-type]


def _pretty(*rows: dict) -> list[str]:
    return [json.dumps(row, indent=2) for row in rows]


A = {"prompt": "What is a?", "completion": "A letter."}
B = {"prompt": "What is b?", "completion": "Another one."}


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.json"])
@pytest.mark.parametrize(("layout", "content", "lines"), [
    # The layout is read from the bytes, not the name: JSON Lines, a list, or objects written one after another.
    ("a list", json.dumps([A, B]), [1, 1]),
    ("a list, one object a line", "[\n" + ",\n".join(json.dumps(r) for r in (A, B)) + "\n]\n", [2, 3]),
    ("a pretty-printed list", json.dumps([A, B], indent=2), [2, 6]),
    ("pretty-printed objects", "\n".join(_pretty(A, B)) + "\n", [1, 5]),
    ("one pretty-printed object", _pretty(A)[0], [1]),
    ("JSON Lines with a comma after each object", f"{json.dumps(A)},\n{json.dumps(B)},\n", [1, 2]),
])
def test_json_rows_are_read_whatever_their_layout_and_suffix(tmp_path: Path, name: str, layout: str, content: str,
                                                             lines: list[int]) -> None:
    read = validate(_write(tmp_path, name, "\ufeff" + content.replace("\n", "\r\n")), name)
    assert not read.problems, layout
    assert [(e.line, e.prompt) for e in read.examples] == list(zip(lines, ["What is a?", "What is b?"])), layout


def test_pretty_printed_objects_with_a_broken_one_lose_only_that_one(tmp_path: Path) -> None:
    content = "\n".join(_pretty(A)) + '\n{\n  "prompt": "x",\n  "completion" "y"\n}\n' + _pretty(B)[0]
    read = validate(_write(tmp_path, "rows.jsonl", content), "rows.jsonl")
    assert [e.line for e in read.examples] == [1, 9] and read.rows == 3
    assert [str(p) for p in read.problems] == [
        "line 7: not valid JSON at column 16: Expecting ':' delimiter; reading goes on at the next line that starts "
        "with {"]


def test_json_lines_with_a_broken_first_line_keep_the_others(tmp_path: Path) -> None:
    content = '{"prompt": "x", "completion":\n' + "\n".join(json.dumps(r) for r in (A, B)) + "\n"
    read = validate(_write(tmp_path, "rows.jsonl", content), "rows.jsonl")
    assert [e.line for e in read.examples] == [2, 3]
    assert [str(p) for p in read.problems] == ["line 1: not valid JSON at column 30: Expecting value"]


def test_a_json_object_holding_the_rows_in_a_field_says_to_save_the_list(tmp_path: Path) -> None:
    path = _write(tmp_path, "wrapped.json", json.dumps({"version": 2, "data": [A, B]}, indent=2))
    with pytest.raises(DatasetUnreadable, match="it is one JSON object holding its rows in `data`: save that list "
                                                "itself"):
        validate(path, "wrapped.json")


@pytest.mark.parametrize(("name", "content"), [
    ("semicolons.csv", 'prompt;completion\r\n"Two\nlines; one cell";"A, b"\r\nq;a\r\n'),  # Excel in most of Europe
    ("pipes.csv", 'prompt|completion\n"Two\nlines| one cell"|"A, b"\nq|a\n'),
    ("tabs.csv", 'prompt\tcompletion\n"Two\nlines\t one cell"\t"A, b"\nq\ta\n'),
    ("commas.tsv", 'prompt,completion\n"Two\nlines, one cell","A, b"\nq,a\n'),
])
def test_a_table_s_delimiter_is_read_from_its_header(tmp_path: Path, name: str, content: str) -> None:
    read = validate(_write(tmp_path, name, "\ufeff" + content), name)
    assert not read.problems and read.format == "completion"
    assert [(e.line, e.prompt) for e in read.examples][1] == (4, "q")
    assert read.examples[0].prompt.startswith("Two\nlines") and read.examples[0].prompt.endswith(" one cell")


def test_a_header_naming_a_column_twice_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = _write(tmp_path, "twice.csv", "prompt,completion,prompt,,\nfirst,answer,second,,\n")
    with pytest.raises(DatasetUnreadable, match="^`mine.csv` .* its header names `prompt` twice \\(columns 1 and 3\\): "
                                                "rename one"):
        validate(path, "mine.csv")
