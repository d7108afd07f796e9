"""Training: fine-tuning jobs (`training.Training`, configs from `templates`) and the model versions they make
(`versions`)."""

from modelbay.engine.training.progress import TrainingDetail, sparkline
from modelbay.engine.training.templates import (
    Template,
    TrainingConfig,
    TrainingRequest,
    flat_overrides,
    load_templates,
    resolve,
)
from modelbay.engine.training.training import Preflight, StartedTraining, Training, TrainingStatus
from modelbay.engine.training.versions import add_tuned_version, check_name, public_lineage

__all__ = [
    "Preflight", "StartedTraining", "Template", "Training", "TrainingConfig", "TrainingDetail", "TrainingRequest",
    "TrainingStatus", "add_tuned_version", "check_name", "flat_overrides", "load_templates", "public_lineage",
    "resolve", "sparkline",
]
