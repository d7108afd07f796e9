"""engine/hardware.py without a machine: nvidia-smi's output parsed, and the fit estimates (memory_needed, fits,
max_parameters) on made-up machines."""

from __future__ import annotations

import math
import random

import pytest

from modelbay.engine.hardware import (
    AS_STORED,
    PRECISIONS,
    RUNTIME_OVERHEAD,
    Fit,
    Gpu,
    Hardware,
    UnknownPrecision,
    fits,
    fits_model,
    max_parameters,
    memory_needed,
    parse_nvidia_smi,
)
from modelbay.engine.units import human_count

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


# -- parsing ----------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("precision", PRECISIONS)
def test_memory_needed_and_max_parameters_are_exact_inverses(precision: str) -> None:
    rng = random.Random(precision)
    for _ in range(500):
        ram = rng.randrange(RUNTIME_OVERHEAD, 2 * 10**12)
        largest = max_parameters(machine(ram=ram), precision)
        assert memory_needed(largest, precision) <= ram < memory_needed(largest + 1, precision)
    assert memory_needed(0, precision) == RUNTIME_OVERHEAD  # the runtime's cost comes with no weights at all


def test_a_machine_round_trips_through_its_plain_data_and_json() -> None:
    hw = machine(parse_nvidia_smi(TWO_MIXED), ram=64 * GB)
    assert Hardware.from_dict(hw.to_dict()) == hw and Hardware.from_json(hw.to_json()) == hw
    assert hw.largest_gpu_memory == 40960 * MiB and machine().largest_gpu_memory == 0


def test_without_a_parameter_count_the_fit_is_estimated_from_the_weights_size() -> None:
    laptop = machine(ram=24 * GB)
    tiny = fits_model(None, 2_400_000, laptop)
    assert [(f.precision, f.where) for f in tiny] == [(AS_STORED, "cpu")]
    assert tiny[0].needed == math.ceil(2_400_000 * 6 / 5) + 512 * 2**20
    assert [f.where for f in fits_model(None, 200 * GB, laptop)] == [None]
    assert fits_model(None, None, laptop) == [] and fits_model(None, 0, laptop) == []  # unknown, not "no"
    assert fits_model(7_600_000_000, 1, laptop) == fits(7_600_000_000, laptop)  # a parameter count decides
