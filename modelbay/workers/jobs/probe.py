"""The hardware probe job: measures the gpu worker's machine and caches the answer for the bot."""

from __future__ import annotations

from typing import Any

from modelbay.engine.hardware import CACHE_KEY, FRESH_FOR, probe as probe_machine
from modelbay.workers.context import JobContext

__all__ = ["probe"]


def probe(ctx: JobContext) -> dict[str, Any]:
    """Probe RAM, GPUs and free disk here, cache them in Redis for FRESH_FOR seconds, and return them."""
    ctx.progress(0.0, "Probing RAM, GPUs and disk")
    hardware = probe_machine(ctx.settings.resolved_model_store)
    ctx.jobs.redis.set(CACHE_KEY, hardware.to_json(), ex=FRESH_FOR)
    return hardware.to_dict()
