"""What an optimization job reports (`OptimizationDetail`): its phase, the step it applies, and that step's part.

An optimization job publishes reports through the job's progress (`JobContext.progress`) with the whole job's
fraction and this detail; readers take it back with `OptimizationDetail.of(event.detail)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelbay.engine.jobs.progress import ProgressDetail

__all__ = ["PHASES", "OptimizationDetail"]

# The phases of an optimization job, in order: reading the parent and the held-out text, applying each step,
# measuring the parent, measuring the variant, registering the new version.
PHASES = ("preparing", "applying", "measuring-parent", "measuring", "saving")


@dataclass(frozen=True, eq=False)
class OptimizationDetail(ProgressDetail):
    """One report. Inherited: `phase` (one of PHASES), `message`; every field may be absent."""

    step: int | None = None  # the step being applied, from 1
    steps: int | None = None  # steps in the job
    method: str | None = None  # the step's method, as people read it ("bitsandbytes 8-bit")
    step_fraction: float | None = None  # how far the step is, 0..1
