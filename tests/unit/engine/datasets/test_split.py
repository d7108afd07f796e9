"""The train/validation split: seeded, deterministic, in file order, never empty on the train side."""

from __future__ import annotations

from modelbay.engine.datasets.examples import Example
from modelbay.engine.datasets.split import held_out, split

ROWS = [Example(i, text=f"row {i}") for i in range(1, 101)]


def test_a_fraction_is_held_out_by_a_seeded_shuffle() -> None:
    first, again, other = split(ROWS, 0.1, 0), split(ROWS, 0.1, 0), split(ROWS, 0.1, 1)
    assert len(first.train) == 90 and len(first.validation) == 10
    assert first == again and first.validation != other.validation
    assert sorted(first.train + first.validation, key=lambda e: e.line) == ROWS
    assert [e.line for e in first.validation] == sorted(e.line for e in first.validation)  # file order


def test_small_datasets_keep_a_row_to_train_on() -> None:
    assert [held_out(n, 0.1) for n in (0, 1, 2, 3, 14, 15, 100)] == [0, 0, 1, 1, 1, 2, 10]
    assert held_out(10, 0.0) == 0 and held_out(4, 0.5) == 2
    one = split(ROWS[:1], 0.1, 0)
    assert (len(one.train), len(one.validation)) == (1, 0)


def test_a_validation_dataset_replaces_the_fraction() -> None:
    held = [Example(1, text="held out")]
    assert split(ROWS, 0.2, 0, held) == (ROWS, held, 0)


def test_no_row_trains_that_a_validation_row_repeats() -> None:
    # A duplicate of a held-out row would leak it into training and make the held-out loss meaningless.
    rows = [*ROWS, *(Example(200 + e.line, text=e.text) for e in ROWS[:50])]
    parts = split(rows, 0.1, 0)
    measured = {e.text for e in parts.validation}
    assert not measured & {e.text for e in parts.train}
    assert parts.overlap == sum(e.text in measured for e in rows) - len(parts.validation) > 0
    assert len(parts.train) + len(parts.validation) + parts.overlap == len(rows)
    # A validation dataset that repeats training rows (or is the same file) takes them out of training.
    same = split(ROWS, 0.1, 0, ROWS[:30])
    assert (len(same.train), same.overlap) == (70, 30) and same.train == ROWS[30:]
    assert split(ROWS, 0.1, 0, ROWS).train == []
