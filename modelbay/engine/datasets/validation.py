"""Reading a whole dataset file into valid rows and problems: every row is one or the other, none is lost.

`validate` reads the file by its kind (`readers.py`), finds the row format from the fields of the first rows
unless one is named (`formats.detect`), parses every row (`formats.parse`) and counts rows whose content repeats
an earlier valid row. Rows read always equals valid rows plus rows with a problem.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelbay.engine.datasets.examples import Example
from modelbay.engine.datasets.formats import DETECT_ROWS, FIELDS, FORMATS, Format, detect, parse, rename
from modelbay.engine.datasets.problems import Problem
from modelbay.engine.datasets.readers import FileType, file_type, has_blank_separators, read
from modelbay.engine.errors import DatasetUnreadable

__all__ = ["Validation", "validate"]


@dataclass(frozen=True)
class Validation:
    """What reading a dataset file found: its format, every valid row, every problem, repeated rows."""

    file_type: FileType
    format: Format
    detected: bool  # the format was found from the rows (not named)
    rows: int  # rows read: valid + with a problem
    examples: tuple[Example, ...]
    problems: tuple[Problem, ...]
    duplicates: tuple[tuple[int, int], ...]  # (line, line of the earlier row it repeats), for every repeat

    @property
    def kinds(self) -> dict[str, int]:
        """Valid rows per kind (chat, completion, text)."""
        return dict(Counter(e.kind for e in self.examples))

    @property
    def problem_counts(self) -> dict[str, int]:
        """Rows left out per reason."""
        return dict(Counter(p.reason for p in self.problems))


def validate(path: Path, filename: str, *, format: Format | None = None,  # noqa: A002 - the option's name
             columns: Mapping[str, str] | None = None) -> Validation:
    """Read every row of the file at `path`, whose kind its `filename` gives, in the format named or detected.

    Raises:
        DatasetUnreadable: an unknown kind of file, a format that does not fit the kind of file, no rows at all,
            or (format not named) no row with the fields of a known format.
    """
    kind = file_type(filename)
    columns = dict(columns or {})
    if format is not None and format not in FORMATS:
        raise DatasetUnreadable(filename, f"there is no format `{format}` (formats: {', '.join(FORMATS)})")
    if kind == "txt":
        if format not in (None, "text", "text-blocks"):
            raise DatasetUnreadable(filename, "a .txt file holds plain text: use format:text (one document per "
                                              "line) or format:text-blocks (documents between blank lines)")
        fmt: Format = format or ("text-blocks" if has_blank_separators(path) else "text")
        rows = read(path, kind, blocks=fmt == "text-blocks", name=filename)
        detected = format is None
    else:
        rows = read(path, kind, name=filename)
        head = list(itertools.islice(rows, DETECT_ROWS))
        rows = itertools.chain(head, rows)
        detected = format is None
        if kind in ("csv", "tsv", "parquet") and columns:
            _check_columns(filename, head, columns)
        fmt = "text" if format == "text-blocks" else format or _detect(filename, head, columns)
    examples: list[Example] = []
    problems: list[Problem] = []
    first_seen: dict[object, int] = {}
    duplicates: list[tuple[int, int]] = []
    count = 0
    for line, row in rows:
        count += 1
        result = row if isinstance(row, Problem) else parse(fmt, line, row, columns)
        if isinstance(result, Problem):
            problems.append(result)
            continue
        examples.append(result)
        earlier = first_seen.setdefault(result.content, line)
        if earlier != line:
            duplicates.append((line, earlier))
    if count == 0:
        raise DatasetUnreadable(filename, "it has no rows")
    return Validation(kind, fmt, detected, count, tuple(examples), tuple(problems), tuple(duplicates))


def _check_columns(filename: str, head: list[tuple[int, object]], columns: Mapping[str, str]) -> None:
    """A table's rows all have its header's columns: a mapped column it lacks is named at once."""
    first = next((row for _, row in head if isinstance(row, Mapping)), None)
    if first is None:
        return
    missing = [f"`{theirs}` (mapped to {ours})" for ours, theirs in columns.items() if theirs not in first]
    if missing:
        has = ", ".join(f"`{k}`" for k in list(first)[:12])
        raise DatasetUnreadable(filename, f"it has no column {', '.join(missing)}; its columns are {has}")


def _detect(filename: str, head: list[tuple[int, object]], columns: Mapping[str, str]) -> Format:
    objects = [rename(row, columns) for _, row in head if isinstance(row, Mapping)]
    found = detect(objects)
    if found is not None:
        return found
    if not head:
        raise DatasetUnreadable(filename, "it has no rows")
    if not objects:
        problem = next(row for _, row in head if isinstance(row, Problem))
        raise DatasetUnreadable(filename, f"none of its first rows can be read ({problem})")
    holder = _holder(head)
    if holder is not None:
        raise DatasetUnreadable(filename, f"it is one JSON object holding its rows in `{holder}`: save that list "
                                          "itself (a JSON list of objects, or JSON Lines: one object per line)")
    fields = ", ".join(f"`{k}`" for k in list(objects[0])[:8]) or "no fields"
    shapes = "; ".join(f"{fmt}: {'/'.join(names)}" for fmt, names in FIELDS.items())
    raise DatasetUnreadable(filename, f"its rows have {fields}, not the fields of a known format ({shapes}); name "
                                      "the format with format:<name> and map columns with columns:<field>=<column>")


def _holder(head: list[tuple[int, object]]) -> str | None:
    """The field of a file's only row that holds a list of objects (`{"data": [{...}, ...]}`), if that is the file."""
    if len(head) != 1 or not isinstance(head[0][1], Mapping):
        return None
    return next((str(key) for key, value in head[0][1].items()
                 if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)), None)
