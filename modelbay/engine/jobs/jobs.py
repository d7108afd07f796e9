"""Long operations as RQ jobs: submit one of the registered kinds (`kinds.py`), watch its progress, cancel it."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import ScheduledJobRegistry
from rq.utils import utcparse
from rq.worker import BaseWorker
from sqlalchemy import select

from modelbay.engine.db.database import Database, idempotent
from modelbay.engine.errors import (
    DatabaseUnavailable,
    JobCanceled,
    JobNotCancelable,
    JobNotFound,
    UnknownJobKind,
)
from modelbay.engine.records import JobRecord, Submitted, record_from_row
from modelbay.engine.jobs.kinds import KINDS, RUNNER, JobKind, resolve
from modelbay.engine.jobs.progress import ProgressDetail, ProgressEvent
from modelbay.engine.jobs.scheduling import enqueue_overdue
from modelbay.engine.db.schema.jobs import JobRow, JobStatus

__all__ = ["JobCanceled", "Jobs", "UnknownJobKind"]

log = logging.getLogger(__name__)

_WAITING = {RQStatus.QUEUED, RQStatus.SCHEDULED, RQStatus.DEFERRED}
_ENQUEUE_GRACE = timedelta(seconds=30)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record(row: JobRow) -> JobRecord:
    return record_from_row(JobRecord, row, progress_detail=ProgressDetail.of(row.progress_detail))


class _Seen(NamedTuple):
    """What a job's row said before it was reconciled: whether it was active, and its message."""

    active: bool
    message: str | None


# What an RQ state that has ended means for a job ModelBay still thinks is running.
_RQ_ENDED = {
    RQStatus.FINISHED: (JobStatus.FINISHED, None),
    RQStatus.FAILED: (JobStatus.FAILED, "The worker stopped while running this job. Try it again."),
    RQStatus.STOPPED: (JobStatus.CANCELED, None),
    RQStatus.CANCELED: (JobStatus.CANCELED, None),
}


class Jobs:
    """Submits, tracks and cancels jobs; the database row is the record, RQ runs the work."""

    def __init__(
        self, db: Database, redis: Redis, *, kinds: Mapping[str, JobKind] | None = None, worker_ttl: int = 60,
        in_process: bool = False,
    ) -> None:
        self._db = db
        self.redis = redis
        self._kinds = KINDS if kinds is None else kinds
        self._worker_ttl = worker_ttl  # seconds without a heartbeat after which a worker counts as dead
        # In-process workers live exactly as long as this process and have no work horse to kill.
        self._in_process = in_process

    # -- keys -----------------------------------------------------------------------------------------
    @staticmethod
    def channel(job_id: str) -> str:
        """Return the pub/sub channel a job's progress is published on."""
        return f"modelbay:job:{job_id}:progress"

    @staticmethod
    def _cancel_key(job_id: str) -> str:
        return f"modelbay:job:{job_id}:cancel"

    def queue(self, name: str) -> Queue:
        """Return the RQ queue by name."""
        return Queue(name, connection=self.redis)

    # -- submit ---------------------------------------------------------------------------------------
    def submit(
        self, kind: str, params: dict[str, Any], *, requester: str, dedup_key: str | None = None,
        model_version_id: int | None = None,
    ) -> Submitted:
        """Enqueue a job, or return the active one with the same kind and dedup key (created: False).

        Raises:
            UnknownJobKind: no job kind is registered under `kind`.
        """
        spec = self._kinds.get(kind)
        if spec is None:
            raise UnknownJobKind(kind)
        json.dumps(params)  # arguments must stay plain data: fail here, not in the worker
        lock = self.redis.lock(f"modelbay:lock:submit:{kind}:{dedup_key}", timeout=30, blocking_timeout=15)
        with lock if dedup_key else nullcontext():
            if dedup_key:
                existing = self._active_duplicate(kind, dedup_key)
                if existing is not None:
                    return Submitted(existing, False)
            job_id = secrets.token_hex(5)
            with self._db.session() as session:
                row = JobRow(
                    id=job_id, kind=kind, queue=spec.queue, status=JobStatus.QUEUED, dedup_key=dedup_key,
                    requester=requester, params=params, progress_detail={}, model_version_id=model_version_id,
                )
                session.add(row)
            try:
                self.queue(spec.queue).enqueue(
                    RUNNER, spec.func, params, job_id=job_id, job_timeout=spec.timeout,
                    retry=spec.retry.to_rq(), result_ttl=7 * 86400, failure_ttl=7 * 86400,
                    meta={"retries": spec.retry.max},  # how the runner tells which attempt it runs
                    description=f"{kind} {json.dumps(params)[:200]}",
                )
            except Exception:
                self.transition(job_id, JobStatus.FAILED, error="The job queue could not be reached. Try again.")
                raise
            return Submitted(self.get(job_id), True)

    def active_with_keys(self, keys: Sequence[str]) -> JobRecord | None:
        """A queued or running job of any kind with one of these dedup keys (a new model's name that a training and
        an optimization job would both make), or None."""
        ids = self._ids(select(JobRow.id).where(JobRow.dedup_key.in_(list(keys)), JobRow.status.in_(
            [JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING])).limit(1))
        return self.get(ids[0]) if ids else None

    def _active_duplicate(self, kind: str, dedup_key: str) -> JobRecord | None:
        ids = self._ids(select(JobRow.id).where(
            JobRow.kind == kind,
            JobRow.dedup_key == dedup_key,
            JobRow.status.in_([JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING]),
        ))
        for job_id in ids:
            record = self.get(job_id)
            if record.active:
                return record
        return None

    # -- read -----------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        """Return a job, first reconciling a row that looks active with what RQ knows.

        Raises:
            JobNotFound: no job has that id.
        """
        record, before = self._read(job_id)
        # After the commit, so listeners and the hook see the row as it now is.
        if not record.active and before.active:
            self._publish(ProgressEvent(record.id, record.status, record.progress, record.error))
            self._ended(record)
        elif record.progress_detail.message != before.message:
            self._publish(ProgressEvent(record.id, record.status, record.progress, record.progress_detail.message,
                                        record.progress_detail))
        return record

    @idempotent
    def _read(self, job_id: str) -> tuple[JobRecord, _Seen]:
        with self._db.session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            before = _Seen(row.status.active, (row.progress_detail or {}).get("message"))
            if row.status.active:
                self._reconcile(row)
            return _record(row), before

    def _reconcile(self, row: JobRow) -> bool:
        """Record in row how its job ended if RQ knows it has (or its worker died); return whether it did."""
        try:
            rq_job = Job.fetch(row.id, connection=self.redis)
            rq_status = rq_job.get_status(refresh=True)
        except NoSuchJobError:
            rq_job, rq_status = None, None
        if rq_status is None and row.status is JobStatus.QUEUED and _now() - row.created_at < _ENQUEUE_GRACE:
            return False  # submit() writes the row just before it enqueues: not lost, just not there yet
        if rq_status is None:
            ended: tuple[JobStatus, str | None] = (JobStatus.FAILED, "The job was lost by the queue. Try it again.")
        elif rq_status in _RQ_ENDED:
            ended = _RQ_ENDED[rq_status]
        elif rq_status == RQStatus.STARTED and rq_job is not None and not self._worker_alive(rq_job):
            # Its worker died (killed, machine lost) and RQ will notice only at its next maintenance, minutes
            # away: record the failure now and drop the RQ job so that maintenance does not run it again.
            rq_job.delete()
            ended = _RQ_ENDED[RQStatus.FAILED]
        elif rq_status == RQStatus.SCHEDULED and rq_job is not None:
            failed = self._scheduled_retry(row, rq_job)
            if failed is None:
                return False
            rq_job.delete()
            ended = (JobStatus.FAILED, failed)
            row.error = None  # the attempt's own failure is older news than this one
        else:
            return False
        row.status, error = ended
        row.error = row.error or error
        row.ended_at = row.ended_at or _now()
        return True

    def _scheduled_retry(self, row: JobRow, rq_job: Job) -> str | None:
        """Show in row when its retry runs; enqueue an overdue one nobody scheduled; return why it fails, if it must."""
        try:
            due = ScheduledJobRegistry(rq_job.origin, connection=self.redis).get_scheduled_time(rq_job)
        except NoSuchJobError:
            return None  # a scheduler moved it to its queue a moment ago
        late = (_now() - due).total_seconds()
        # A live scheduler enqueues a due retry within a second; late by a worker TTL, there is none (or it is
        # dead but still holds its lock), and whoever reads the job first enqueues it.
        if late > self._worker_ttl and enqueue_overdue(self.redis, rq_job.origin, silent_after=self._worker_ttl):
            message = "Retrying: waiting for a free worker"
        elif late > 2 * self._worker_ttl:
            return (f"Its retry, due at {due:%H:%M:%S} UTC, did not start: no worker is scheduling retries. "
                    "Check that `modelbay worker` runs, then try the job again.")
        else:
            message = f"Retrying at {due:%H:%M:%S} UTC"
        if (row.progress_detail or {}).get("message") != message:
            # The failed attempt's counters (bytes, rate, time left) would read as a frozen progress bar.
            row.progress_detail = {"message": message, "retry_at": due.isoformat()}
        return None

    def _worker_alive(self, rq_job: Job) -> bool:
        if self._in_process or not rq_job.worker_name:
            return True
        beat = self.redis.hget(BaseWorker.redis_worker_namespace_prefix + rq_job.worker_name, "last_heartbeat")
        if beat is None:
            return False
        age = (datetime.now(timezone.utc) - utcparse(beat.decode()).replace(tzinfo=timezone.utc)).total_seconds()
        return age < self._worker_ttl

    def list(self, *, requester: str | None = None, active: bool | None = None, limit: int = 20,
             kinds: Sequence[str] | None = None) -> list[JobRecord]:
        """Return the newest jobs, optionally only one requester's, only active ones, or only of some kinds."""
        query = select(JobRow.id).order_by(JobRow.created_at.desc()).limit(limit)
        if kinds is not None:
            query = query.where(JobRow.kind.in_(list(kinds)))
        if requester:
            query = query.where(JobRow.requester == requester)
        if active is not None:
            states = [JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING]
            query = query.where(JobRow.status.in_(states) if active else JobRow.status.not_in(states))
        return [self.get(job_id) for job_id in self._ids(query)]

    @idempotent
    def _ids(self, query: Any) -> list[str]:
        with self._db.session() as session:
            return list(session.scalars(query).all())

    # -- cancel ---------------------------------------------------------------------------------------
    def cancel(self, job_id: str, *, force: bool = False) -> JobRecord:
        """Cancel a job: a queued one at once, a running one at its next progress report (or now, if forced).

        Raises:
            JobNotFound: no job has that id.
            JobNotCancelable: the job already ended.
        """
        record = self.get(job_id)
        if not record.active:
            raise JobNotCancelable(job_id, record.status)
        self.redis.set(self._cancel_key(job_id), "1", ex=86400)
        try:
            rq_job = Job.fetch(job_id, connection=self.redis)
        except NoSuchJobError:
            return self.transition(job_id, JobStatus.CANCELED)
        if rq_job.get_status(refresh=True) in _WAITING:
            try:
                rq_job.cancel()
            except InvalidJobOperation:
                pass  # canceled or started a moment ago; the record below says which
            return self.transition(job_id, JobStatus.CANCELED)
        # In-process workers have no work horse to kill: there a forced cancel waits for a checkpoint too.
        if force and not self._in_process:
            try:
                send_stop_job_command(self.redis, job_id)
            except InvalidJobOperation:
                pass  # it ended between the two reads; the runner records how
            else:
                return self.transition(job_id, JobStatus.CANCELED, message="Stopped by request")
        self._publish(ProgressEvent(job_id, record.status, record.progress, "Canceling…", record.progress_detail))
        return record

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel the job."""
        return bool(self.redis.exists(self._cancel_key(job_id)))

    # -- state changes, used by the runner inside the worker ------------------------------------------
    def transition(
        self, job_id: str, status: JobStatus, *, error: str | None = None, result: dict[str, Any] | None = None,
        message: str | None = None, attempt: int | None = None,
    ) -> JobRecord:
        """Move a job to a new status, record when it started or ended, and publish the change.

        `attempt` (1-based), given with STARTED, is which run of the job this is as the queue counts it: a run
        after a work horse was killed finds the row still started, and counts as a new attempt only by it.

        Raises:
            JobNotFound: no job has that id.
        """
        if not status.active:
            # The end hook runs before the row says the job ended, so whoever sees it ended (a reader polling the
            # row, a listener) also sees what the hook did (a server marked down, a version's state). The hooks
            # are idempotent: a repeated ending, or one that loses to a concurrent one, may run them again.
            before = self._peek(job_id)
            if before.active:
                self._ended(replace(before, status=status.value, error=error if error is not None else before.error))
        record = self._move(job_id, status, error, result, attempt)
        if record.status != status.value:
            return record  # an ended job stays ended, whatever a late runner or cancel says
        self._publish(ProgressEvent(job_id, status.value, record.progress, message or error, record.progress_detail))
        return record

    @idempotent
    def _peek(self, job_id: str) -> JobRecord:
        with self._db.session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            return _record(row)

    @idempotent
    def _move(self, job_id: str, status: JobStatus, error: str | None, result: dict[str, Any] | None,
              attempt: int | None = None) -> JobRecord:
        with self._db.session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            if not row.status.active:
                return _record(row)
            if status is JobStatus.STARTED and row.status is not JobStatus.STARTED:
                row.attempts += 1  # once per attempt, however often its start is written
            if status is JobStatus.STARTED and attempt is not None:
                row.attempts = max(row.attempts, attempt)  # a retry after a killed work horse
            row.status = status
            if status is JobStatus.STARTED:
                row.started_at = row.started_at or _now()
            if status is JobStatus.FINISHED:
                row.progress = 1.0
            if not status.active:
                row.ended_at = row.ended_at or _now()
            row.error = error if error is not None else (None if status is JobStatus.FINISHED else row.error)
            if result is not None:
                row.result = result
            return _record(row)

    def _ended(self, record: JobRecord) -> None:
        """Run the kind's on_end hook, however the job ended (runner, cancel, or a dead worker)."""
        kind = self._kinds.get(record.kind)
        if kind is not None and kind.on_end:
            resolve(kind.on_end)(self._db, record)

    def save_progress(self, job_id: str, progress: float, message: str | None, detail: Mapping[str, Any]) -> None:
        """Store a progress report in the job's row (a report lost to a database outage is logged and skipped)."""
        try:
            self._store_progress(job_id, progress, message, detail)
        except DatabaseUnavailable:
            # Progress is also published live, and the next report (a second away) stores a newer one: the
            # job's work goes on rather than failing over a lost progress row.
            log.warning("progress of job %s not stored: the database is unavailable", job_id, exc_info=True)

    @idempotent
    def _store_progress(self, job_id: str, progress: float, message: str | None, detail: Mapping[str, Any]) -> None:
        with self._db.session() as session:
            row = session.get(JobRow, job_id)
            if row is not None and row.status.active:
                row.progress = progress
                row.progress_detail = {**detail, "message": message}  # the JSON object of a ProgressDetail

    def publish_progress(self, event: ProgressEvent) -> None:
        """Publish a progress report to the job's channel."""
        self._publish(event)

    def _publish(self, event: ProgressEvent) -> None:
        self.redis.publish(self.channel(event.job_id), event.to_json())

    # -- watch ----------------------------------------------------------------------------------------
    def events(self, job_id: str, *, poll: float = 1.0, stop: Any = None) -> Iterator[ProgressEvent]:
        """Yield a job's progress until it ends: its current state first, then each report as published.

        Raises:
            JobNotFound: no job has that id.
        """
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel(job_id))
        try:
            record = self.get(job_id)
            last = ProgressEvent(job_id, record.status, record.progress,
                                 record.error or record.progress_detail.message, record.progress_detail)
            yield last
            while not last.terminal and not (stop is not None and stop.is_set()):
                message = pubsub.get_message(timeout=poll)
                if message and message.get("type") == "message":
                    last = ProgressEvent.from_json(message["data"])
                    yield last
                    continue
                # Nothing published for a while: the worker may have died, so ask the record.
                record = self.get(job_id)
                if record.status != last.status:
                    last = ProgressEvent(job_id, record.status, record.progress, record.error, record.progress_detail)
                    yield last
        finally:
            pubsub.close()

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.1) -> JobRecord:
        """Block until the job ends or timeout passes; return its record.

        Raises:
            JobNotFound: no job has that id.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.get(job_id)
            if not record.active:
                return record
            time.sleep(poll)
        return self.get(job_id)

