"""The one function RQ runs: it wraps every job function with status, progress and error handling."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from modelbay.config import Settings
from modelbay.engine.analytics.telemetry import Telemetry
from modelbay.engine.db.database import Database, database_unavailable
from modelbay.engine.errors import ModelBayError
from modelbay.engine.jobs.jobs import JobCanceled, Jobs
from modelbay.engine.jobs.kinds import KINDS, resolve
from modelbay.engine.db.schema.jobs import JobStatus
from modelbay.workers.context import JobContext

log = logging.getLogger(__name__)

__all__ = ["WorkerResources", "execute", "install_resources"]


@dataclass
class WorkerResources:
    """The database, Redis and settings a worker process lends to the jobs it runs."""

    settings: Settings
    db: Database
    redis: Redis
    pid: int
    telemetry: Telemetry | None = None  # where job runs are counted (Prometheus), when the process exposes metrics


_resources: WorkerResources | None = None


def install_resources(settings: Settings, db: Database, redis: Redis, telemetry: Telemetry | None = None) -> None:
    """Hand the worker's resources to the jobs it will run (RQ calls jobs by name, not with objects)."""
    global _resources
    _resources = WorkerResources(settings, db, redis, os.getpid(), telemetry)


def _current_resources() -> WorkerResources:
    if _resources is None:
        raise RuntimeError("No worker resources: start jobs with `modelbay worker` or the embedded workers.")
    if _resources.pid != os.getpid():
        # RQ forked a work horse: pooled DB connections belong to the parent and must not be reused here.
        _resources.db.engine.dispose(close=False)
        _resources.pid = os.getpid()
    return _resources


def _resolve(func_path: str, kind: str) -> Callable[..., Any]:
    """The job function at `func_path`; where it has moved since the job was queued (an upgrade between enqueue
    and run), the function its kind names now."""
    try:
        return resolve(func_path)
    except (ImportError, AttributeError):
        spec = KINDS.get(kind)
        if spec is None or spec.func == func_path:
            raise
        log.info("job function %s has moved: running %s, the %s kind's function now", func_path, spec.func, kind)
        return _resolve(spec.func, kind)


def _user_error(exc: BaseException) -> str:
    if isinstance(exc, ModelBayError):
        return str(exc)
    if isinstance(exc, JobTimeoutException):
        return "The job ran past its time limit and was stopped."
    return f"The job failed ({type(exc).__name__}). The worker log has the details."


def _attempt(rq_job: Any) -> int | None:
    """Which run of the job this is (1-based), counted from the retries RQ has left of those it was given."""
    given = rq_job.meta.get("retries")
    if rq_job.retries_left is None or not isinstance(given, int):
        return None
    return given - rq_job.retries_left + 1


def execute(func_path: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Run one job function, recording its start, progress, result, failure, retry or cancellation."""
    resources = _current_resources()
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("execute() runs only inside an RQ job")
    jobs = Jobs(resources.db, resources.redis)
    record = jobs.transition(rq_job.id, JobStatus.STARTED, message="Started", attempt=_attempt(rq_job))
    ctx = JobContext(rq_job.id, record.attempts, resources.settings, resources.db, jobs)
    started = time.monotonic()
    try:
        ctx.check_canceled()
        # Heavy libraries (torch, transformers) are imported here, inside the job, never in the worker parent.
        result = _resolve(func_path, record.kind)(ctx, **params)
    except JobCanceled:
        jobs.transition(rq_job.id, JobStatus.CANCELED, message="Canceled")
        _observe(resources, record.kind, JobStatus.CANCELED, started)
        return {"canceled": True}
    except BaseException as exc:
        known = database_unavailable(exc) or exc  # a driver's dropped connection reads as one line, and is retried
        if isinstance(known, ModelBayError) and not known.retryable:
            rq_job.retries_left = 0  # bad input or a refusal fails the same way every time
        retrying = bool(rq_job.retries_left)
        outcome = JobStatus.RETRYING if retrying else JobStatus.FAILED
        jobs.transition(rq_job.id, outcome, error=_user_error(known))
        _observe(resources, record.kind, outcome, started)
        raise
    jobs.transition(rq_job.id, JobStatus.FINISHED, result=result or {}, message="Done")
    _observe(resources, record.kind, JobStatus.FINISHED, started)
    return result


def _observe(resources: WorkerResources, kind: str, outcome: JobStatus, started: float) -> None:
    if resources.telemetry is not None:
        resources.telemetry.observe_job(kind, outcome.value, time.monotonic() - started)
