"""Row formats: which one a file's rows are in (detected from their fields, or named), and each row parsed.

A reader (`readers.py`) gives each row as a mapping of fields (a JSON object, a CSV row, a Parquet row) or, for
plain text files, as a string. `parse` turns one into an `Example`, or into a `Problem` naming the line and what to
fix. The formats, with the fields they read:

- `chat`: `messages`, a list of `{"role", "content"}` (OpenAI style; `developer` is read as `system`; a content
  given as a list of `{"type": "text", "text"}` parts is joined)
- `sharegpt`: `conversations`, a list of `{"from", "value"}` (`human` -> user, `gpt` -> assistant, `system`),
  with an optional top-level `system`
- `alpaca`: `instruction`, optional `input` (joined to the instruction by a blank line), `output`, optional
  `system` and `history` (earlier `[question, answer]` pairs), as LLaMA-Factory reads it
- `completion`: `prompt` and `completion` (no chat template; the prompt is masked)
- `text`: `text` in a JSON/CSV/Parquet row, or a plain text file with one document per line
- `text-blocks`: a plain text file whose documents are separated by blank lines

A column map (`columns`, our field -> the file's column, e.g. `{"prompt": "question"}`) renames fields first.
A chat is accepted when it has at most one system message, first; then user and assistant turns alternating,
starting with the user and ending with the assistant; no message empty (an empty system message is left out: it is
no system prompt, as an empty `system` field is).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from modelbay.engine.datasets.examples import Example, Message, Role
from modelbay.engine.datasets.problems import Problem

__all__ = ["FIELDS", "FORMATS", "Format", "detect", "parse", "parse_columns", "rename"]

Format = Literal["chat", "sharegpt", "alpaca", "completion", "text", "text-blocks"]
FORMATS: tuple[Format, ...] = ("chat", "sharegpt", "alpaca", "completion", "text", "text-blocks")

# The fields each format needs, in the order detection tries them.
FIELDS: dict[Format, tuple[str, ...]] = {
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "completion": ("prompt", "completion"),
    "text": ("text",),
}
DETECT_ROWS = 200  # rows detection looks at: the format most of them have wins

_CHAT_ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SHAREGPT_ROLES: dict[str, Role] = {
    "system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "model": "assistant", "chatgpt": "assistant", "bard": "assistant", "bing": "assistant",
}


def parse_columns(text: str) -> dict[str, str]:
    """Read a column map written `prompt=question,completion=answer` (our field = the file's column).

    Raises:
        ValueError: a pair is not `field=column`, or names a field no format reads.
    """
    known = {f for fields in FIELDS.values() for f in fields} | {"input", "system", "history"}
    columns: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        ours, sep, theirs = (s.strip() for s in pair.partition("="))
        if not sep or not ours or not theirs:
            raise ValueError("must be field=column pairs, comma separated (e.g. prompt=question,completion=answer)")
        if ours not in known:
            raise ValueError(f"names the field `{ours[:40]}`, which no format reads ({', '.join(sorted(known))})")
        columns[ours] = theirs
    return columns


def rename(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """The row with the mapped columns under our field names (a column the row lacks stays missing)."""
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        out.pop(ours, None)
        if theirs in row:
            out[ours] = row[theirs]
    return out


def _fits(row: Mapping[str, Any]) -> Format | None:
    return next((fmt for fmt, fields in FIELDS.items() if all(f in row for f in fields)), None)


def detect(rows: Iterable[Mapping[str, Any]]) -> Format | None:
    """The format most of the first rows have (by their fields), or None when none has a known one."""
    votes = Counter(fmt for row in rows if (fmt := _fits(row)) is not None)
    return votes.most_common(1)[0][0] if votes else None


def parse(fmt: Format, line: int, row: Mapping[str, Any] | str, columns: Mapping[str, str] | None = None
          ) -> Example | Problem:
    """One row as an Example of the format, or the Problem that keeps it out."""
    if isinstance(row, str):  # a plain text file's document
        return Example(line, text=row) if row.strip() else Problem(line, "empty_row", "the row is empty")
    row = rename(row, columns) if columns else dict(row)
    missing = [f for f in FIELDS["text" if fmt == "text-blocks" else fmt] if f not in row]
    if missing:
        return Problem(line, "missing_field", _missing(fmt, missing, row, columns or {}))
    if fmt == "chat":
        return _chat(line, row)
    if fmt == "sharegpt":
        return _sharegpt(line, row)
    if fmt == "alpaca":
        return _alpaca(line, row)
    if fmt == "completion":
        return _completion(line, row)
    return _text(line, row)


def _missing(fmt: Format, missing: list[str], row: Mapping[str, Any], columns: Mapping[str, str]) -> str:
    names = ", ".join(f"`{columns[f]}` (mapped to {f})" if f in columns else f"`{f}`" for f in missing)
    has = ", ".join(f"`{k}`" for k in list(row)[:8]) or "none"
    return f"no {names} field for the {fmt} format (the row has {has}); map columns with columns:{missing[0]}=<column>"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _string(value: Any, where: str, line: int) -> str | Problem:
    """Text content, accepting OpenAI's list of text parts; anything else is a wrong type."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(p, Mapping) for p in value):
        kinds = {str(p.get("type")) for p in value}
        if kinds == {"text"} and all(isinstance(p.get("text"), str) for p in value):
            return "".join(p["text"] for p in value)
        other = sorted(kinds - {"text"})
        what = f"a part of type {other[0]}" if other else "a malformed text part"
        return Problem(line, "wrong_type", f"{where} has {what}; only text parts are read")
    return Problem(line, "wrong_type", f"{where} is {_kind(value)}, expected text")


def _turns(line: int, turns: list[tuple[str, Message]], where: str) -> Example | Problem:
    """Check the shape of a chat: one leading system message at most, then user/assistant alternating.

    Each turn comes with the place in the row it was read from (`messages[2]`, `history[0][1]`, `system`), which is
    what a problem names: a top-level system prompt or Alpaca's history shift no index.
    """
    if not turns:
        return Problem(line, "empty_row", f"{where} is an empty list")
    for label, turn in turns:
        if not turn.content.strip():
            if turn.role == "assistant":
                return Problem(line, "empty_answer", f"{label} (assistant) is empty")
            return Problem(line, "empty_message", f"{label} ({turn.role}) is empty")
    start = 1 if turns[0][1].role == "system" else 0
    expected: Role = "user"
    for i, (label, turn) in enumerate(turns[start:], start):
        if turn.role == "system":
            other = " (the row's `system` field is another)" if turns[0][0] == "system" else ""
            return Problem(line, "not_alternating", f"{label} is a system message; only the first message may be "
                                                    f"one{other}")
        if turn.role != expected:
            after = f"after {turns[i - 1][1].role}" if i > start else "first"
            return Problem(line, "not_alternating", f"{label} is {turn.role} {after}: turns must alternate "
                                                    "user, assistant, user, … starting with the user")
        expected = "assistant" if expected == "user" else "user"
    last = turns[-1][1].role
    if last != "assistant":
        said = "the user" if last == "user" else "a system message only"
        return Problem(line, "no_answer", f"the last message is from {said}; a chat must end with the assistant's "
                                          "answer")
    return Example(line, messages=tuple(turn for _, turn in turns))


def _messages(line: int, value: Any, where: str, role_key: str, content_key: str, roles: Mapping[str, Role],
              system: Any = None) -> Example | Problem:
    if isinstance(value, str):
        try:  # a CSV cell or a string column holding the JSON list
            value = json.loads(value)
        except ValueError:
            return Problem(line, "wrong_type", f"{where} is text that is not a JSON list of messages")
    if not isinstance(value, (list, tuple)):
        return Problem(line, "wrong_type", f"{where} is {_kind(value)}, expected a list of messages")
    turns: list[tuple[str, Message]] = []
    if system is not None:
        text = _string(system, "system", line)
        if isinstance(text, Problem):
            return text
        if text.strip():
            turns.append(("system", Message("system", text)))
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            return Problem(line, "wrong_type", f"{where}[{i}] is {_kind(item)}, expected an object with "
                                               f"{role_key} and {content_key}")
        # ShareGPT files written by other tools use role/content too.
        keys = (role_key, content_key) if role_key in item or "role" not in item else ("role", "content")
        for key in keys:
            if key not in item:
                return Problem(line, "missing_field", f"{where}[{i}] has no `{key}`")
        raw_role = item[keys[0]]
        if not isinstance(raw_role, str):
            return Problem(line, "wrong_type", f"{where}[{i}].{keys[0]} is {_kind(raw_role)}, expected text")
        role = roles.get(raw_role.strip().lower())
        if role is None:
            known = ", ".join(sorted(set(roles)))
            return Problem(line, "unknown_role", f"{where}[{i}].{keys[0]} `{raw_role[:40]}` is not one of {known}")
        content = _string(item[keys[1]], f"{where}[{i}].{keys[1]}", line)
        if isinstance(content, Problem):
            return content
        if role == "system" and not content.strip():
            continue  # an empty system prompt (exporters write one into every row) is no system prompt
        turns.append((f"{where}[{i}]", Message(role, content)))
    return _turns(line, turns, where)


def _chat(line: int, row: Mapping[str, Any]) -> Example | Problem:
    return _messages(line, row["messages"], "messages", "role", "content", _CHAT_ROLES, row.get("system"))


def _sharegpt(line: int, row: Mapping[str, Any]) -> Example | Problem:
    return _messages(line, row["conversations"], "conversations", "from", "value", _SHAREGPT_ROLES,
                     row.get("system"))


def _fields(line: int, row: Mapping[str, Any], names: Iterable[str]) -> dict[str, str] | Problem:
    """The named fields as text: missing or null optional ones read as empty."""
    out: dict[str, str] = {}
    for name in names:
        value = row.get(name)
        if value is None and name not in FIELDS["alpaca"] + FIELDS["completion"]:
            out[name] = ""
            continue
        text = _string(value, name, line)
        if isinstance(text, Problem):
            return text
        out[name] = text
    return out


def _alpaca(line: int, row: Mapping[str, Any]) -> Example | Problem:
    got = _fields(line, row, ("instruction", "input", "output", "system"))
    if isinstance(got, Problem):
        return got
    question = "\n\n".join(part for part in (got["instruction"], got["input"]) if part.strip())
    turns = [("system", Message("system", got["system"]))] if got["system"].strip() else []
    history = row.get("history") or []
    if not isinstance(history, (list, tuple)):
        return Problem(line, "wrong_type", f"history is {_kind(history)}, expected a list of [question, answer]")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            return Problem(line, "wrong_type", f"history[{i}] is not a [question, answer] pair of texts")
        turns += [(f"history[{i}][0]", Message("user", pair[0])),
                  (f"history[{i}][1]", Message("assistant", pair[1]))]
    if not question.strip():
        return Problem(line, "empty_message", "instruction and input are both empty")
    if not got["output"].strip():
        return Problem(line, "empty_answer", "output is empty")
    return _turns(line, [*turns, ("instruction", Message("user", question)),
                         ("output", Message("assistant", got["output"]))], "messages")


def _completion(line: int, row: Mapping[str, Any]) -> Example | Problem:
    got = _fields(line, row, ("prompt", "completion"))
    if isinstance(got, Problem):
        return got
    if not got["completion"].strip():
        return Problem(line, "empty_answer", "completion is empty")
    return Example(line, prompt=got["prompt"], completion=got["completion"])


def _text(line: int, row: Mapping[str, Any]) -> Example | Problem:
    text = _string(row["text"], "text", line)
    if isinstance(text, Problem):
        return text
    return Example(line, text=text) if text.strip() else Problem(line, "empty_row", "text is empty")
