"""Training: fine-tuning jobs and the model versions they make (`versions`)."""

from modelbay.engine.training.versions import add_tuned_version, check_name, public_lineage

__all__ = ["add_tuned_version", "check_name", "public_lineage"]
