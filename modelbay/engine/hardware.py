"""Hardware facts (RAM, GPUs, free disk) and whether a model of a given size fits them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from math import ceil, floor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from redis import Redis

from modelbay.engine.errors import ModelStoreUnusable, UnknownPrecision
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.jobs.kinds import PROBE

if TYPE_CHECKING:
    from modelbay.config import Settings

__all__ = [
    "AS_STORED",
    "CACHE_KEY",
    "FRESH_FOR",
    "PRECISIONS",
    "PROBE_KIND",
    "PROBE_REQUESTER",
    "Fit",
    "Gpu",
    "Hardware",
    "HardwareInfo",
    "HardwareReading",
    "ModelStoreUnusable",
    "UnknownPrecision",
    "fits",
    "fits_model",
    "max_parameters",
    "memory_needed",
    "parse_nvidia_smi",
    "probe",
]

log = logging.getLogger(__name__)

CACHE_KEY = "modelbay:hardware"
FRESH_FOR = 300  # seconds; free memory and disk change as models are installed and served
PROBE_KIND = PROBE.name
PROBE_REQUESTER = "system:hardware"  # the jobs list shows who asked; here no person did
NVIDIA_SMI_TIMEOUT = 10  # seconds; a wedged driver makes nvidia-smi hang rather than fail

# Bytes per parameter of the weights at each precision.
PRECISIONS: dict[str, float] = {"fp16": 2.0, "int8": 1.0, "4bit": 0.5}
# Beyond the weights, inference needs activations and a KV cache (a few thousand tokens of context come to
# roughly a fifth of the weights for 1-70B decoder models) and a fixed runtime cost (CUDA context, kernels,
# allocator slack: 300-500 MiB). Fractions keep memory_needed and max_parameters exact inverses.
WEIGHTS_FACTOR = Fraction(6, 5)
RUNTIME_OVERHEAD = 512 * 2**20
AS_STORED = "as stored"  # the precision of a fit estimated from the weights' size when the parameter count is unknown


@dataclass(frozen=True)
class Gpu:
    """One GPU as its driver reports it; memory in bytes."""

    index: int
    name: str
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class Hardware:
    """What one machine offers models: RAM, GPUs and free disk in the model store, all in bytes."""

    host: str
    ram_total: int
    ram_available: int
    disk_free: int
    disk_path: str
    gpus: tuple[Gpu, ...]
    probed_at: float  # Unix time on the probed machine
    gpu_known: bool  # False when the GPUs could not be asked about, so an empty `gpus` means nothing

    @property
    def largest_gpu_memory(self) -> int:
        """Total memory of the biggest single GPU, 0 without one (a model is not split across GPUs here)."""
        return max((gpu.memory_total for gpu in self.gpus), default=0)

    def to_dict(self) -> dict[str, Any]:
        """Return plain data, as a job result."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        """Rebuild from to_dict()'s data."""
        return cls(**{**data, "gpus": tuple(Gpu(**gpu) for gpu in data["gpus"])})

    def to_json(self) -> str:
        """Serialize for the Redis cache."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: str | bytes) -> Hardware:
        """Parse what to_json() wrote."""
        return cls.from_dict(json.loads(data))


@dataclass(frozen=True)
class Fit:
    """Whether a model fits at one precision: the memory it needs and where it would run (None: nowhere)."""

    precision: str
    needed: int
    where: Literal["gpu", "cpu"] | None


# -- probing ------------------------------------------------------------------------------------------

def _mib(value: str) -> int:
    # Unified-memory parts (GH200, GB10) report "[N/A]": the GPU is real but has no memory of its own to plan on.
    text = value.strip()
    return int(text) * 2**20 if text.isdigit() else 0


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits` output."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # Split from both ends so that a comma inside a GPU name cannot shift the numbers.
        index, _, rest = line.partition(",")
        name, total, free = rest.rsplit(",", 2)
        gpus.append(Gpu(int(index), name.strip(), _mib(total), _mib(free)))
    return tuple(gpus)


def _probe_gpus() -> tuple[tuple[Gpu, ...], bool]:
    """Return the GPUs and whether that answer can be trusted."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        # The NVIDIA driver ships nvidia-smi, and CUDA cannot run without the driver: no binary, no usable GPU.
        return (), True
    try:
        done = subprocess.run(
            [binary, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=True,
        )
        return parse_nvidia_smi(done.stdout), True
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        # A driver that is installed but not answering says nothing about the GPUs, so they stay unknown.
        log.warning("nvidia-smi failed, GPUs unknown: %s", exc)
        return (), False


def _memory() -> tuple[int, int]:
    """Return total and available RAM in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            kib = {key: int(value.split()[0]) for key, _, value in (line.partition(":") for line in meminfo)}
        # MemAvailable counts reclaimable page cache too; kernels before 3.14 lack it, so MemFree stands in.
        return kib["MemTotal"] * 1024, kib.get("MemAvailable", kib["MemFree"]) * 1024
    except (OSError, IndexError, KeyError, ValueError):
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page


def _disk_free(model_store: Path) -> int:
    try:
        model_store.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(model_store).free
    except OSError as exc:
        raise ModelStoreUnusable(model_store, exc.strerror or type(exc).__name__) from exc


def probe(model_store: Path) -> Hardware:
    """Measure this machine: RAM, GPUs (through nvidia-smi) and free disk in the model store.

    Raises:
        ModelStoreUnusable: the model store cannot be created or measured.
    """
    ram_total, ram_available = _memory()
    gpus, gpu_known = _probe_gpus()
    return Hardware(
        host=socket.gethostname(), ram_total=ram_total, ram_available=ram_available,
        disk_free=_disk_free(model_store), disk_path=str(model_store), gpus=gpus, probed_at=time.time(),
        gpu_known=gpu_known,
    )


# -- fitting ------------------------------------------------------------------------------------------

def _bytes_per_parameter(precision: str) -> Fraction:
    if precision not in PRECISIONS:
        raise UnknownPrecision(precision, PRECISIONS)
    return Fraction(PRECISIONS[precision]) * WEIGHTS_FACTOR


def memory_needed(parameter_count: int, precision: str) -> int:
    """Estimate the memory, in bytes, to run a model of parameter_count at precision: weights plus overhead.

    Raises:
        UnknownPrecision: precision is not one of PRECISIONS.
    """
    return ceil(parameter_count * _bytes_per_parameter(precision)) + RUNTIME_OVERHEAD


def _where(needed: int, hw: Hardware) -> Literal["gpu", "cpu"] | None:
    # Total rather than free GPU memory: what other jobs hold now is released when they end.
    if needed <= hw.largest_gpu_memory:
        return "gpu"
    if needed <= hw.ram_available:
        return "cpu"
    return None


def fits(parameter_count: int | None, hw: Hardware) -> list[Fit]:
    """Say for each precision whether a model fits the largest GPU, else available RAM, else nowhere."""
    if parameter_count is None:
        return []
    return [Fit(precision, needed, _where(needed, hw))
            for precision in PRECISIONS for needed in (memory_needed(parameter_count, precision),)]


def fits_model(parameter_count: int | None, size_bytes: int | None, hw: Hardware) -> list[Fit]:
    """`fits` by parameter count; without one, a single estimate (precision `AS_STORED`) from the weights' size
    in bytes at their own precision, with the same overhead (`WEIGHTS_FACTOR`, `RUNTIME_OVERHEAD`); [] when
    neither is known: unknown, never "does not fit"."""
    if parameter_count:
        return fits(parameter_count, hw)
    if not size_bytes:
        return []
    needed = ceil(size_bytes * WEIGHTS_FACTOR) + RUNTIME_OVERHEAD
    return [Fit(AS_STORED, needed, _where(needed, hw))]


def max_parameters(hw: Hardware, precision: str) -> int:
    """Return the largest parameter count that fits anywhere (largest GPU or available RAM) at precision."""
    room = max(hw.largest_gpu_memory, hw.ram_available) - RUNTIME_OVERHEAD
    return max(0, floor(room / _bytes_per_parameter(precision)))


# -- the deployment's GPU box -------------------------------------------------------------------------

class HardwareReading(NamedTuple):
    """The hardware models are sized against, and a notice when it is this machine's, not the GPU workers'."""

    hardware: Hardware
    notice: str | None


class HardwareInfo:
    """Answers with the GPU workers' hardware, cached in Redis, probing there through a job when stale."""

    def __init__(self, jobs: Jobs, redis: Redis, settings: Settings) -> None:
        self._jobs = jobs
        self._redis = redis
        self._settings = settings

    def current(self, *, wait: float = 10.0) -> HardwareReading:
        """Return the GPU workers' hardware and None, or this machine's RAM and disk with a notice saying why.

        Raises:
            ModelStoreUnusable: the workers did not answer and this machine's model store cannot be measured.
        """
        cached = self._redis.get(CACHE_KEY)  # the worker sets it with a FRESH_FOR expiry: present means fresh
        if cached is not None:
            return HardwareReading(Hardware.from_json(cached), None)
        record = self._jobs.submit(PROBE_KIND, {}, requester=PROBE_REQUESTER, dedup_key="hardware").job
        record = self._jobs.wait(record.id, wait)
        if record.status == "finished" and record.result:
            return HardwareReading(Hardware.from_dict(record.result), None)
        if record.active:
            # The job stays queued: when a gpu worker starts it answers, and the next call reads the cache.
            reason = f"no gpu worker answered within {wait:g}s"
        else:
            reason = f"the hardware probe (job `{record.id}`) {record.status}"
        local = replace(probe(self._settings.resolved_model_store), gpus=(), gpu_known=False)
        return HardwareReading(local, f"GPU memory unknown: {reason}; showing this machine's RAM and disk.")
