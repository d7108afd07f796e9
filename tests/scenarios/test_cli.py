"""The `modelbay` command: schema upgrades, the worker's checks, and the processes that arrive later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelbay.engine.db.database import Database

ROOT = Path(__file__).resolve().parents[2]
# The newest migration (each file is named by its revision: 0005_datasets.py is revision 0005).
HEAD = max(p.name[:4] for p in (ROOT / "modelbay" / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    base.update(MODELBAY_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "modelbay", *args], capture_output=True, text=True, env=base,
                          cwd=tmp_path, timeout=120)


def test_db_upgrade_on_each_backend(database_url: str, tmp_path: Path) -> None:
    result = _run(["db", "upgrade"], tmp_path, MODELBAY_DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Database at revision {HEAD}."
    assert _run(["db", "current"], tmp_path, MODELBAY_DATABASE_URL=database_url).stdout.strip() == HEAD
    db = Database(database_url)
    assert {"jobs", "datasets"} <= set(db.table_names())
    db.dispose()


@pytest.mark.postgres
def test_console_refuses_an_outdated_postgres_schema(tmp_path: Path) -> None:
    from tests.conftest import _reset_pg_schema, postgres_url

    _reset_pg_schema()
    result = _run(["console"], tmp_path, MODELBAY_DATABASE_URL=postgres_url())
    assert result.returncode == 1
    assert result.stderr.strip() == (f"The database schema is at nothing and this version needs {HEAD}: run "
                                     "`modelbay db upgrade`.")


def test_worker_needs_redis_and_known_queues(tmp_path: Path) -> None:
    result = _run(["worker"], tmp_path)
    assert result.returncode == 2 and "MODELBAY_REDIS_URL is not set" in result.stderr
    result = _run(["worker", "--queues", "gpu,tpu"], tmp_path, MODELBAY_REDIS_URL="redis://127.0.0.1:6379/9")
    assert result.returncode == 2 and result.stderr.strip() == "Unknown queue tpu: use some of downloads, cpu, gpu."


def test_discord_refuses_to_start_without_its_token(tmp_path: Path) -> None:
    result = _run(["discord"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("MODELBAY_DISCORD_TOKEN is not set") and "README" in result.stderr


def test_slack_refuses_to_start_without_its_tokens(tmp_path: Path) -> None:
    result = _run(["slack"], tmp_path, MODELBAY_SLACK_BOT_TOKEN="xoxb-1")
    assert result.returncode == 2
    assert "MODELBAY_SLACK_APP_TOKEN" in result.stderr and "modelbay api" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "xoxb-1" not in result.stderr


def test_api_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    result = _run(["api"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("MODELBAY_API_TOKEN is not set: the API never runs without a bearer token. "
                                     "Set it and retry.")
