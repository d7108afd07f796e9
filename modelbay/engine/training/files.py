"""The files of one training run, under `HOME/training/<run>/` (`<run>`: the id of the job that started it; a resume
or a retry of that job works in the same folder):

    run.json          what the run trains: base model folder, config, row counts (written before training)
    data/             the tokenized rows: train.jsonl, validation.jsonl ({"input_ids", "assistant_masks"} a line)
                      and prompts.jsonl (validation prompts for the side-by-side answers)
    checkpoints/      transformers' checkpoint-<step>/ folders (adapter, optimizer, scheduler, trainer_state.json)
    steps.jsonl       one JSON object per logged step (step, epoch, loss, learning_rate, grad_norm, tokens, ...) and
                      one per evaluation (step, eval_loss); what a resume repeats is cut back first
    metrics.json      the held-out loss of the base model, measured once before training
    loss.png          the loss chart, drawn when the run ends (also when it is canceled)
    adapter/, merged/ what the run made, until the new version takes them into the model store
    result.json       how the training process ended: finished or stopped (canceled), with its metrics
    version.json      the job's result once the new version is registered: the run is done (a retry returns it)
    events.jsonl      reports of a multi-process run's rank 0, which the job forwards to the job's progress
    cancel            present once the job was asked to stop: every rank stops at its next step
    train.log         the output of a multi-process run (torchrun and its ranks)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelbay.engine.analytics import figures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RunFiles", "draw_chart", "last_checkpoint", "loss_figure", "read_jsonl", "trim_steps", "write_jsonl"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunFiles:
    """Paths of one run's folder (the module docstring lists what each holds)."""

    root: Path

    @classmethod
    def of(cls, home: Path, run: str) -> RunFiles:
        """The folder of run `run` (a job id) under the data directory `home`."""
        return cls(Path(home) / "training" / run)

    @property
    def spec(self) -> Path:
        return self.root / "run.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def train_rows(self) -> Path:
        return self.data / "train.jsonl"

    @property
    def validation_rows(self) -> Path:
        return self.data / "validation.jsonl"

    @property
    def prompts(self) -> Path:
        return self.data / "prompts.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def steps(self) -> Path:
        return self.root / "steps.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def chart(self) -> Path:
        return self.root / "loss.png"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def version(self) -> Path:
        return self.root / "version.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def cancel(self) -> Path:
        return self.root / "cancel"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint a run can resume from (see `last_checkpoint`)."""
        return last_checkpoint(self.checkpoints)


def last_checkpoint(folder: Path) -> Path | None:
    """The checkpoint-<step> folder with the highest step whose trainer_state.json exists and parses, or None.

    A process killed while saving leaves a folder without (or with a cut) trainer_state.json, which transformers
    writes last: such folders are passed over, so a resume never starts from half a checkpoint.
    """
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    for step, child in sorted(found, reverse=True):
        try:
            state = json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("global_step") == step:
            return child
    return None


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines (to a temporary name first, then renamed into place); return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    count = 0
    with temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    os.replace(temporary, path)
    return count


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSON lines file; a cut last line (a process killed mid-write) is passed over."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def trim_steps(path: Path, last_step: int) -> None:
    """Keep only the entries of a steps log up to `last_step` (a resume repeats the steps after its checkpoint)."""
    if path.exists():
        write_jsonl(path, [row for row in read_jsonl(path) if int(row.get("step", 0)) <= last_step])


def loss_figure(steps: list[dict[str, Any]], title: str, *, before: float | None = None) -> Figure | None:
    """Training loss (markers while under 50 points) and held-out loss (from the base model's `before` at step 0) by
    step, on whole-number steps with a step of room around a single one; None when no step has a loss.

    Drawn on `engine.analytics.figures` (matplotlib's Agg canvas: no display, no global figure state).
    """
    from matplotlib.ticker import MaxNLocator

    train = [(row["step"], row["loss"]) for row in steps if row.get("loss") is not None]
    evals = [(row["step"], row["eval_loss"]) for row in steps if row.get("eval_loss") is not None]
    if before is not None:
        evals.insert(0, (0, before))
    if not train and not evals:
        return None
    figure = figures.figure(6.4, 3.6)
    axes = figure.add_subplot()
    if train:  # a run logged once is a single point: a line through it draws nothing
        axes.plot([s for s, _ in train], [v for _, v in train], label="training loss", linewidth=1.2,
                  marker="." if len(train) < 50 else None)
    if evals:
        axes.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="held-out loss", linewidth=1.2)
    drawn = [s for s, _ in train + evals]
    if max(drawn) - min(drawn) < 2:  # one or two steps: a step of room either side, not a hair-thin float range
        axes.set_xlim(min(drawn) - 1, max(drawn) + 1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # steps are whole numbers
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def draw_chart(steps: list[dict[str, Any]], path: Path, title: str, *, before: float | None = None) -> Path | None:
    """Draw `loss_figure` as a PNG at `path` (written whole, then moved into place); None when no step has a loss."""
    figure = loss_figure(steps, title, before=before)
    if figure is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.png")
    temporary.write_bytes(figures.png(figure))
    os.replace(temporary, path)
    return path
