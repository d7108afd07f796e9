"""The export's two formats, without services: CSV through the csv module (quoting), JSON Lines one object per line."""

from __future__ import annotations

import csv
import io
import json

from modelbay.engine.analytics.events import EXPORT_FIELDS, TrackedEvent, csv_lines, jsonl_lines

ROWS = [
    {field: None for field in EXPORT_FIELDS} | {"id": 1, "model": "tiny", "user_key": 'slack:T1:U1, "quoted"',
                                                 "total_ms": 12.5, "failed": False, "source": "modelbay"},
    {field: None for field in EXPORT_FIELDS} | {"id": 2, "model": "tiny\nchat", "total_ms": 8.0, "failed": True,
                                                 "source": "trackEvent", "external_session": "s-1"},
]


def test_csv_has_a_header_and_quotes_what_needs_it() -> None:
    text = "".join(csv_lines(ROWS))
    assert text.splitlines()[0] == ",".join(EXPORT_FIELDS)
    read = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["id"] for r in read] == ["1", "2"]
    assert read[0]["user_key"] == 'slack:T1:U1, "quoted"' and read[1]["model"] == "tiny\nchat"
    assert read[0]["ttft_ms"] == "" and read[1]["failed"] == "True" and read[1]["external_session"] == "s-1"


def test_csv_of_nothing_is_the_header() -> None:
    assert "".join(csv_lines([])) == ",".join(EXPORT_FIELDS) + "\r\n"


def test_jsonl_is_one_object_per_line() -> None:
    lines = list(jsonl_lines(ROWS))
    assert len(lines) == 2 and all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert [json.loads(line) for line in lines] == ROWS


def test_a_tracked_person_is_kept_apart_from_chat_people() -> None:
    event = TrackedEvent("tiny", "user123", "session456", "inference_complete", 50, 100, 1200.0)
    assert event.user_key == "external:user123"


def test_csv_neutralises_cells_a_spreadsheet_would_run_but_jsonl_keeps_them() -> None:
    """OWASP CSV injection: text starting with = + - @, a tab or a CR gets a leading ' in CSV only."""
    starts = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]
    rows = [{field: None for field in EXPORT_FIELDS} | {"id": i, "user_key": f"external:{text}",
                                                         "external_session": text, "total_ms": -1.5}
            for i, text in enumerate(starts)]
    read = list(csv.DictReader(io.StringIO("".join(csv_lines(rows)), newline="")))
    assert [r["external_session"] for r in read] == ["'" + text for text in starts]
    assert [r["user_key"] for r in read] == [f"external:{text}" for text in starts]  # only a cell's first character
    assert {r["total_ms"] for r in read} == {"-1.5"}  # numbers are numbers, not formulas
    assert [json.loads(line)["external_session"] for line in jsonl_lines(rows)] == starts
