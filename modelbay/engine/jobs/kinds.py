"""Every built-in kind of job, top to bottom: its queue, time limit, retries, job function and end hook.

Job functions (`modelbay.workers.jobs.<module>.<func>`) and end hooks are named by dotted path, imported only
where they run (a worker's work horse; whoever sees the job end), so this module imports no area of the engine
and the worker parent never imports torch. `KINDS` is the registry `Jobs` submits from: the built-in kinds below
and those of plugins, each added through the `register_job_kinds` hook (`modelbay/default_plugins/job_kinds.py`
adds these).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rq import Retry

from modelbay.engine.extensions import Extensions

if TYPE_CHECKING:
    from modelbay.config import Settings
    from modelbay.engine.db.database import Database

__all__ = [
    "resolve",
    "BUILT_IN", "INSTALL", "KINDS", "OPTIMIZE", "OPTIMIZE_CPU", "PROBE", "QUEUES", "RUNNER", "SERVE", "TRAIN",
    "Job", "JobKind", "QueueName",
    "RetryPolicy",
    "register_kind",
]

QueueName = Literal["downloads", "cpu", "gpu"]
# Downloads have their own queue so they never wait behind training on the gpu queue.
QUEUES: tuple[QueueName, ...] = ("downloads", "cpu", "gpu")
# The one function RQ runs for every kind: it records the job's life around the kind's function.
RUNNER = "modelbay.workers.runner.execute"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after which delays (seconds) a failed job runs again."""

    max: int = 0
    intervals: tuple[int, ...] = (0,)

    def to_rq(self) -> Retry | None:
        """Return RQ's Retry for this policy, or None when the job never retries."""
        return Retry(max=self.max, interval=list(self.intervals)) if self.max else None


@dataclass(frozen=True)
class JobKind:
    """A kind of long operation: the job function and the policy it runs under."""

    name: str
    func: str  # dotted path of f(ctx: JobContext, **params) -> dict | None, imported inside the job
    queue: QueueName
    timeout: int  # seconds before RQ stops the job; -1 for none
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    description: str = ""
    on_end: str | None = None  # dotted path of f(db, JobRecord), called once the job has ended in any way


class Job(Protocol):
    """What an engine job function needs of its context (`workers.context.JobContext` is one): its id, settings and
    database, progress reports and the cancel flag (training's and optimization's `run_job` take it)."""

    job_id: str
    settings: Settings
    db: Database

    def progress(self, fraction: float | None = None, message: str | None = None, *, force: bool = False,
                 detail: Any = None, **values: Any) -> None:
        """Report progress; raises JobCanceled once a cancel was asked for."""

    def check_canceled(self) -> None:
        """Raise JobCanceled if a cancel was asked for."""


# -- the built-in kinds --------------------------------------------------------------------------------------

# Download and verify a model version's files into the store: six hours, two retries for transient errors
# (ModelBay errors such as a checksum mismatch fail at once). The hook gives a version left mid-install a state.
INSTALL = JobKind(
    "install", "modelbay.workers.jobs.install.install", "downloads", timeout=6 * 3600,
    retry=RetryPolicy(max=2, intervals=(5, 30)), description="Download and verify",
    on_end="modelbay.engine.installs.installs.settle",
)

# Start vLLM for an installed version and supervise it until it is stopped: no time limit, no retries. The hook
# leaves the server row stopped or down however the job ended (a dead worker included).
SERVE = JobKind(
    "model.serve", "modelbay.workers.jobs.serve.serve", "gpu", timeout=-1,
    description="Start and supervise a vLLM server for an installed model.",
    on_end="modelbay.engine.inference.serving.settle",
)

# Measure RAM, GPUs and free disk on a gpu worker (where the GPUs are in a deployment, not the bot host).
PROBE = JobKind(
    "hardware.probe", "modelbay.workers.jobs.probe.probe", "gpu", timeout=60,
    description="Probe RAM, GPU memory and free disk where the gpu workers run.",
)

# Fine-tune a model with LoRA (engine/training): up to three days, and a worker killed mid-training (a lost machine,
# an out-of-memory kill) is retried twice, a second and then a minute later; the retry continues from the run's last
# checkpoint, its step count going on. ModelBay errors (a dataset that cannot train, no CUDA for QLoRA) fail at once.
TRAIN = JobKind(
    "train", "modelbay.workers.jobs.train.train", "gpu", timeout=72 * 3600,
    retry=RetryPolicy(max=2, intervals=(1, 60)), description="Fine-tune a model (LoRA, QLoRA) on a dataset.",
)

# Quantize, prune or export a model and measure the variant against its parent (engine/optimization): up to a day, no
# retries (a killed job leaves nothing: its folder is removed, and it is run again by asking again). Steps that make
# GPU-served variants (bitsandbytes) run on the gpu queue, the others (casts, pruning, ONNX) on the cpu queue.
OPTIMIZE = JobKind(
    "optimize", "modelbay.workers.jobs.optimize.optimize", "gpu", timeout=24 * 3600,
    description="Quantize, prune or export a model and measure it against its parent (GPU-served variants).",
)
OPTIMIZE_CPU = JobKind(
    "optimize.cpu", "modelbay.workers.jobs.optimize.optimize", "cpu", timeout=24 * 3600,
    description="Quantize, prune or export a model and measure it against its parent (CPU variants, ONNX).",
)

BUILT_IN: tuple[JobKind, ...] = (INSTALL, SERVE, PROBE, TRAIN, OPTIMIZE, OPTIMIZE_CPU)


def _check(kind: JobKind) -> None:
    if kind.queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}")


KINDS: Extensions[JobKind] = Extensions("register_job_kinds", lambda kind: kind.name, _check)


def register_kind(kind: JobKind) -> JobKind:
    """Make a job kind available to submit (replacing one of the same name); plugins use the hook instead."""
    return KINDS.register(kind)


def resolve(path: str) -> Callable[..., Any]:
    """The function a dotted path names (a job function or end hook), imported where it runs.

    Raises:
        ImportError: its module cannot be imported.
        AttributeError: the module has no such name.
    """
    module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)
