"""The training job: fine-tune a model on a dataset (`engine/training/run.py` does the work)."""

from __future__ import annotations

from typing import Any

from modelbay.workers.context import JobContext

__all__ = ["train"]


def train(ctx: JobContext, *, base_version_id: int, base: str, dataset: str, config: dict[str, Any], name: str,
          dataset_name: str | None = None, run: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Prepare the rows, train (here, or through torchrun on several GPUs), and register the new version."""
    from modelbay.engine.training.run import run_job

    return run_job(ctx, base_version_id=base_version_id, base=base, dataset=dataset, dataset_name=dataset_name,
                   config=config, name=name, run=run, resume=resume)
