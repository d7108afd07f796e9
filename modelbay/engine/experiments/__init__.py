"""Experiments: A/B tests of model variants in chat, with statistics that stay valid however often you look, and the
blind arena."""

from modelbay.engine.experiments.arena import Arena, BattleRecord, VoteRecord
from modelbay.engine.experiments.experiments import (
    ExperimentRecord,
    Experiments,
    ExperimentStatus,
    Opened,
    Shipped,
    VariantRecord,
    VariantSpec,
    status_from_totals,
)
from modelbay.engine.experiments.stats import Analysis, Totals, Verdict

__all__ = [
    "Analysis", "Arena", "BattleRecord", "ExperimentRecord", "ExperimentStatus", "Experiments", "Opened", "Shipped",
    "Totals", "VariantRecord", "VariantSpec", "Verdict", "VoteRecord", "status_from_totals",
]
