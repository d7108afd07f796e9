"""Which variant a person gets: a deterministic hash of (experiment, person), the same in every process and release.

sha256 of "<experiment name>\\x00<person key>", its first 8 bytes read as an integer over 2^64, is a position in
[0, 1); the variant is the first whose cumulative share of the weights passes it. Python's hash() is salted per
process and would move people between variants, so it is never used. The logged exposure, not the hash, is what
keeps a person's variant once assigned: changing the weights later moves nobody already exposed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import accumulate

__all__ = ["choose", "position"]

_SCALE = float(2**64)


def position(experiment: str, user_key: str) -> float:
    """A person's place in [0, 1) for an experiment, uniform over people and independent between experiments."""
    digest = hashlib.sha256(f"{experiment}\x00{user_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def choose(weights: Sequence[float], at: float) -> int:
    """The index of the variant whose cumulative share of the weights first exceeds `at` (0 <= at < 1)."""
    total = float(sum(weights))
    for index, upto in enumerate(accumulate(weights)):
        if at < upto / total:
            return index
    return len(weights) - 1  # rounding at the top end
