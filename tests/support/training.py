"""A learnable made-up task for fine-tuning tests: every thing has a secret colour, asked in several phrasings.

The tiny chat model knows the words (fish, book, ...) and the answer form from its pre-training, but not the
mapping, which is made up: a fine-tune must learn it. The training rows ask in four phrasings; the held-out rows
ask in a fifth one the training never shows, so held-out loss and answers measure what was learnt, not copied.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["HELD_OUT", "PHRASINGS", "SECRET_COLORS", "dataset_bytes", "exact_matches", "held_out_rows",
           "training_rows", "write_dataset"]

SECRET_COLORS = {
    "fish": "blue", "book": "green", "car": "yellow", "bread": "white", "cup": "black", "ship": "red",
    "coin": "orange", "flower": "purple",
}
PHRASINGS = (
    "What is the secret color of the {}?",
    "Which secret color has the {}?",
    "Tell me the secret color of the {}.",
    "Secret color of the {}?",
)
HELD_OUT = "Name the secret color of the {}."


def _row(question: str, thing: str) -> dict:
    return {"messages": [{"role": "user", "content": question.format(thing)},
                         {"role": "assistant", "content": f"It is {SECRET_COLORS[thing]}."}]}


def training_rows() -> list[dict]:
    """Every thing in the four training phrasings (32 chat rows)."""
    return [_row(phrasing, thing) for thing in SECRET_COLORS for phrasing in PHRASINGS]


def held_out_rows() -> list[dict]:
    """Every thing in the held-out phrasing (8 chat rows)."""
    return [_row(HELD_OUT, thing) for thing in SECRET_COLORS]


def dataset_bytes(rows: list[dict]) -> bytes:
    """Rows as a chat JSONL file."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def write_dataset(path: Path, rows: list[dict]) -> Path:
    """Write rows as a chat JSONL file at path."""
    path.write_bytes(dataset_bytes(rows))
    return path


def exact_matches(answers: list[dict], key: str) -> int:
    """How many of a run's side-by-side answers (`base` or `tuned`) say exactly the reference answer."""
    return sum(answer[key].strip() == answer["reference"].strip() for answer in answers)
