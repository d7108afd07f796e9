"""The train/validation split: a seeded fraction of the rows held out, or every row of another dataset."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from modelbay.engine.datasets.examples import Example

__all__ = ["Split", "held_out", "split"]


class Split(NamedTuple):
    """The rows to train on and the rows to measure on, each in file order; `overlap` training rows were left
    out because a validation row says the same (a held-out loss measured on rows the model trained on means
    nothing)."""

    train: list[Example]
    validation: list[Example]
    overlap: int = 0


def held_out(rows: int, fraction: float) -> int:
    """How many of `rows` a fraction holds out: rounded, at least one when any is asked and two rows exist, and
    never every row (at least one row trains)."""
    if fraction <= 0 or rows < 2:
        return 0
    return min(rows - 1, max(1, round(rows * fraction)))


def split(examples: Sequence[Example], fraction: float, seed: int,
          validation: Sequence[Example] | None = None) -> Split:
    """Split rows by a seeded shuffle (the same rows and seed give the same split), or take a validation set.

    With `validation` given, every row trains and those rows validate; otherwise `held_out(len, fraction)` rows
    chosen by `random.Random(seed)` validate. Either way a training row with the same content as a validation row
    (a duplicate in the file, or a validation dataset that overlaps it) does not train, and is counted in
    `overlap`.
    """
    if validation is None:
        chosen = set(random.Random(seed).sample(range(len(examples)), held_out(len(examples), fraction)))
        validation = [e for i, e in enumerate(examples) if i in chosen]
        examples = [e for i, e in enumerate(examples) if i not in chosen]
    measured = {e.content for e in validation}
    train = [e for e in examples if e.content not in measured]
    return Split(train, list(validation), len(examples) - len(train))
