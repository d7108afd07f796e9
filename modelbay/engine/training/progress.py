"""What a training job reports each step (`TrainingDetail`) and the loss sparkline a live card draws from it.

A training job publishes one report per optimizer step through the job's progress (`JobContext.progress`), with
the fraction `step / total_steps` and this detail; readers take it back with `TrainingDetail.of(event.detail)` (or
from a job row's `progress_detail`, of any age: names this code does not know land in `extra`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelbay.engine.jobs.progress import ProgressDetail

__all__ = ["PHASES", "RECENT_LOSSES", "TrainingDetail", "sparkline"]

RECENT_LOSSES = 40  # losses a report carries for the sparkline (one per step, newest last)
# The phases of a training job, in order: reading and tokenizing the dataset, loading the base model, the held-out
# loss before training, training, the held-out loss and the side-by-side answers after it, saving the version.
PHASES = ("preparing", "loading", "evaluating", "training", "testing", "saving")
_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True, eq=False)
class TrainingDetail(ProgressDetail):
    """One step's report. Inherited: `phase` (one of PHASES), `eta` (seconds left at the recent step rate),
    `message`; every field may be absent (not measured yet)."""

    step: int | None = None  # optimizer steps done; continues across resumes and retries
    total_steps: int | None = None  # optimizer steps in the whole run
    epoch: float | None = None  # passes over the training rows done (fractional)
    loss: float | None = None  # training loss of the latest step (mean token cross-entropy, nats)
    eval_loss: float | None = None  # latest held-out loss (nats per trained token)
    eval_loss_before: float | None = None  # held-out loss of the base model, before any training
    learning_rate: float | None = None  # learning rate of the latest step
    grad_norm: float | None = None  # gradient norm of the latest step, before clipping
    tokens: int | None = None  # input tokens seen so far, padding excluded, over all processes
    tokens_per_s: float | None = None  # input tokens per second over the last few steps
    peak_memory_bytes: int | None = None  # peak GPU memory allocated (CUDA), else the process's peak RSS
    recent_losses: tuple[float, ...] | list[float] | None = None  # the last RECENT_LOSSES losses, oldest first
    processes: int | None = None  # training processes (more than 1: DDP through torchrun)


def sparkline(values: Sequence[float], width: int | None = None) -> str:
    """Draw values as unicode bars (▁..█), low to high between their own minimum and maximum; the last `width` only.

    An empty sequence is an empty string; equal values are a flat line of the lowest bar.
    """
    shown = [float(v) for v in values][-width:] if width else [float(v) for v in values]
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    span = high - low
    if span <= 0:
        return _BARS[0] * len(shown)
    return "".join(_BARS[min(len(_BARS) - 1, int((v - low) / span * len(_BARS)))] for v in shown)
