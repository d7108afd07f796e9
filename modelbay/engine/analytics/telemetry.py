"""Prometheus metrics (prometheus-client): answers, tokens, response times, jobs and queues, for scraping.

Each process keeps its metrics in its own `CollectorRegistry` (held by the runtime, never the library's global one, so
two runtimes in one process count apart). Answers are counted where they are stored (`Chats._store`, and
`Arena._finish` for each side of a battle; only for people who did not opt out), job runs where the worker wraps them
(`workers/runner.py`). Jobs by kind and state and the depth of each RQ queue are not counted as things happen: a
custom collector reads them from the jobs table and Redis at each scrape, so every process that exposes them shows the
same truth.

The RQ worker forks a work horse per job; its job metrics reach the parent's `/metrics` port through
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by `modelbay worker` before the library
is imported), as prometheus-client documents for forking servers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy import func, select

from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.jobs import JobRow, JobStatus
from modelbay.engine.jobs.kinds import QUEUES

__all__ = ["CONTENT_TYPE", "JobsCollector", "Telemetry", "serve_worker_metrics"]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds. A chat answer takes from well under a second (a cached tiny model) to minutes (MODELBAY_CHAT_TIMEOUT).
RESPONSE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0)
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
# Jobs take from seconds (a probe) to days (a fine-tune).
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 48 * 3600.0)


class JobsCollector(Collector):
    """Jobs by kind and state (the jobs table) and each RQ queue's depth (Redis), read at scrape time."""

    def __init__(self, db: Database, redis: Redis | None) -> None:
        self._db = db
        self._redis = redis

    def describe(self) -> Iterator[Metric]:
        """The families this collector yields, without reading anything (so registering it costs no query)."""
        yield _jobs_family()
        yield _queue_family()

    def collect(self) -> Iterator[Metric]:
        """Count jobs per (kind, state) in SQL and ask Redis for each queue's length; a failing source is logged
        and its family left out of this scrape (Prometheus then shows the gap) instead of failing the scrape."""
        jobs = _jobs_family()
        try:
            with self._db.session() as session:
                rows = session.execute(select(JobRow.kind, JobRow.status, func.count()).group_by(
                    JobRow.kind, JobRow.status)).all()
        except Exception:  # noqa: BLE001 - a scrape must answer while the database is away
            log.warning("metrics: could not count jobs", exc_info=True)
        else:
            counted = {(kind, JobStatus(status).value): n for kind, status, n in rows}
            for (kind, state), n in sorted(counted.items()):
                jobs.add_metric([kind, state], n)
            yield jobs
        if self._redis is None:
            return
        queues = _queue_family()
        try:
            from rq import Queue

            depths = [(name, Queue(name, connection=self._redis).count) for name in QUEUES]
        except Exception:  # noqa: BLE001 - as above, for Redis
            log.warning("metrics: could not read the queues' depth", exc_info=True)
            return
        for name, depth in depths:
            queues.add_metric([name], depth)
        yield queues


def _jobs_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("modelbay_jobs", "Jobs in the jobs table, by kind and state.", labels=["kind", "state"])


def _queue_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("modelbay_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])


class Telemetry:
    """One process's Prometheus metrics: answers, tokens and their timings per model, job runs, and (given the
    database) jobs by state and queue depth read at scrape time."""

    def __init__(self, db: Database | None = None, redis: Redis | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.answers = Counter("modelbay_answers", "Answers given, by model and outcome (ok, partial, failed, "
                               "canceled).", ["model", "status"], registry=r)
        self.tokens = Counter("modelbay_tokens", "Tokens of answered chats, by model and direction (input: the "
                              "prompt, output: the answer).", ["model", "direction"], registry=r)
        self.first_token = Histogram("modelbay_time_to_first_token_seconds", "Seconds from the question to the "
                                     "answer's first token, by model.", ["model"], buckets=FIRST_TOKEN_BUCKETS,
                                     registry=r)
        self.response = Histogram("modelbay_response_seconds", "Seconds from the question to the whole answer, by "
                                  "model.", ["model"], buckets=RESPONSE_BUCKETS, registry=r)
        self.job_runs = Histogram("modelbay_job_seconds", "Seconds one run of a job took, by kind and outcome "
                                  "(finished, failed, retrying, canceled).", ["kind", "outcome"], buckets=JOB_BUCKETS,
                                  registry=r)
        self.jobs = JobsCollector(db, redis) if db is not None else None
        if self.jobs is not None:
            r.register(self.jobs)

    def observe_answer(self, model: str, status: str, *, input_tokens: int | None, output_tokens: int | None,
                       ttft_ms: float | None, total_ms: float) -> None:
        """Count one stored answer of a model (times in milliseconds, as analytics keeps them)."""
        self.answers.labels(model, status).inc()
        if input_tokens:
            self.tokens.labels(model, "input").inc(input_tokens)
        if output_tokens:
            self.tokens.labels(model, "output").inc(output_tokens)
        if ttft_ms is not None:
            self.first_token.labels(model).observe(ttft_ms / 1000)
        self.response.labels(model).observe(total_ms / 1000)

    def observe_job(self, kind: str, outcome: str, seconds: float) -> None:
        """Record one run of a job: its kind, how it ended and how long it took."""
        self.job_runs.labels(kind, outcome).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (served with `CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def sample_names(self) -> set[str]:
        """Every sample name these metrics can expose (`modelbay_answers_total`, `modelbay_response_seconds_bucket`,
        ...), without scraping: what a dashboard's queries may use."""
        names: set[str] = set()
        for metric in (self.answers, self.tokens, self.first_token, self.response, self.job_runs):
            for family in metric.describe():
                names |= _sample_names(family)
        for family in JobsCollector(None, None).describe():  # type: ignore[arg-type]
            names |= _sample_names(family)
        return names

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:  # noqa: S104 - a scrape port, for Prometheus
        """Serve these metrics over HTTP on `port` in a daemon thread (prometheus_client.start_http_server)."""
        return start_http_server(port, addr, registry=self.registry)


def _sample_names(family: Metric) -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}[family.type]
    return {family.name + suffix for suffix in suffixes}


def serve_worker_metrics(port: int, db: Database, redis: Redis, multiprocess_dir: str | None) -> Any:
    """Serve a worker's metrics on `port`: jobs by state and queue depth, and, from `multiprocess_dir`, the job
    runs its forked work horses recorded (prometheus-client's multiprocess mode)."""
    registry = CollectorRegistry()
    if multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    registry.register(JobsCollector(db, redis))
    return start_http_server(port, registry=registry)
