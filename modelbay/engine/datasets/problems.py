"""What can be wrong with a row, by reason: every row a reader or the token policy leaves out is one `Problem`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["REASONS", "Problem", "Reason"]

Reason = Literal[
    "bad_encoding", "bad_json", "bad_row", "empty_row", "missing_field", "wrong_type", "unknown_role",
    "empty_message", "empty_answer", "not_alternating", "no_answer", "template_refused", "too_long",
    "no_trained_tokens",
]

# Each reason's title, in the order reports list them.
REASONS: dict[Reason, str] = {
    "bad_encoding": "not UTF-8 text",
    "bad_json": "bad JSON",
    "bad_row": "malformed row",
    "empty_row": "empty row",
    "missing_field": "missing field",
    "wrong_type": "wrong type",
    "unknown_role": "unknown role",
    "empty_message": "empty message",
    "empty_answer": "empty answer",
    "not_alternating": "roles do not alternate",
    "no_answer": "no answer to train on",
    "template_refused": "refused by the chat template",
    "too_long": "longer than max_length",
    "no_trained_tokens": "no token left to train on",
}


@dataclass(frozen=True)
class Problem:
    """Why one row is left out: its line, a reason from `REASONS` and one sentence naming what to fix.

    `fatal` marks a problem that stops training altogether (an over-long row under the `fail` policy).
    """

    line: int
    reason: Reason
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"
