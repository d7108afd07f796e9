"""Reading a dataset file row by row, whatever its kind, with the line each row starts on.

The kind of file comes from its name: `.jsonl` and `.json` (JSON rows, their layout read from the bytes, whatever
the name says: JSON Lines, one object per line, a comma after each allowed; a list of objects; or objects spread over
several lines each, as pretty-printers write them), `.csv`/`.tsv` (a header row, then one row per record; header is
line 1; the delimiter is read from the header: a semicolon CSV or a comma TSV is read too), `.parquet` (row
index + 1 as the line), `.txt` (plain text). `read` yields every row: `(line, fields)`, `(line, text)` for plain text,
or `(line, Problem)` for a row that cannot be read at all (not UTF-8, not JSON, the wrong number of CSV fields).
Nothing is skipped but blank lines at the very end of a file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from modelbay.engine.datasets.problems import Problem
from modelbay.engine.errors import DatasetUnreadable

__all__ = ["FileType", "SUFFIXES", "Row", "file_type", "has_blank_separators", "read"]

FileType = Literal["jsonl", "json", "csv", "tsv", "parquet", "txt"]
SUFFIXES: dict[str, FileType] = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                                 ".parquet": "parquet", ".txt": "txt"}
Row = tuple[int, "Mapping[str, Any] | str | Problem"]
PARQUET_BATCH = 1024  # rows per Parquet batch held in memory
_CSV_FIELD_LIMIT = 64 << 20  # characters in one CSV field (the csv module's default is 128 KiB)


def file_type(filename: str) -> FileType:
    """The kind of file a name says it is.

    Raises:
        DatasetUnreadable: the suffix is none of `SUFFIXES`.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetUnreadable(filename, f"datasets are {', '.join(SUFFIXES)} files")
    return SUFFIXES[suffix]


def read(path: Path, kind: FileType, *, blocks: bool = False, name: str | None = None) -> Iterator[Row]:
    """Every row of the file at `path`, read as `kind`; text files as blank-line separated blocks if `blocks`.

    `name` is the file's name as its owner knows it (the stored file is named by its hash), for errors.

    Raises:
        DatasetUnreadable: a Parquet file that pyarrow cannot open; a table whose header names a column twice.
    """
    name = name or path.name
    if kind in ("jsonl", "json"):
        return _json(path)
    if kind in ("csv", "tsv"):
        return _csv(path, kind, name)
    if kind == "parquet":
        return _parquet(path, name)
    return _text_blocks(path) if blocks else _text_lines(path)


def _lines(path: Path) -> Iterator[tuple[int, str | Problem]]:
    """Each line decoded (a UTF-8 BOM dropped), or a bad_encoding Problem; blank lines at the end left out."""
    blank: list[int] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield from ((n, "") for n in blank)
                blank = []
                yield number, Problem(number, "bad_encoding", f"byte {exc.start + 1} of the line is not UTF-8; "
                                                              "save the file as UTF-8")
                continue
            if not text.strip():
                blank.append(number)  # reported only if a row follows
                continue
            yield from ((n, "") for n in blank)
            blank = []
            yield number, text


def _jsonl(path: Path) -> Iterator[Row]:
    for number, text in _lines(path):
        if isinstance(text, Problem):
            yield number, text
        elif not text.strip():
            yield number, Problem(number, "empty_row", "the line is empty")
        else:
            yield number, _object(number, text)


def _object(number: int, text: str) -> Mapping[str, Any] | Problem:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        value = _without_comma(text)
        if value is None:
            return Problem(number, "bad_json", f"not valid JSON at column {exc.colno}: {_said(exc)}")
    if not isinstance(value, dict):
        return Problem(number, "bad_row", f"a JSON {_json_kind(value)}, expected an object with fields")
    return value


def _without_comma(text: str) -> Any:
    """A line's object written with a comma after it (a JSON list's rows with the brackets taken away), or None."""
    stripped = text.rstrip()
    if not stripped.endswith(","):
        return None
    try:
        return json.loads(stripped[:-1])
    except json.JSONDecodeError:
        return None


def _said(exc: json.JSONDecodeError) -> str:
    """The JSON parser's complaint, without its dangling "at" (the column is given apart)."""
    return exc.msg.removesuffix(" at").removesuffix(" starting")


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "true/false", type(None): "null"}.get(type(value), "number")


def _layout(path: Path) -> Literal["list", "lines", "objects"]:
    """How a .json or .jsonl file holds its rows, read from its first line whatever its name says: a JSON list
    (`[` first), JSON Lines (the first line is a whole JSON value), or objects spread over several lines each
    (pretty-printed, one after another)."""
    for _, text in _lines(path):
        if isinstance(text, Problem):
            return "lines"  # the line-by-line reader reports it
        first = text.lstrip()
        if first.startswith("["):
            return "list"
        if not first.startswith("{") or isinstance(_object(1, text), Mapping):
            return "lines"
        break
    else:
        return "lines"
    # The first line opens an object it does not close: pretty-printed objects if the first one parses, else JSON
    # Lines whose first line is broken (its other lines are read and the first reported).
    try:
        whole = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8")
        json.JSONDecoder().raw_decode(whole, _skip_space(whole, 0))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "lines"
    return "objects"


def _json(path: Path) -> Iterator[Row]:
    """Rows of a .json or .jsonl file in any of the layouts `_layout` tells apart, each at the line it starts on."""
    layout = _layout(path)
    if layout == "lines":
        yield from _jsonl(path)
        return
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = raw.count(b"\n", 0, exc.start) + 1
        yield number, Problem(number, "bad_encoding", "the file is not UTF-8 from this line on; save it as UTF-8")
        return
    start = _skip_space(text, 0)
    yield from _values(text, start + 1 if layout == "list" else start, "]" if layout == "list" else None)


def _values(text: str, pos: int, closing: str | None) -> Iterator[Row]:
    """The JSON values of `text` from `pos` on, separated by commas (and, without a `closing` bracket, by space
    alone), up to that bracket or the end; a value that is not an object is a bad_row. Text that is not JSON is a
    bad_json problem: in a list, reading stops there; between objects, it goes on at the next line starting with `{`
    (where a pretty-printer starts each object)."""
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def line_at(index: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, index)
        counted = index
        return line

    while True:
        pos = _skip_space(text, pos)
        if closing is None and pos >= len(text):
            return
        if closing is not None and text.startswith(closing, pos):
            after = _skip_space(text, pos + 1)
            if after < len(text):
                number = line_at(after)
                yield number, Problem(number, "bad_json", "there is more after the list's closing ]")
            return
        number = line_at(pos)
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            resume = text.find("\n{", pos) if closing is None else -1
            then = "reading goes on at the next line that starts with {" if resume >= 0 else \
                "the rest of the file could not be read"
            yield exc.lineno, Problem(exc.lineno, "bad_json", f"not valid JSON at column {exc.colno}: {_said(exc)}; "
                                                              f"{then}")
            if resume < 0:
                return
            pos = resume + 1
            continue
        yield number, value if isinstance(value, dict) else Problem(
            number, "bad_row", f"a JSON {_json_kind(value)}, expected an object with fields")
        pos = _skip_space(text, end)
        if text.startswith(",", pos):
            pos += 1
        elif closing is not None and not text.startswith(closing, pos):
            number = line_at(min(pos, len(text)))
            yield number, Problem(number, "bad_json", "not valid JSON: expected , or ] after the object; the rest "
                                                      "of the file could not be read")
            return


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


DELIMITERS = (",", ";", "\t", "|")  # what tables are written with: Excel's comma or, where the comma is the
# decimal point, its semicolon; tabs; pipes


def _delimiter(path: Path, default: str) -> str:
    """The delimiter a table's header line uses: the one its suffix says (`,` for .csv, tab for .tsv) when the
    header has it outside quotes, else the one of `DELIMITERS` it has most of (a semicolon CSV from Excel, a TSV
    named .csv); the default for a one-column header."""
    with path.open("rb") as f:
        header = f.readline().removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace")
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    if counts[default]:
        return default
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else default


def _csv(path: Path, kind: FileType, name: str) -> Iterator[Row]:
    csv.field_size_limit(max(csv.field_size_limit(), min(_CSV_FIELD_LIMIT, sys.maxsize)))
    what = kind.upper()
    with path.open("rb") as f:
        # Undecodable bytes become lone surrogates, found per row below, so one bad row does not stop the file.
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=_delimiter(path, "\t" if kind == "tsv" else ","))
        header: list[str] | None = None
        last = 0  # the line the previous record ended on
        blank: list[int] = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                number = last + 1
                last = reader.line_num
                yield number, Problem(number, "bad_row", f"not a valid {what} row: {exc}")
                continue
            number, last = last + 1, reader.line_num
            if header is None:
                header = [h.strip() for h in row]
                _check_header(header, name)
                continue
            if not any(cell.strip() for cell in row):
                blank.append(number)
                continue
            yield from ((n, Problem(n, "empty_row", "the row is empty")) for n in blank)
            blank = []
            if any(_undecodable(cell) for cell in row):
                yield number, Problem(number, "bad_encoding", "the row is not UTF-8; save the file as UTF-8")
            elif len(row) != len(header):
                yield number, Problem(number, "bad_row", f"the row has {len(row)} field{'s' * (len(row) != 1)} "
                                                         f"and the header {len(header)}")
            else:
                yield number, dict(zip(header, row))


def _check_header(header: list[str], name: str) -> None:
    """Refuse a header that names a column twice: one column's cells would silently stand for the other's.

    Raises:
        DatasetUnreadable: a name (not blank) appears twice.
    """
    seen: dict[str, int] = {}
    for i, column in enumerate(header, 1):
        if column and column in seen:
            raise DatasetUnreadable(name, f"its header names `{column[:40]}` twice (columns {seen[column]} and {i}): "
                                          "rename one")
        seen.setdefault(column, i)


def _undecodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parquet(path: Path, name: str) -> Iterator[Row]:
    import pyarrow.parquet as pq  # extra: ml

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a file that is no Parquet
        raise DatasetUnreadable(name, f"it is not a Parquet file pyarrow can read ({exc})") from None
    number = 0
    for batch in table.iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _text_lines(path: Path) -> Iterator[Row]:
    for number, text in _lines(path):
        if isinstance(text, Problem):
            yield number, text
        else:
            yield number, text if text.strip() else Problem(number, "empty_row", "the line is empty")


def has_blank_separators(path: Path) -> bool:
    """Whether a text file has a blank line between two lines of text (documents as blocks)."""
    seen_text = blank = False
    for _, text in _lines(path):
        if isinstance(text, Problem):
            continue
        if not text.strip():
            blank = seen_text
        elif blank:
            return True
        else:
            seen_text = True
    return False


def _text_blocks(path: Path) -> Iterator[Row]:
    start, block = 0, []
    for number, text in _lines(path):
        if isinstance(text, Problem):
            yield number, text
            continue
        if text.strip():
            start = start or number
            block.append(text)
        elif block:
            yield start, "\n".join(block)
            start, block = 0, []
    if block:
        yield start, "\n".join(block)
