"""Hardware probing on this machine, the probe job on a real worker with its Redis cache, and /system hardware.

Parsing and the fit estimates are unit tests (tests/unit/engine/test_hardware.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest
from redis import Redis

import modelbay.bot.commands.system  # noqa: F401 - registers /system hardware until the commands package does
from modelbay.bot import COMMANDS, Actor, Dispatcher
from modelbay.config import Settings, load_settings
from modelbay.engine.db.database import Database
from modelbay.engine.hardware import (
    CACHE_KEY,
    FRESH_FOR,
    PROBE_KIND,
    Hardware,
    HardwareInfo,
    max_parameters,
    probe,
)
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.units import human_bytes, human_count
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, wait_for

MiB = 2**20
GB = 10**9
# Captured from `nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits`.
TWO_MIXED = "0, NVIDIA GeForce RTX 4090, 24564, 23850\n1, NVIDIA A100-SXM4-40GB, 40960, 2311\n\n"


# -- probing ----------------------------------------------------------------------------------------

def test_probe_measures_this_machine(tmp_path: Path) -> None:
    store = tmp_path / "store" / "models"
    hw = probe(store)

    assert store.is_dir()  # created on first probe
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert hw.ram_total == int(meminfo["MemTotal"].split()[0]) * 1024
    assert 0 < hw.ram_available <= hw.ram_total
    assert abs(hw.disk_free - shutil.disk_usage(store).free) < 1 * GB  # other processes write meanwhile
    assert hw.disk_path == str(store) and hw.host == socket.gethostname()
    if shutil.which("nvidia-smi") is None:  # this machine: no NVIDIA driver, so certainly no usable GPU
        assert hw.gpus == () and hw.gpu_known and hw.largest_gpu_memory == 0
    assert Hardware.from_json(hw.to_json()) == hw


def _fake_nvidia_smi(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder.mkdir()
    binary = folder / "nvidia-smi"
    binary.write_text(f"#!/bin/sh\n{script}\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_probe_asks_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(tmp_path / "bin", f"printf '{TWO_MIXED}'", monkeypatch)
    hw = probe(tmp_path / "models")
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-40GB"] and hw.gpu_known
    assert hw.largest_gpu_memory == 40960 * MiB


def test_a_failing_nvidia_smi_leaves_the_gpus_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_smi(tmp_path / "bin", "echo 'NVIDIA-SMI has failed because it could not communicate' >&2; exit 9",
                     monkeypatch)
    hw = probe(tmp_path / "models")
    assert hw.gpus == () and not hw.gpu_known
    assert hw.ram_total > 0  # the rest of the probe still answers


# -- the probe job and its cache ----------------------------------------------------------------------

@pytest.fixture
def bot_settings(settings: Settings, database: Database, tmp_path: Path) -> Settings:
    """Settings of a bot process on another machine: its own home, the same database and Redis as the workers."""
    return load_settings(home=tmp_path / "bot-home", database_url=database.url, redis_url=REDIS_URL,
                         environment="test")


@pytest.fixture
def info(database: Database, redis: Redis, bot_settings: Settings) -> HardwareInfo:
    return HardwareInfo(Jobs(database, redis), redis, bot_settings)


def test_a_gpu_worker_answers_and_the_answer_is_cached(
    info: HardwareInfo, database: Database, redis: Redis, start_worker, tmp_path: Path
) -> None:
    start_worker(queues="gpu")
    hw, notice = info.current(wait=60)

    assert notice is None
    assert hw.disk_path == str(tmp_path / "worker-home" / "models")  # measured on the worker, not here
    assert 0 < redis.ttl(CACHE_KEY) <= FRESH_FOR
    (job,) = Jobs(database, redis).list()
    assert job.kind == PROBE_KIND and job.queue == "gpu" and job.status == "finished"
    assert job.progress_detail.get("message") == "Probing RAM, GPUs and disk"

    again, notice = info.current(wait=60)
    assert again == hw and notice is None
    assert len(Jobs(database, redis).list()) == 1  # served from the cache, no second job


def test_without_a_gpu_worker_this_machine_answers_with_a_notice(
    info: HardwareInfo, database: Database, redis: Redis, bot_settings: Settings, start_worker
) -> None:
    start_worker(queues="downloads,cpu")  # workers exist, but none takes the gpu queue
    hw, notice = info.current(wait=1)

    assert notice == "GPU memory unknown: no gpu worker answered within 1s; showing this machine's RAM and disk."
    assert hw.gpus == () and not hw.gpu_known and hw.ram_total > 0
    assert hw.disk_path == str(bot_settings.resolved_model_store)

    # The probe stays queued, so a gpu worker that starts later answers it and fills the cache.
    start_worker(queues="gpu")
    wait_for(lambda: redis.exists(CACHE_KEY))
    hw, notice = info.current(wait=1)
    assert notice is None and hw.gpu_known
    assert len(Jobs(database, redis).list()) == 1


def test_a_failed_probe_is_named_in_the_notice(
    info: HardwareInfo, database: Database, redis: Redis, worker_env: dict[str, str], start_worker, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    worker_env["MODELBAY_MODEL_STORE"] = str(blocker / "models")
    start_worker(queues="gpu")
    hw, notice = info.current(wait=60)

    (job,) = Jobs(database, redis).list()
    assert job.status == "failed" and job.error.startswith(f"The model store {blocker / 'models'} cannot be used")
    assert notice == (f"GPU memory unknown: the hardware probe (job `{job.id}`) failed; "
                      "showing this machine's RAM and disk.")
    assert hw.ram_total > 0 and not redis.exists(CACHE_KEY)


# -- /system hardware ---------------------------------------------------------------------------------

def test_system_hardware_shows_the_machine_and_the_largest_models(settings: Settings) -> None:
    settings.roles = {"admin": ["console:*"], "viewer": ["discord:*"]}
    runtime = Runtime(settings)
    runtime.db.upgrade()  # the probe needs the jobs table, not the catalog
    runtime.start_embedded_workers()  # the probe job runs in-process on the embedded gpu worker
    try:
        assert COMMANDS.get(("system", "hardware")).slow
        reply = asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line(
            "/system hardware", Actor("discord", "7", "vic")))
        hw = Hardware.from_json(runtime.redis.get(CACHE_KEY))
    finally:
        runtime.close()

    assert reply.title == f"Hardware on {hw.host}" and reply.tone == "info"
    fields = {f.name: f.value for f in reply.fields}
    assert fields["RAM"] == f"{human_bytes(hw.ram_available)} available of {human_bytes(hw.ram_total)}"
    assert fields["Disk"].endswith(f"free in {settings.resolved_model_store}")
    if not hw.gpus:
        assert fields["GPU"] == "none"
    assert [row[:2] for row in reply.table.rows] == [
        [precision, human_count(max_parameters(hw, precision))] for precision in ("fp16", "int8", "4bit")
    ]
    assert reply.footer.startswith("Probed ") and "512 MiB" in reply.footer
