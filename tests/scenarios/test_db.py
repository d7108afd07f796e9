"""Database connections that drop: PostgreSQL backends killed between and during writes; a driver not installed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from redis import Redis
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import OperationalError

from modelbay.bot import Actor, Dispatcher
from modelbay.bot.errors import render_error, style_of
from modelbay.config import SettingsError, load_settings
from modelbay.engine.db.database import Database
from modelbay.engine.errors import DatabaseDriverMissing, DatabaseUnavailable
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
from modelbay.engine.db.schema.jobs import JobRow, JobStatus
from modelbay.runtime import Runtime
from tests.conftest import (
    PG_SCHEMA, POSTGRES_URL, REDIS_URL, ROOT, _reset_pg_schema, postgres_url, repeating,
)

APP = f"{PG_SCHEMA}_app"  # the application_name that marks this test's connections, and only them, for killing
DROPPED = "The database connection dropped. Try again in a moment; if it keeps happening, ask an admin to check the database."


class Killer:
    """Terminates PostgreSQL backends from a connection of its own, as an admin or a failover would."""

    def __init__(self) -> None:
        self.admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        self.kills = 0

    def terminate(self, pid: int) -> None:
        """Terminate one backend."""
        with self.admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        self.kills += 1

    def terminate_all(self) -> int:
        """Terminate every backend of this test's connections; return how many there were."""
        with self.admin.connect() as connection:
            killed = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :app"
            ), {"app": APP}).scalar()
        self.kills += killed
        return killed

    def during(self, db: Database, statement: str, times: int = 1) -> None:
        """Terminate the backend of the next `times` statements starting with `statement`, just before they run."""
        left = [times]

        def kill(connection, cursor, sql, parameters, context, executemany) -> None:  # noqa: ANN001
            if left[0] and sql.startswith(statement):
                left[0] -= 1
                self.terminate(connection.connection.dbapi_connection.info.backend_pid)

        event.listen(db.engine, "before_cursor_execute", kill)

    def at_commit(self, db: Database, times: int = 1) -> None:
        """Terminate the backend of the next `times` commits, just before they are sent."""
        left = [times]

        def kill(connection) -> None:  # noqa: ANN001
            if left[0]:
                left[0] -= 1
                self.terminate(connection.connection.dbapi_connection.info.backend_pid)

        event.listen(db.engine, "commit", kill)


@pytest.fixture
def pg() -> Iterator[Database]:
    _reset_pg_schema()
    db = Database(f"{postgres_url()}&application_name={APP}")
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def killer() -> Iterator[Killer]:
    killer = Killer()
    yield killer
    killer.admin.dispose()


def _runtime(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Runtime:  # noqa: ANN001
    """A prepared runtime on this test's PostgreSQL connections and Redis, isolated from the environment."""
    for key in list(os.environ):
        if key.startswith("MODELBAY_") and not key.startswith("MODELBAY_TEST"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    _reset_pg_schema()
    url = f"{postgres_url()}&application_name={APP}"
    Database(url).upgrade()
    runtime = Runtime(load_settings(home=tmp_path / "home", environment="test", database_url=url,
                                    redis_url=REDIS_URL))
    runtime.prepare()
    return runtime


def _job_row(db: Database, job_id: str) -> JobRow:
    with db.session() as session:
        return session.get(JobRow, job_id)


@pytest.mark.postgres
def test_a_pooled_connection_killed_between_writes_is_replaced(pg: Database, redis: Redis, killer: Killer) -> None:
    jobs = Jobs(pg, redis)
    record, _ = jobs.submit("test.count", {"n": 1}, requester="a")
    assert killer.terminate_all() >= 1  # the pooled connection dies while idle
    jobs.transition(record.id, JobStatus.STARTED)
    assert _job_row(pg, record.id).status is JobStatus.STARTED


@pytest.mark.postgres
def test_idempotent_writes_run_once_more_when_the_connection_drops_during_them(
    pg: Database, redis: Redis, killer: Killer,
) -> None:
    jobs = Jobs(pg, redis)
    record, _ = jobs.submit("test.count", {"n": 1}, requester="a")

    killer.during(pg, "UPDATE jobs")
    jobs.transition(record.id, JobStatus.STARTED)
    killer.at_commit(pg)
    jobs.save_progress(record.id, 0.5, "half way", {"step": 1})
    killer.at_commit(pg)
    jobs.transition(record.id, JobStatus.FINISHED, result={"counted": 1})

    assert killer.kills == 3
    row = _job_row(pg, record.id)
    assert row.status is JobStatus.FINISHED and row.result == {"counted": 1}
    assert row.attempts == 1  # the repeated start counts once

    registry = Registry(pg)
    killer.during(pg, "INSERT INTO models")
    model = registry.upsert({"name": "tiny", "repo_id": "org/tiny", "category": "chat"}, source="hub")
    version = registry.add_version(model.id, "main")
    killer.during(pg, "UPDATE model_versions")
    registry.update_version(version.id, install_state="installed")
    assert registry.get_version(version.id).install_state == "installed"
    assert registry.names() == ["tiny"]  # registered once, though its insert ran twice
    assert killer.kills == 5


@pytest.mark.postgres
def test_a_rating_whose_connection_drops_is_stored_once(redis: Redis, killer: Killer, tmp_path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = _runtime(tmp_path, monkeypatch)
    try:
        model = runtime.registry.get("qwen2.5-0.5b-instruct")
        version = runtime.registry.add_version(model.id, "main")
        with runtime.db.session() as session:
            chat = ChatSession(platform="slack", channel_id="C1", user_key="slack:U1", model_version_id=version.id)
            answer = Message(role="assistant", user_key="slack:U1")
            chat.messages.append(answer)
            session.add(chat)
        killer.during(runtime.db, "INSERT INTO feedback")
        assert runtime.chats.rate(answer.id, "slack:U1", up=True).up
        killer.at_commit(runtime.db)
        runtime.chats.rate(answer.id, "slack:U1", up=True, reason="helpful")
        assert killer.kills == 2
        with runtime.db.session() as session:
            ratings = session.scalars(select(Feedback)).all()
        assert [(f.rating, f.reason) for f in ratings] == [(1, "helpful")]
    finally:
        runtime.close()


@pytest.mark.postgres
def test_a_progress_report_lost_to_the_database_does_not_stop_the_job(pg: Database, redis: Redis,
                                                                     killer: Killer) -> None:
    jobs = Jobs(pg, redis)
    record, _ = jobs.submit("test.count", {"n": 1}, requester="a")
    killer.during(pg, "UPDATE jobs", times=2)
    jobs.save_progress(record.id, 0.3, "a third", {})  # dropped twice: logged and skipped, not raised
    jobs.save_progress(record.id, 0.6, "two thirds", {})
    assert killer.kills == 2
    assert _job_row(pg, record.id).progress == 0.6


@pytest.mark.postgres
def test_a_write_that_drops_twice_or_cannot_be_repeated_fails_in_one_line(
    pg: Database, redis: Redis, killer: Killer,
) -> None:
    jobs = Jobs(pg, redis)
    record, _ = jobs.submit("test.count", {"n": 1}, requester="a")
    killer.during(pg, "UPDATE jobs", times=2)
    with pytest.raises(DatabaseUnavailable) as twice:
        jobs.transition(record.id, JobStatus.STARTED)

    # Submitting inserts a new job: not repeated, the person is told instead.
    killer.during(pg, "INSERT INTO jobs")
    with pytest.raises(DatabaseUnavailable) as insert:
        jobs.submit("test.count", {"n": 2}, requester="a")
    with pg.session() as session:
        assert session.scalars(select(JobRow.id)).all() == [record.id]  # nothing half-made

    for exc in (twice.value, insert.value):
        reply = render_error(exc)
        assert reply.text == DROPPED and reply.title == "Database unavailable"
        assert style_of(exc).http_status == 503


@pytest.mark.postgres
def test_a_driver_error_outside_the_session_renders_as_the_one_line(pg: Database, killer: Killer) -> None:
    with pytest.raises(OperationalError) as raw, pg.engine.connect() as connection:
        killer.terminate(connection.connection.dbapi_connection.info.backend_pid)
        connection.execute(text("SELECT 1"))
    reply = render_error(raw.value, reraise_unknown=True)  # a known error: not re-raised as unknown
    assert reply.text == DROPPED
    assert style_of(raw.value).http_status == 503


@pytest.mark.postgres
def test_commands_under_connection_kills_answer_or_say_the_one_line(
    redis: Redis, killer: Killer, tmp_path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = _runtime(tmp_path, monkeypatch)
    dispatcher = Dispatcher(runtime, reraise_unknown=True)  # an unknown error fails the test
    actor = Actor("console", "ann")
    replies = []
    try:
        with repeating(0.03, killer.terminate_all):
            for i in range(150):
                line = ("/jobs", "/models list", "/models list installed:true")[i % 3]
                replies.append(asyncio.run(dispatcher.dispatch_line(line, actor)))
    finally:
        runtime.close()
    failed = [r for r in replies if r.title == "Database unavailable"]
    assert killer.kills > 10
    assert all(r.text == DROPPED for r in failed)
    assert len(failed) <= len(replies) // 10  # most still answer: a dead connection is replaced, a read repeated


def test_a_postgresql_url_without_its_driver_says_which_extra_to_install(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(MODELBAY_HOME=str(tmp_path), MODELBAY_DATABASE_URL="postgresql://modelbay@127.0.0.1:5432/modelbay",
               PYTHONPATH=str(ROOT))
    # The first command's install has no psycopg: importing it fails as it would there.
    program = "import sys; sys.modules['psycopg'] = None; from modelbay.cli import app; app()"
    for command in (["db", "current"], ["db", "upgrade"], ["worker"], ["console"]):
        if command == ["worker"]:
            env["MODELBAY_REDIS_URL"] = REDIS_URL
        done = subprocess.run([sys.executable, "-c", program, *command], env=env, cwd=tmp_path, input="",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr == ("MODELBAY_DATABASE_URL is a PostgreSQL URL, but its driver `psycopg` is not installed: "
                               "run `pip install 'modelbay[postgres]'` and start again.\n"), command


@pytest.mark.parametrize("url", ["postgresql+psycopg2://modelbay@127.0.0.1/modelbay",
                                 "postgresql+asyncpg://modelbay@127.0.0.1/modelbay",
                                 "postgresql+pg8000://modelbay@127.0.0.1/modelbay"])
def test_another_postgresql_driver_is_refused_in_one_line_naming_psycopg_3(tmp_path, url: str) -> None:
    # Installing the driver the URL names would not help: ModelBay speaks psycopg 3 only.
    with pytest.raises(SettingsError) as caught:
        load_settings(home=tmp_path, database_url=url)
    driver = url.split("+", 1)[1].split(":", 1)[0]
    assert str(caught.value) == (f"MODELBAY_DATABASE_URL: ModelBay uses psycopg 3, not {driver}: use a "
                                 "postgresql+psycopg:// or postgresql:// URL, with `pip install 'modelbay[postgres]'`")
    with pytest.raises(DatabaseDriverMissing) as missing:
        Database(url)  # built without Settings (none of these drivers is installed with ModelBay)
    assert str(missing.value) == (f"MODELBAY_DATABASE_URL names the driver `{driver}`, but ModelBay uses psycopg 3 (a "
                                  "postgresql+psycopg:// or postgresql:// URL): change the URL to that driver's, and "
                                  "run `pip install 'modelbay[postgres]'`.")
