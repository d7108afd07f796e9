"""The optimization job: quantize, prune or export a model and measure it (`engine/optimization/run.py` does the work)."""

from __future__ import annotations

from typing import Any

from modelbay.workers.context import JobContext

__all__ = ["optimize"]


def optimize(ctx: JobContext, *, parent_version_id: int, parent: str, name: str, steps: list[dict[str, Any]],
             labels: list[str] | None = None, dataset: str | None = None, dataset_name: str | None = None,
             budget_kind: str = "8-bit", budget: float | bool = True, gpu: bool = False,
             config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply the steps to the parent version, measure parent and variant here, and register the variant.

    `gpu` says the job runs on the gpu queue (it uses CUDA when the work horse sees it); `config` is the request's
    config as queued, kept for the job's record.
    """
    from modelbay.engine.optimization.run import run_job

    return run_job(ctx, parent_version_id=parent_version_id, parent=parent, name=name, steps=steps,
                   labels=list(labels or ()), dataset=dataset, dataset_name=dataset_name, budget_kind=budget_kind,
                   budget=budget, gpu=gpu, target_reduction=(config or {}).get("targetReduction"))
