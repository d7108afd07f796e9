"""The embedded workers (RQ over fakeredis, worked by threads) run jobs and stop when asked, even while idle."""

from __future__ import annotations

import threading
import time

import fakeredis
from rq import Queue

from modelbay.workers.embedded import EmbeddedWorkers


def test_idle_workers_stop_at_once_and_leave_no_thread() -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    before = set(threading.enumerate())
    workers = EmbeddedWorkers(redis).start()
    started_here = set(threading.enumerate()) - before
    assert {t.name for t in started_here} >= {"modelbay-worker-cpu", "modelbay-scheduler"}
    job = Queue("cpu", connection=redis).enqueue("builtins.len", [1, 2, 3])
    deadline = time.monotonic() + 30
    while job.get_status(refresh=True) != "finished":
        assert time.monotonic() < deadline, job.get_status()
        time.sleep(0.01)
    assert job.return_value() == 3
    time.sleep(1.5)  # every worker waits for its next job again
    started = time.monotonic()
    workers.stop(timeout=20)
    # RQ's own wait for a job never looks at a stop request: it kept the threads running and stop() waiting.
    assert time.monotonic() - started < 10
    assert not [t for t in started_here if t.is_alive()]
