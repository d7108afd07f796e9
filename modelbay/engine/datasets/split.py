"""The train/validation split: a seeded fraction of the rows held out, or every row of another dataset."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from modelbay.engine.datasets.examples import Example

__all__ = ["Split", "held_out", "split"]


class Split(NamedTuple):
    """The rows to train on and the rows to measure on, each in file order."""

    train: list[Example]
    validation: list[Example]


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
    chosen by `random.Random(seed)` validate.
    """
    if validation is not None:
        return Split(list(examples), list(validation))
    chosen = set(random.Random(seed).sample(range(len(examples)), held_out(len(examples), fraction)))
    return Split([e for i, e in enumerate(examples) if i not in chosen],
                 [e for i, e in enumerate(examples) if i in chosen])
