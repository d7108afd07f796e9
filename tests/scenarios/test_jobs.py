"""Jobs over RQ on the machine's Redis with real worker processes, and the embedded in-process mode."""

from __future__ import annotations

import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.scheduler import RQScheduler

from modelbay.engine.db.database import Database
from modelbay.engine.errors import JobNotCancelable
from modelbay.bot.commands.jobs import _summary
from modelbay.engine.jobs.jobs import Jobs, UnknownJobKind
from modelbay.runtime import Runtime
from tests.conftest import gone, repeating, wait_for


@pytest.fixture
def jobs(database: Database, redis: Redis) -> Jobs:
    return Jobs(database, redis)


def test_job_runs_on_a_worker_process_and_reports_progress(jobs: Jobs, start_worker) -> None:
    record, created = jobs.submit("test.count", {"n": 20, "delay": 0.02}, requester="console:ann")
    assert created and record.status == "queued" and record.queue == "cpu"
    events = []
    collector = threading.Thread(target=lambda: events.extend(jobs.events(record.id, poll=0.5)))
    collector.start()
    start_worker()
    collector.join(60)

    assert events[0].status == "queued"
    assert events[-1].status == "finished" and events[-1].terminal
    progress = [e.progress for e in events if e.status == "started"]
    assert len(progress) >= 3 and progress == sorted(progress)  # several reports, never going backwards
    assert any(e.message and e.message.startswith("step ") for e in events)
    done = jobs.get(record.id)
    assert done.status == "finished" and done.progress == 1.0 and done.result == {"counted": 20}
    assert done.attempts == 1 and done.started_at and done.ended_at >= done.started_at


def test_concurrent_submits_share_one_job(jobs: Jobs, redis: Redis) -> None:
    def submit(_: int):
        return jobs.submit("test.count", {"n": 1}, requester="console:ann", dedup_key="qwen@main")

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(submit, range(20)))

    assert len({record.id for record, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Queue("cpu", connection=redis).count == 1


def test_dedup_ends_with_the_job(jobs: Jobs, start_worker) -> None:
    first, _ = jobs.submit("test.count", {"n": 1}, requester="a", dedup_key="k")
    start_worker()
    assert jobs.wait(first.id, 30).status == "finished"
    second, created = jobs.submit("test.count", {"n": 1}, requester="a", dedup_key="k")
    assert created and second.id != first.id


def test_cancel_a_queued_job(jobs: Jobs, redis: Redis) -> None:
    record, _ = jobs.submit("test.count", {"n": 5}, requester="a")
    canceled = jobs.cancel(record.id)
    assert canceled.status == "canceled"
    assert Queue("cpu", connection=redis).count == 0
    with pytest.raises(JobNotCancelable):
        jobs.cancel(record.id)


def test_cancel_a_running_job_at_its_next_progress_report(jobs: Jobs, start_worker) -> None:
    record, _ = jobs.submit("test.count", {"n": 2000, "delay": 0.01}, requester="a")
    start_worker()
    wait_for(lambda: jobs.get(record.id).progress > 0.01)
    jobs.cancel(record.id)
    ended = jobs.wait(record.id, 30)
    assert ended.status == "canceled"
    assert ended.progress < 1.0


def test_force_cancel_stops_a_job_that_reports_nothing(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    pidfile = tmp_path / "horse.pid"
    record, _ = jobs.submit("test.sleepy", {"seconds": 120, "pidfile": str(pidfile)}, requester="a")
    start_worker()
    wait_for(pidfile.exists)
    horse = int(pidfile.read_text())
    assert jobs.cancel(record.id, force=True).status == "canceled"

    def horse_gone() -> bool:
        try:
            os.kill(horse, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(horse_gone, timeout=20)
    assert jobs.get(record.id).status == "canceled"


def test_transient_failure_is_retried(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    record, _ = jobs.submit("test.flaky", {"marker": str(marker), "failures": 1}, requester="a")
    start_worker()
    done = jobs.wait(record.id, 30)
    assert done.status == "finished", done.error
    assert done.attempts == 2 and done.result == {"attempt": 2}
    assert marker.read_text() == "2"


def test_delayed_retry_goes_through_the_scheduler(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    record, _ = jobs.submit("test.flaky_delayed", {"marker": str(marker), "failures": 1}, requester="a")
    start_worker()
    wait_for(lambda: jobs.get(record.id).status == "retrying", timeout=30)
    done = jobs.wait(record.id, 30)
    assert done.status == "finished" and done.attempts == 2


def test_failure_after_retries_keeps_a_one_line_error(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    record, _ = jobs.submit("test.flaky", {"marker": str(tmp_path / "m"), "failures": 5}, requester="a")
    start_worker()
    done = jobs.wait(record.id, 30)
    assert done.status == "failed" and done.attempts == 3  # first run + 2 retries
    assert done.error == "The job failed (ConnectionError). The worker log has the details."
    assert "\n" not in done.error and "Traceback" not in done.error


def test_user_facing_error_is_not_retried(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    record, _ = jobs.submit("test.refuse", {"marker": str(marker)}, requester="a")
    start_worker()
    done = jobs.wait(record.id, 30)
    assert done.status == "failed" and marker.read_text() == "1"
    assert done.error.startswith("No model named `no-such-model`. Did you mean `qwen2.5-0.5b-instruct`?")


def test_timeout_fails_with_a_clear_message(jobs: Jobs, start_worker) -> None:
    record, _ = jobs.submit("test.short_timeout", {"seconds": 30}, requester="a")
    start_worker()
    done = jobs.wait(record.id, 30)
    assert done.status == "failed"
    assert done.error == "The job ran past its time limit and was stopped."


def test_killed_work_horse_marks_the_job_failed(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    pidfile = tmp_path / "horse.pid"
    record, _ = jobs.submit("test.sleepy", {"seconds": 120, "pidfile": str(pidfile)}, requester="a")
    start_worker()
    wait_for(pidfile.exists)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    done = jobs.wait(record.id, 30)
    assert done.status == "failed"
    assert done.error == "The worker stopped while running this job. Try it again."


def test_a_worker_stopped_mid_job_leaves_no_work_horse(jobs: Jobs, start_worker, tmp_path: Path) -> None:
    pidfile = tmp_path / "horse.pid"
    jobs.submit("test.sleepy", {"seconds": 120, "pidfile": str(pidfile)}, requester="a")
    worker = start_worker()
    wait_for(pidfile.exists)
    horse = psutil.Process(int(pidfile.read_text()))
    assert horse.pid in {p.pid for p in worker.descendants()}
    assert os.getpgid(horse.pid) != worker.proc.pid  # rq's setpgrp(): killing the worker's group misses it

    worker.stop()

    assert gone(horse)


def test_a_new_worker_takes_over_retries_from_a_killed_one(jobs: Jobs, start_worker, redis: Redis,
                                                           tmp_path: Path) -> None:
    # rq keeps a dead scheduler's lock 61 s and its workers retry the lock every 10 minutes; ours free a lock
    # whose holder is silent for a worker TTL (15 s here) and look every few seconds, idle or busy.
    first = start_worker(MODELBAY_WORKER_TTL="15")
    wait_for(lambda: redis.get(RQScheduler.get_locking_key("cpu")), timeout=30)
    first.kill()
    start_worker(MODELBAY_WORKER_TTL="15")
    marker = tmp_path / "attempts"
    record, _ = jobs.submit("test.flaky_delayed", {"marker": str(marker), "failures": 1}, requester="a")

    # Read from RQ, not through Jobs.get, which would enqueue an overdue retry itself.
    rq_job = Job.fetch(record.id, connection=redis)
    wait_for(lambda: rq_job.get_status(refresh=True) == "finished", timeout=90, interval=0.5)
    assert marker.read_text() == "2"
    assert jobs.get(record.id).status == "finished"


def test_an_overdue_retry_shows_when_it_runs_then_is_enqueued_by_whoever_reads_it(
    database: Database, redis: Redis, start_worker, tmp_path: Path,
) -> None:
    jobs = Jobs(database, redis, worker_ttl=5)  # a retry late by more than 5 s has no live scheduler
    record, _ = jobs.submit("test.flaky_later", {"marker": str(tmp_path / "m"), "failures": 1}, requester="a")
    # A burst worker runs the first attempt, schedules its retry 5 s later and quits: nobody schedules it.
    assert start_worker(burst=True).proc.wait(60) == 0

    # A watcher sees why it failed, then when it runs again (no frozen progress bar).
    events = jobs.events(record.id, poll=0.5)
    assert next(events).message == "The job failed (ConnectionError). The worker log has the details."
    announced = next(events)
    events.close()
    assert announced.status == "retrying"
    assert re.fullmatch(r"Retrying at \d\d:\d\d:\d\d UTC", announced.message), announced
    assert jobs.get(record.id).progress_detail["message"] == announced.message
    # /jobs shows when it runs again first, then why the last attempt failed.
    assert _summary(jobs.get(record.id)) == f"{announced.message}; last attempt: The job failed (ConnectionError). " \
                                           "The worker log has the details."

    wait_for(lambda: jobs.get(record.id).progress_detail["message"] == "Retrying: waiting for a free worker",
             timeout=30, interval=0.5)
    assert Job.fetch(record.id, connection=redis).get_status() == "queued"

    start_worker()
    done = jobs.wait(record.id, 30)
    assert done.status == "finished" and done.attempts == 2


def test_a_retry_that_no_scheduler_starts_fails_with_a_message(database: Database, redis: Redis, start_worker,
                                                                tmp_path: Path) -> None:
    jobs = Jobs(database, redis, worker_ttl=5)
    # A scheduler that holds the cpu lock and beats, but never enqueues (stuck): nobody may take its place.
    stuck = RQScheduler(["cpu"], connection=redis)
    stuck.register_birth()
    assert stuck.acquire_locks() == {"cpu"}
    try:
        with repeating(1, stuck.heartbeat):
            record, _ = jobs.submit("test.flaky_delayed", {"marker": str(tmp_path / "m"), "failures": 1},
                                    requester="a")
            assert start_worker(burst=True).proc.wait(60) == 0
            done = wait_for(lambda: (r := jobs.get(record.id)).status == "failed" and r, timeout=40, interval=0.5)
    finally:
        stuck.stop()
    assert re.fullmatch(r"Its retry, due at \d\d:\d\d:\d\d UTC, did not start: no worker is scheduling retries\. "
                        r"Check that `modelbay worker` runs, then try the job again\.", done.error)
    with pytest.raises(NoSuchJobError):
        Job.fetch(record.id, connection=redis)  # it cannot start later, behind the user's back


def test_worker_parent_never_imports_heavy_libraries(jobs: Jobs, start_worker) -> None:
    first, _ = jobs.submit("test.modules", {}, requester="a")
    start_worker(queues="gpu")
    one = jobs.wait(first.id, 90)
    second, _ = jobs.submit("test.modules", {}, requester="a")
    two = jobs.wait(second.id, 90)
    assert one.status == two.status == "finished"
    # Each job runs in a fresh fork of a parent that has not imported torch.
    assert one.result["loaded_before"] is False and two.result["loaded_before"] is False
    assert one.result["pid"] != two.result["pid"]


def test_unknown_kind_and_non_plain_params_are_refused(jobs: Jobs) -> None:
    with pytest.raises(UnknownJobKind):
        jobs.submit("nope", {}, requester="a")
    with pytest.raises(TypeError):
        jobs.submit("test.count", {"n": object()}, requester="a")


def test_list_filters_by_requester_and_activity(jobs: Jobs) -> None:
    mine, _ = jobs.submit("test.count", {"n": 1}, requester="slack:U1")
    theirs, _ = jobs.submit("test.count", {"n": 1}, requester="slack:U2")
    jobs.cancel(theirs.id)
    assert [j.id for j in jobs.list(requester="slack:U1")] == [mine.id]
    assert [j.id for j in jobs.list(active=True)] == [mine.id]
    assert {j.id for j in jobs.list()} == {mine.id, theirs.id}


def test_embedded_mode_runs_jobs_in_process(settings, tmp_path: Path) -> None:
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    try:
        record, _ = runtime.jobs.submit("test.count", {"n": 10}, requester="console:me")
        events = list(runtime.jobs.events(record.id, poll=0.2))
        assert events[-1].status == "finished"
        assert any(e.status == "started" and 0 < e.progress < 1 for e in events)

        marker = tmp_path / "m"
        flaky, _ = runtime.jobs.submit("test.flaky_delayed", {"marker": str(marker), "failures": 1}, requester="me")
        assert runtime.jobs.wait(flaky.id, 30).status == "finished"  # the delayed retry needs the scheduler thread

        slow, _ = runtime.jobs.submit("test.count", {"n": 1000, "delay": 0.01}, requester="me")
        wait_for(lambda: runtime.jobs.get(slow.id).status == "started")
        runtime.jobs.cancel(slow.id)
        assert runtime.jobs.wait(slow.id, 20).status == "canceled"
    finally:
        runtime.close()
