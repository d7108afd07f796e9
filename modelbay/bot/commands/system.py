"""/system hardware: what the deployment's machines offer models, and the largest model that fits."""

from __future__ import annotations

from datetime import datetime, timezone

from modelbay.bot.context import Context
from modelbay.bot.reply import Field, Reply, Table
from modelbay.bot.spec import command
from modelbay.engine.hardware import PRECISIONS, Hardware, HardwareInfo, fits, max_parameters
from modelbay.engine.units import ago, human_bytes, human_count

RUNS_ON = {"gpu": "GPU", "cpu": "CPU (RAM)", None: "-"}


def _hardware(ctx: Context) -> HardwareInfo:
    return ctx.runtime.hardware


@command(
    "system", "hardware",
    help="Show RAM, GPUs and free disk where models run, and the largest model that fits at each precision.",
    slow=True,  # a stale cache means waiting for a gpu worker to answer the probe job
)
async def hardware(ctx: Context) -> Reply:
    """Show the hardware of the gpu workers' machine (or this one, with a notice) and what fits it."""
    hw, notice = await ctx.call(_hardware(ctx).current)
    probed = datetime.fromtimestamp(hw.probed_at, timezone.utc)
    return Reply(
        title=f"Hardware on {hw.host}", fields=_fields(hw), table=_largest(hw), tone="warning" if notice else "info",
        footer=notice or f"Probed {ago(probed)}. Estimates: weights plus 20% and 512 MiB for activations and runtime.",
    )


def _fields(hw: Hardware) -> list[Field]:
    fields = [
        Field("RAM", f"{human_bytes(hw.ram_available)} available of {human_bytes(hw.ram_total)}"),
        Field("Disk", f"{human_bytes(hw.disk_free)} free in {hw.disk_path}"),
    ]
    fields += [
        Field(f"GPU {gpu.index}", f"{gpu.name}: {human_bytes(gpu.memory_free)} free of {human_bytes(gpu.memory_total)}")
        for gpu in hw.gpus
    ]
    if not hw.gpus:
        fields.append(Field("GPU", "none" if hw.gpu_known else "unknown"))
    return fields


def _largest(hw: Hardware) -> Table:
    rows = []
    for precision in PRECISIONS:
        largest = max_parameters(hw, precision)
        where = next(f.where for f in fits(largest, hw) if f.precision == precision) if largest else None
        rows.append([precision, human_count(largest) if largest else "nothing", RUNS_ON[where]])
    return Table(["Precision", "Largest model", "Runs on"], rows)
