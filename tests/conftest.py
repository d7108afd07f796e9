"""Shared fixtures: settings, both databases, the machine's Redis, real RQ worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
from redis import Redis
from sqlalchemy import create_engine, text

from modelbay.config import Settings, load_settings
from modelbay.engine.db.database import Database
from modelbay.engine.jobs.kinds import KINDS, JobKind, RetryPolicy, register_kind
from tests.support.databases import MigratedSchema, MigratedSqlite
from tests.support.hub import hub  # noqa: F401 - fixture
from tests.support.tinymodel import tiny_chat_model, tiny_model  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
# pytest-xdist runs the tests in several worker processes (gw0, gw1, ...; see addopts in pyproject.toml); each
# gets a Redis database and a PostgreSQL schema of its own, since tests flush and drop them. A plain run is "".
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _worker_redis_url(url: str) -> str:
    """The Redis URL of this worker: the given database number plus the worker's index (gw1 of .../9 is .../10)."""
    if not XDIST_WORKER:
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{base + int(XDIST_WORKER.removeprefix('gw'))}"))


POSTGRES_URL = os.environ.get("MODELBAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = _worker_redis_url(os.environ.get("MODELBAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"))
PG_SCHEMA = os.environ.get("MODELBAY_TEST_PG_SCHEMA", "modelbay_test") + (f"_{XDIST_WORKER}" if XDIST_WORKER else "")

# Modules whose tests run in one pytest-xdist worker, one after another, sent before any other test: the vLLM servers
# test_vllm.py starts for its session and its modules (about 30 s each) start once, not once per worker.
ONE_WORKER = ("tests/scenarios/test_vllm.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201 - xdist's types
    """Send tests to the workers one at a time (as --dist load does), but each module of ONE_WORKER whole, first.

    (xdist's own --dist loadgroup would do it by mark, but its marking of node ids has no effect under pytest 9.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER else nodeid  # the biggest units go first (--loadscope-reorder)

    return Scheduling(config, log)


# Job kinds the tests submit; the functions live in tests/support/jobs.py.
TEST_KINDS = [
    JobKind("test.count", "tests.support.jobs.count", "cpu", timeout=60),
    JobKind("test.flaky", "tests.support.jobs.flaky", "cpu", timeout=60, retry=RetryPolicy(max=2, intervals=(0,))),
    JobKind("test.flaky_delayed", "tests.support.jobs.flaky", "cpu", timeout=60,
            retry=RetryPolicy(max=1, intervals=(1,))),
    JobKind("test.flaky_later", "tests.support.jobs.flaky", "cpu", timeout=60,
            retry=RetryPolicy(max=1, intervals=(5,))),
    JobKind("test.refuse", "tests.support.jobs.refuse", "cpu", timeout=60, retry=RetryPolicy(max=2)),
    JobKind("test.sleepy", "tests.support.jobs.sleepy", "cpu", timeout=60),
    JobKind("test.short_timeout", "tests.support.jobs.sleepy", "cpu", timeout=2),
    JobKind("test.modules", "tests.support.jobs.modules", "gpu", timeout=120),
]


@pytest.fixture(autouse=True)
def _test_kinds() -> Iterator[None]:
    for kind in TEST_KINDS:
        register_kind(kind)
    yield
    for kind in TEST_KINDS:
        KINDS.pop(kind.name, None)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for an embedded ModelBay in a fresh data dir, isolated from the developer's environment."""
    for key in list(os.environ):
        if key.startswith("MODELBAY_") and not key.startswith("MODELBAY_TEST"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    return load_settings(home=tmp_path / "home", environment="test")


def _reset_pg_schema() -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    engine.dispose()


def postgres_url() -> str:
    """The test PostgreSQL URL, confined to its own schema."""
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{PG_SCHEMA}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, once for SQLite and once for the machine's PostgreSQL (migrated instead, by the
    `database` fixture, for a test that asks for that too)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modelbay.db'}"
    if "database" not in request.fixturenames:
        _reset_pg_schema()
    return postgres_url()


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> MigratedSqlite:
    return MigratedSqlite(tmp_path_factory.mktemp("migrated"))


_MIGRATED_SCHEMA = MigratedSchema(POSTGRES_URL, PG_SCHEMA, postgres_url())


@pytest.fixture
def database(database_url: str, _migrated_sqlite: MigratedSqlite) -> Iterator[Database]:
    """A migrated database on each backend, with no rows (tests/support/databases.py: migrated once per process)."""
    if database_url.startswith("sqlite"):
        _migrated_sqlite.copy_to(database_url)
    else:
        _MIGRATED_SCHEMA.prepare()
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def redis() -> Iterator[Redis]:
    """The machine's Redis (a database of its own), flushed around each test."""
    connection = Redis.from_url(REDIS_URL)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def gone(process: psutil.Process) -> bool:
    """Whether a process has ended (a zombie nobody reaped counts: PID 1 here may never reap orphans)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class WorkerProcess:
    """A real `modelbay worker` process, started and stopped by a test."""

    def __init__(self, env: dict[str, str], log: Path, queues: str = "downloads,cpu,gpu", *,
                 burst: bool = False) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelbay", "worker", "--queues", queues, *(["--burst"] if burst else [])],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def descendants(self) -> list[psutil.Process]:
        """The worker's processes below it now: its scheduler, its work horse and what the horse started."""
        return _descendants(self.proc.pid)

    def stop(self) -> None:
        """Stop the worker: warm shutdown, then kill its process group and every process below it."""
        # The work horse calls setpgrp() and leaves the group, and what it starts may leave its session: they are
        # found by parentage, before the worker's death hands them to PID 1.
        below = {p.pid: p for p in self.descendants()}
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                below.update((p.pid, p) for p in self.descendants())  # a horse forked meanwhile
        try:
            # A job that never ends by itself (a model server) keeps its work horse alive through a warm shutdown.
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for process in below.values():
            try:
                process.kill()  # psutil checks the pid still names the same process
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(5)
        wait_for(lambda: all(gone(p) for p in below.values()), timeout=10)
        self._log.close()

    def kill(self) -> None:
        """Kill the worker, its scheduler and its work horse at once with SIGKILL, as when its machine is lost."""
        below = self.descendants()
        os.killpg(self.proc.pid, signal.SIGKILL)
        for process in below:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(5)


@pytest.fixture
def worker_env(tmp_path: Path, redis: Redis, database: Database) -> dict[str, str]:
    """Environment for worker processes sharing this test's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(
        MODELBAY_HOME=str(tmp_path / "worker-home"),
        MODELBAY_DATABASE_URL=database.url,
        MODELBAY_REDIS_URL=REDIS_URL,
        MODELBAY_ENVIRONMENT="test",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator:
    """Start real worker processes; all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(queues: str = "downloads,cpu,gpu", *, burst: bool = False, **env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **env}, tmp_path / f"worker-{len(started)}.log", queues, burst=burst)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    """Poll predicate until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@contextlib.contextmanager
def repeating(every: float, action: Callable[[], object]) -> Iterator[None]:
    """Runs action every `every` seconds on a background thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            action()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
