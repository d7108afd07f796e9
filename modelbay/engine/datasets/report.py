"""The dataset report: what reading found, what the token policy does to each row, lengths, an example, the split.

`build` encodes every valid row with the chosen tokenizer (`tokens.encode`, the same call training makes), so
the counts it shows (dropped, truncated, train and validation rows) are the ones training gets. Without a
tokenizer, lengths are characters and the example is shown turn by turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from modelbay.engine.datasets.examples import Example
from modelbay.engine.datasets.histogram import histogram
from modelbay.engine.datasets.problems import REASONS, Problem
from modelbay.engine.datasets.records import FIRST_ROWS, DatasetRecord, DatasetReport, ProblemSummary
from modelbay.engine.datasets.split import Split
from modelbay.engine.datasets.tokens import UNLIMITED, Encoded, Policy, Segment, encode, fit, segments
from modelbay.engine.datasets.validation import Validation

__all__ = ["build", "summarize"]


def summarize(problems: Sequence[Problem]) -> tuple[ProblemSummary, ...]:
    """Problems grouped by reason, in `REASONS` order, each with its count and first rows (by line)."""
    grouped: dict[str, list[Problem]] = defaultdict(list)
    for problem in sorted(problems, key=lambda p: p.line):
        grouped[problem.reason].append(problem)
    return tuple(ProblemSummary(reason, REASONS[reason], len(grouped[reason]), tuple(grouped[reason][:FIRST_ROWS]))
                 for reason in REASONS if reason in grouped)


def _plain(example: Example) -> tuple[Segment, ...]:
    """A row shown without a tokenizer: each turn on its own line after its role, the answers marked as trained."""
    if example.kind == "completion":
        return Segment(example.prompt or "", False), Segment(example.completion or "", True)
    if example.kind == "text":
        return (Segment(example.text or "", True),)
    runs: list[Segment] = []
    for m in example.messages:
        for piece in (Segment(f"{m.role}: ", False), Segment(m.content, m.role == "assistant"), Segment("\n", False)):
            if runs and runs[-1].trained == piece.trained:
                runs[-1] = Segment(runs[-1].text + piece.text, piece.trained)
            else:
                runs.append(piece)
    return tuple(runs)


def _survives(tokenizer: Any, row: Example, max_length: int, policy: Policy) -> tuple[Encoded | Problem, int | None]:
    """The row under the policy, and its whole length in tokens (None when it cannot be encoded at all)."""
    whole = encode(tokenizer, row, max_length=UNLIMITED, policy="drop")
    if isinstance(whole, Problem):
        return whole, None
    return fit(whole, row.line, max_length=max_length, policy=policy), whole.length


def build(record: DatasetRecord, validation: Validation, split: Split, *, tokenizer: Any = None,
          model: str | None = None, max_length: int, policy: Policy, validation_from: str, seed: int,
          fraction: float) -> DatasetReport:
    """The report of a dataset read as `validation` and split as `split`, measured with `tokenizer` if given.

    Rows of a separate validation dataset in `split.validation` count towards `validation_rows` only; their
    problems belong to that dataset's own report.
    """
    problems = list(validation.problems)
    lengths: list[int] = []
    truncated = 0
    fatal: Problem | None = None
    example: tuple[Segment, ...] = ()
    example_line: int | None = None
    kept: dict[int, bool] = {}  # by id(row): whether it survives the policy
    for row in validation.examples:
        if tokenizer is None:
            lengths.append(row.chars())
            kept[id(row)] = True
            example, example_line = (example, example_line) if example else (_plain(row), row.line)
            continue
        result, length = _survives(tokenizer, row, max_length, policy)
        if length is not None:
            lengths.append(length)
        kept[id(row)] = isinstance(result, Encoded)
        if isinstance(result, Problem):
            problems.append(result)
            fatal = fatal or (result if result.fatal else None)
        else:
            truncated += result.truncated
            if not example:
                example, example_line = tuple(segments(tokenizer, result)), row.line
    for row in split.validation:  # a separate validation dataset's rows
        if id(row) not in kept:
            kept[id(row)] = tokenizer is None or isinstance(_survives(tokenizer, row, max_length, policy)[0], Encoded)
    measured = tokenizer is not None
    return DatasetReport(
        dataset=record, file_type=validation.file_type, format=validation.format, detected=validation.detected,
        rows=validation.rows, valid=len(validation.examples), kinds=validation.kinds, problems=summarize(problems),
        duplicates=len(validation.duplicates), duplicate_lines=validation.duplicates[:FIRST_ROWS], policy=policy,
        max_length=max_length, dropped=sum(1 for e in validation.examples if not kept[id(e)]), truncated=truncated,
        fatal=fatal, model=model if measured else None,
        histogram=histogram(lengths, unit="tokens" if measured else "characters", limit=max_length if measured
                            else None),
        example=example, example_line=example_line,
        train_rows=sum(kept[id(e)] for e in split.train),
        validation_rows=sum(kept[id(e)] for e in split.validation),
        validation_from=validation_from, seed=seed, validation_fraction=fraction, overlap=split.overlap)
