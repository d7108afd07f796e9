"""Row formats: detection by fields, column maps, and each format's rows parsed into the normalised Example."""

from __future__ import annotations

import pytest

from modelbay.engine.datasets.examples import Example, Message
from modelbay.engine.datasets.formats import detect, parse, parse_columns, rename
from modelbay.engine.datasets.problems import Problem

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _turns(*pairs: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role, content) for role, content in pairs)  # type: ignore[arg-type]


def test_detection_takes_the_format_most_rows_have() -> None:
    rows = [CHAT, CHAT, {"prompt": "a", "completion": "b"}, {"unrelated": 1}]
    assert detect(rows) == "chat"
    assert detect([{"conversations": []}]) == "sharegpt"
    assert detect([{"instruction": "a", "output": "b", "input": ""}]) == "alpaca"
    assert detect([{"prompt": "a", "completion": "b"}]) == "completion"
    assert detect([{"text": "a"}]) == "text"
    assert detect([{"question": "a", "answer": "b"}]) is None


def test_chat_rows_become_messages_with_openai_roles_and_text_parts() -> None:
    row = {"messages": [{"role": "developer", "content": "Be brief."},
                        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}]},
                        {"role": "assistant", "content": "Hello.", "weight": 1}]}
    assert parse("chat", 3, row) == Example(3, messages=_turns(("system", "Be brief."), ("user", "Hi you"),
                                                               ("assistant", "Hello.")))


def test_sharegpt_maps_human_gpt_and_system() -> None:
    row = {"system": "Be kind.", "conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
                                                   {"from": "user", "value": "Q2"}, {"from": "model", "value": "A2"}]}
    assert parse("sharegpt", 1, row).messages == _turns(("system", "Be kind."), ("user", "Q1"), ("assistant", "A1"),
                                                        ("user", "Q2"), ("assistant", "A2"))


def test_alpaca_joins_instruction_and_input_and_keeps_system_and_history() -> None:
    row = {"instruction": "Translate.", "input": "chat", "output": "cat", "system": "You translate.",
           "history": [["Say hi.", "hi"]]}
    assert parse("alpaca", 2, row).messages == _turns(("system", "You translate."), ("user", "Say hi."),
                                                      ("assistant", "hi"), ("user", "Translate.\n\nchat"),
                                                      ("assistant", "cat"))
    assert parse("alpaca", 2, {"instruction": "Q", "output": "A", "input": None}).messages == _turns(
        ("user", "Q"), ("assistant", "A"))


def test_completion_and_text_rows() -> None:
    assert parse("completion", 1, {"prompt": "2+2=", "completion": "4"}) == Example(1, prompt="2+2=", completion="4")
    assert parse("text", 1, {"text": "A document."}) == Example(1, text="A document.")
    assert parse("text", 4, "A line of a text file.") == Example(4, text="A line of a text file.")
    assert parse("text", 4, "   ") == Problem(4, "empty_row", "the row is empty")


def test_a_column_map_renames_fields_first() -> None:
    assert parse_columns("prompt=question, completion = answer") == {"prompt": "question", "completion": "answer"}
    row = rename({"question": "Q", "answer": "A", "id": 7}, {"prompt": "question", "completion": "answer"})
    assert row == {"id": 7, "prompt": "Q", "completion": "A"}
    assert parse("completion", 2, {"question": "Q", "answer": "A"}, {"prompt": "question", "completion": "answer"}) \
        == Example(2, prompt="Q", completion="A")
    missing = parse("completion", 2, {"q": "Q", "answer": "A"}, {"prompt": "question", "completion": "answer"})
    assert missing == Problem(2, "missing_field", "no `question` (mapped to prompt) field for the completion format "
                                                  "(the row has `q`, `completion`); map columns with "
                                                  "columns:prompt=<column>")


@pytest.mark.parametrize("text, error", [
    ("prompt", "must be field=column pairs"),
    ("prompt=", "must be field=column pairs"),
    ("answer=completion", "names the field `answer`, which no format reads"),
])
def test_a_column_map_that_is_not_field_column_pairs_is_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_columns(text)


def test_csv_cells_holding_json_lists_of_messages_are_read() -> None:
    cell = '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]'
    assert parse("chat", 2, {"messages": cell}).messages == _turns(("user", "hi"), ("assistant", "yo"))


@pytest.mark.parametrize(("fmt", "row", "expected"), [
    # A top-level system prompt is not one of the list's items: problems name the list's own index.
    ("sharegpt", {"system": "S", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"},
                                                   {"from": "gpt", "value": "c"}]},
     "line 1: conversations[1] is user after user: turns must alternate user, assistant, user, … starting with the "
     "user"),
    ("sharegpt", {"system": "S", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " "}]},
     "line 1: conversations[1] (assistant) is empty"),
    ("chat", {"system": "S", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "b"},
                                          {"role": "assistant", "content": "c"}]},
     "line 1: messages[0] is a system message; only the first message may be one (the row's `system` field is "
     "another)"),
    # Alpaca has no messages: its history pairs and fields are named as the file has them.
    ("alpaca", {"instruction": "q", "output": "a", "history": [["h", ""]]}, "line 1: history[0][1] (assistant) is "
                                                                              "empty"),
])
def test_problems_name_the_place_in_the_row_as_the_file_has_it(fmt: str, row: dict, expected: str) -> None:
    assert str(parse(fmt, 1, row)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("fmt", "row"), [
    ("chat", {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "q"},
                           {"role": "assistant", "content": "a"}]}),
    ("sharegpt", {"conversations": [{"from": "system", "value": "  "}, {"from": "human", "value": "q"},
                                    {"from": "gpt", "value": "a"}]}),
    ("sharegpt", {"system": "", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}),
    ("alpaca", {"system": "", "instruction": "q", "input": "", "output": "a"}),
])
def test_an_empty_system_message_is_no_system_message_in_every_format(fmt: str, row: dict) -> None:
    # Exporters write `{"role": "system", "content": ""}` into every row: that is no prompt, not a broken row.
    expected = Example(4, messages=_turns(("user", "q"), ("assistant", "a")))
    assert parse(fmt, 4, row) == expected  # type: ignore[arg-type]
