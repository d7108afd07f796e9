"""In-process workers for the embedded default: RQ over fakeredis, worked by threads, no services needed."""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis
from rq import Queue, SimpleWorker
from rq.scheduler import RQScheduler
from rq.timeouts import TimerDeathPenalty

from modelbay.engine.jobs.kinds import QUEUES

__all__ = ["EmbeddedWorkers"]

log = logging.getLogger(__name__)

# Seconds an idle worker thread waits for a job before it looks whether it was asked to stop.
_STOP_CHECK = 0.25


class _ThreadWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own thread (signals and SIGALRM work only in the main thread)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):  # noqa: ANN201
        """Wait for a job in short turns, looking for a stop request between them; None once one came.

        RQ's own wait goes on until a job comes and never looks at a stop request, so stop() would wait out its
        whole timeout (and leave the thread running) while the queues are idle.
        """
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(_STOP_CHECK, max_idle_time=_STOP_CHECK)
            if result is not None:
                return result
        return None


class EmbeddedWorkers:
    """One worker thread per queue, so a download never waits behind training, plus a retry scheduler."""

    def __init__(self, redis: Redis, queues: tuple[str, ...] = QUEUES) -> None:
        self._redis = redis
        self._queues = queues
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[_ThreadWorker] = []

    def start(self) -> EmbeddedWorkers:
        """Start the worker and scheduler threads."""
        for name in self._queues:
            # The wait for a job is in short turns whatever the TTL (_ThreadWorker), so stop() returns at once.
            worker = _ThreadWorker([Queue(name, connection=self._redis)], connection=self._redis, worker_ttl=20)
            self._workers.append(worker)
            self._spawn(f"modelbay-worker-{name}", lambda w=worker: w.work(logging_level="WARNING"))
        self._spawn("modelbay-scheduler", self._schedule)
        return self

    def _spawn(self, name: str, target) -> None:  # noqa: ANN001
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _schedule(self) -> None:
        # Retries with a delay sit in RQ's scheduled registry until a scheduler moves them back.
        scheduler = RQScheduler([Queue(n, connection=self._redis) for n in self._queues], connection=self._redis)
        while not self._stop.wait(1.0):
            try:
                scheduler.acquire_locks()
                scheduler.enqueue_scheduled_jobs()
            except Exception:  # keep scheduling through a transient error; the log has it
                log.exception("embedded scheduler tick failed")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to stop after its current job and wait up to timeout in all."""
        self._stop.set()
        for worker in self._workers:
            worker._stop_requested = True  # request_stop() installs signal handlers: main thread only
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
