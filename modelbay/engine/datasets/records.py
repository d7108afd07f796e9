"""Records of the datasets area that other layers get: a stored dataset, its report, problems by reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from modelbay.engine.datasets.histogram import Histogram
from modelbay.engine.datasets.problems import Problem
from modelbay.engine.datasets.tokens import Segment
from modelbay.engine.errors import DatasetInvalid

__all__ = ["DatasetRecord", "DatasetReport", "ProblemSummary", "main_problem"]

FIRST_ROWS = 5  # problems listed per reason (the rest are counted)
DEFAULT_MAX_LENGTH = 2048  # tokens: the limit a dataset's card measures against unless told another


@dataclass(frozen=True)
class DatasetRecord:
    """A stored dataset: whose, its file, where its bytes are, its format and what reading it found."""

    id: int
    owner: str
    name: str
    filename: str
    sha256: str
    size_bytes: int
    format: str
    format_given: bool
    source: str
    rows: int
    valid_rows: int
    duplicates: int
    created_at: datetime
    path: str  # the stored bytes, on the server (HOME/datasets/<sha256>); never shown over REST
    columns: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)  # rows left out per reason

    @property
    def ref(self) -> str:
        """How commands name it: its id."""
        return str(self.id)


@dataclass(frozen=True)
class ProblemSummary:
    """Rows left out for one reason: how many, and the first few with their lines and messages."""

    reason: str
    title: str
    count: int
    first: tuple[Problem, ...]

    @property
    def lines(self) -> tuple[int, ...]:
        """The lines of the problems listed."""
        return tuple(p.line for p in self.first)


@dataclass(frozen=True)
class DatasetReport:
    """Everything checked before training: rows, kinds, problems by reason, lengths, one example, the split.

    `valid` rows read well; the token policy then leaves out `dropped` of them (too long, no trained token,
    refused by the chat template) and cuts `truncated`. `train_rows` and `validation_rows` are what trains and
    what measures after that, as the training job reads them.
    """

    dataset: DatasetRecord
    file_type: str
    format: str
    detected: bool
    rows: int
    valid: int
    kinds: dict[str, int]
    problems: tuple[ProblemSummary, ...]
    duplicates: int
    duplicate_lines: tuple[tuple[int, int], ...]  # the first few (line, line it repeats)
    policy: str
    max_length: int
    dropped: int
    truncated: int
    fatal: Problem | None
    model: str | None  # whose tokenizer and chat template measured the rows (None: lengths in characters)
    histogram: Histogram | None
    example: tuple[Segment, ...]  # one row as rendered, in trained and masked runs
    example_line: int | None
    train_rows: int
    validation_rows: int
    validation_from: str  # "10% held out, seed 0" or "dataset #4 (heldout.jsonl)"
    seed: int = 0
    validation_fraction: float = 0.0
    overlap: int = 0  # training rows left out because a validation row says the same

    @property
    def trainable(self) -> int:
        """Rows that train or validate once the policy has applied."""
        return self.valid - self.dropped

    @property
    def ready(self) -> bool:
        """Whether training can start on it: no fatal row and at least one row to train on."""
        return self.fatal is None and self.train_rows > 0

    def check(self) -> None:
        """Refuse a dataset training cannot start on.

        Raises:
            DatasetInvalid: a row the `fail` policy stops at, or no row left to train on.
        """
        if self.fatal is not None:
            raise DatasetInvalid(self.dataset.name, self.fatal.message, self.fatal.line)
        if self.train_rows <= 0 and self.overlap:
            raise DatasetInvalid(self.dataset.name, f"every row it would train on is also a validation row "
                                                    f"({self.overlap}); choose another validation dataset")
        if self.train_rows <= 0:
            why = main_problem(self.problems) or "it has no rows"
            raise DatasetInvalid(self.dataset.name, f"no row is left to train on: {why}; {self.where_listed()}")

    def where_listed(self) -> str:
        """The command whose card lists these problems (with the model, when it measured rows: only its report
        has what its tokenizer and chat template refuse; and the max_length and policy it measured with, where they
        are not the card's defaults: without them the card showed no row too long)."""
        model = f" model:{self.model}" if self.model else ""
        if self.model and self.max_length != DEFAULT_MAX_LENGTH:  # what is too long depends on the limit measured
            model += f" max_length:{self.max_length}"
        if self.policy != "drop":
            model += f" policy:{self.policy}"
        return f"`/datasets info {self.dataset.id}{model}` lists the problems with their lines"


def main_problem(problems: tuple[ProblemSummary, ...]) -> str:
    """The reason most rows are left out for, with its first row (`""` when none is): what a refusal names so that
    its fix is plain, e.g. "refused by the chat template: 20 rows, first line 1: the tokenizer has no chat template"."""
    if not problems:
        return ""
    top = max(problems, key=lambda p: p.count)
    return f"{top.title}: {top.count:,} row{'s' * (top.count != 1)}, first {top.first[0]}"
