"""Hardware probing, fit estimates, the probe job on a real worker with its Redis cache, and /system hardware."""

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
    Fit,
    Gpu,
    Hardware,
    HardwareInfo,
    UnknownPrecision,
    fits,
    max_parameters,
    memory_needed,
    parse_nvidia_smi,
    probe,
)
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.units import human_bytes, human_count
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, wait_for

MiB = 2**20
GB = 10**9
# Captured from `nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits`.
ONE_H100 = "0, NVIDIA H100 80GB HBM3, 81559, 81004\n"
TWO_MIXED = "0, NVIDIA GeForce RTX 4090, 24564, 23850\n1, NVIDIA A100-SXM4-40GB, 40960, 2311\n\n"
UNIFIED = "0, NVIDIA GH200 480GB, [N/A], [N/A]\n"


def machine(gpus: tuple[Gpu, ...] = (), ram: int = 16 * GB) -> Hardware:
    return Hardware(host="box", ram_total=ram, ram_available=ram, disk_free=500 * GB, disk_path="/models",
                    gpus=gpus, probed_at=0.0, gpu_known=True)


H100 = Gpu(0, "NVIDIA H100 80GB HBM3", 81559 * MiB, 81004 * MiB)


# -- parsing and probing ------------------------------------------------------------------------------

def test_parse_nvidia_smi_reads_one_and_several_gpus_in_bytes() -> None:
    assert parse_nvidia_smi(ONE_H100) == (H100,)
    assert parse_nvidia_smi(TWO_MIXED) == (
        Gpu(0, "NVIDIA GeForce RTX 4090", 24564 * MiB, 23850 * MiB),
        Gpu(1, "NVIDIA A100-SXM4-40GB", 40960 * MiB, 2311 * MiB),
    )
    assert parse_nvidia_smi("") == ()


def test_a_unified_memory_gpu_counts_with_no_memory_of_its_own() -> None:
    (gpu,) = parse_nvidia_smi(UNIFIED)
    assert gpu.name == "NVIDIA GH200 480GB" and gpu.memory_total == gpu.memory_free == 0


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


# -- fitting ------------------------------------------------------------------------------------------

def test_memory_needed_is_the_weights_plus_a_fifth_and_512_mib() -> None:
    assert memory_needed(7_600_000_000, "fp16") == 18_240_000_000 + 512 * MiB
    assert memory_needed(7_600_000_000, "int8") == 9_120_000_000 + 512 * MiB
    assert memory_needed(7_600_000_000, "4bit") == 4_560_000_000 + 512 * MiB
    with pytest.raises(UnknownPrecision, match="use one of fp16, int8, 4bit"):
        memory_needed(1, "fp8")


def test_a_7b_model_fits_an_h100_at_every_precision() -> None:
    hw = machine((H100,), ram=16 * GB)
    assert fits(7_600_000_000, hw) == [
        Fit("fp16", 18_240_000_000 + 512 * MiB, "gpu"),
        Fit("int8", 9_120_000_000 + 512 * MiB, "gpu"),
        Fit("4bit", 4_560_000_000 + 512 * MiB, "gpu"),
    ]


def test_smaller_precisions_fit_where_fp16_does_not() -> None:
    h100 = machine((H100,), ram=16 * GB)
    assert [f.where for f in fits(70_600_000_000, h100)] == [None, "gpu", "gpu"]  # int8 just fits 80 GB
    laptop = machine(ram=16 * GB)
    assert [f.where for f in fits(7_600_000_000, laptop)] == [None, "cpu", "cpu"]
    assert fits(None, laptop) == []  # a model card without a parameter count says nothing


def test_a_model_does_not_spread_over_several_gpus() -> None:
    two = machine(parse_nvidia_smi(TWO_MIXED), ram=8 * GB)
    # 14B at fp16 needs 34 GB: the A100's 40 GB holds it, the two cards' 64 GB together would not be used.
    assert fits(14_000_000_000, two)[0].where == "gpu"
    assert fits(20_000_000_000, two)[0].where is None


def test_max_parameters_is_the_largest_count_that_fits() -> None:
    for hw in (machine((H100,)), machine(ram=16 * GB), machine(parse_nvidia_smi(TWO_MIXED), ram=64 * GB)):
        room = max(hw.largest_gpu_memory, hw.ram_available)
        for precision in ("fp16", "int8", "4bit"):
            largest = max_parameters(hw, precision)
            assert memory_needed(largest, precision) <= room < memory_needed(largest + 1, precision)
            assert _where(largest, hw, precision) is not None and _where(largest + 1, hw, precision) is None
    assert human_count(max_parameters(machine((H100,)), "fp16")) == "35B"
    assert max_parameters(machine(ram=100 * MiB), "4bit") == 0


def _where(parameter_count: int, hw: Hardware, precision: str) -> str | None:
    return {f.precision: f.where for f in fits(parameter_count, hw)}[precision]


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
