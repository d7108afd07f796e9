"""The `modelbay worker` process: rq's forking worker, which also takes over retry scheduling from a dead one.

rq starts a scheduler process beside a worker only if it gets the queues' scheduler locks at start-up, and tries
again only at maintenance, every 10 minutes, between jobs. A worker started while a dead one's lock still
stood (rq keeps it 61 s) would leave delayed retries waiting that long. This worker looks every
`takeover_interval` seconds, idle or busy with a job: if no scheduler of its own runs, it frees locks whose
holder has been silent for a worker TTL and starts one on the locks it gets.
"""

from __future__ import annotations

import time
from typing import Any

from redis.client import Pipeline
from rq import Worker as RQWorker

from modelbay.engine.jobs.scheduling import free_dead_locks

__all__ = ["Worker"]


class Worker(RQWorker):
    """An rq Worker that takes over retry scheduling within about a minute of its scheduler's death."""

    def __init__(self, *args: Any, takeover_interval: float = 15.0, **kwargs: Any) -> None:
        self.takeover_interval = takeover_interval  # seconds between looks for a dead scheduler (set first:
        self._next_takeover = 0.0  # rq's __init__ reads dequeue_timeout)
        self._burst = False
        super().__init__(*args, **kwargs)

    def work(self, burst: bool = False, **kwargs: Any) -> bool:
        """Work the queues (until they are empty, in burst mode); returns whether any job ran."""
        self._burst = burst  # a burst worker schedules once at start, as rq does, and starts no scheduler
        return super().work(burst, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker wakes this often from its blocking dequeue, to look (rq's default is the TTL less 15 s).
        return max(1, min(super().dequeue_timeout, int(self.takeover_interval)))

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """Extend the worker's TTL, and take over retry scheduling if it is due and nobody does it."""
        super().heartbeat(timeout, pipeline)
        # rq beats here while idle (each dequeue) and while a job runs (each monitoring interval).
        if self.scheduler is None or self.is_horse or self._burst:
            return
        if time.monotonic() >= self._next_takeover:
            self._next_takeover = time.monotonic() + self.takeover_interval
            try:
                self.take_over_scheduling()
            except Exception:  # noqa: BLE001 - the worker works on; the next look comes soon
                self.log.warning("Worker %s: could not take over retry scheduling", self.name, exc_info=True)

    def take_over_scheduling(self) -> bool:
        """Start this worker's scheduler on the locks it can get, freeing dead holders' first; return if it runs."""
        assert self.scheduler is not None
        process = self.scheduler._process  # noqa: SLF001 - rq's own maintenance reads it the same way
        if process is not None and process.is_alive():
            return True
        free_dead_locks(self.connection, self.queue_names(), silent_after=self.worker_ttl)
        return bool(self.scheduler.acquire_locks(auto_start=True))
