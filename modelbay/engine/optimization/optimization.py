"""`Optimization`: the service commands and REST call to quantize, prune and export models, and to compare variants.

Optimizing needs the admin or trainer role; the command layer checks it (`bot/commands/optimize.py`, REST's role
dependency) before calling this service, as for every other service.

`preflight` refuses in one line what cannot work before anything is queued: a config that is impossible or names an
unknown method or recipe (`config.steps`), a model that is not installed, is an adapter-only fine-tune, an ONNX
export or already quantized, a new name that is invalid or taken, a dataset that is missing, and a step that needs
CUDA where the gpu workers have none. `start` queues the `optimize` job: on the gpu queue when a step serves on GPUs
(bitsandbytes), else on the cpu queue (`optimize.cpu`); the job itself (`run.py`) applies the steps, measures the
parent and the variant on the same machine and text, and registers the variant with its report.

`compare` lays the reports of several variants (and their parents) side by side with a chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from modelbay.engine.errors import (
    CudaRequired,
    ModelNameTaken,
    NotAnOptimizationJob,
    OptimizationConfigInvalid,
    TrainingNameBusy,
)
from modelbay.engine.inference.serving import installed_version
from modelbay.engine.jobs.kinds import OPTIMIZE, OPTIMIZE_CPU
from modelbay.engine.optimization.config import OptimizationConfig, Recipe, Step, budget_kind, load_recipes, steps
from modelbay.engine.optimization.progress import OptimizationDetail
from modelbay.engine.records import JobRecord

if TYPE_CHECKING:
    from modelbay.config import Settings
    from modelbay.engine.catalog.registry import Registry
    from modelbay.engine.datasets.datasets import Datasets
    from modelbay.engine.datasets.records import DatasetRecord
    from modelbay.engine.db.database import Database
    from modelbay.engine.hardware import HardwareInfo
    from modelbay.engine.jobs.jobs import Jobs
    from modelbay.engine.records import ModelRecord, VersionRecord

__all__ = ["KINDS", "OPTIMIZED", "OVER_BUDGET", "CompareRow", "Comparison", "Optimization", "OptimizationPlan",
           "OptimizationStatus", "StartedOptimization", "budget_percent"]

OPTIMIZED = "optimized"  # the `source` of every model an optimization job makes; also its versions' lineage tag
LINEAGE = "optimize"  # the lineage of an optimized version
OVER_BUDGET = "over-budget"  # the tag of a variant whose perplexity broke its budget: kept, never a drop-in
KINDS = (OPTIMIZE.name, OPTIMIZE_CPU.name)
REPORT_CHART = "report.png"  # the variant's chart, in its version's folder


def budget_percent(config: OptimizationConfig) -> float | None | bool:
    """The person's perplexity budget: a number (percent), True (the default for the kind) or False (none)."""
    value = config.preserve_accuracy
    if isinstance(value, bool):
        return value
    return float(value)


@dataclass(frozen=True)
class OptimizationPlan:
    """What pre-flight found: the job it would start."""

    model: ModelRecord  # the parent model
    parent: VersionRecord  # the parent version (its newest installed one)
    config: OptimizationConfig
    steps: tuple[Step, ...]  # checked, in order
    labels: tuple[str, ...]  # each step as people read it ("bitsandbytes 8-bit")
    name: str  # the new model's name
    dataset: DatasetRecord | None  # held-out and calibration text; None: the shipped text
    queue: str  # "gpu" or "cpu"
    budget_kind: str  # config.BUDGET_KINDS
    budget: float | bool  # percent, True (the kind's default) or False (no budget)
    output: str  # "transformers" or "onnx"
    notices: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartedOptimization:
    """A queued optimization job and the pre-flight that let it start."""

    job: JobRecord
    plan: OptimizationPlan
    created: bool  # False: the same job (same new name, same request) was already queued or running


@dataclass(frozen=True)
class OptimizationStatus:
    """Where an optimization job stands: its record, latest report, what it makes, and its result once ended."""

    job: JobRecord
    detail: OptimizationDetail
    name: str  # the new model's name
    parent: str  # the parent model's name
    steps: tuple[dict[str, Any], ...]  # {"method", "params"} as queued
    labels: tuple[str, ...]
    result: dict[str, Any] | None  # the finished job's result (run.py): version, report, verdict
    chart: Path | None  # the report's chart, when this host can read it


@dataclass(frozen=True)
class CompareRow:
    """One model in a comparison: its own measurement and, for a variant, the figures against its parent."""

    name: str
    parent: str | None  # None for a parent row
    steps: str  # what made it ("bitsandbytes 8-bit"), "" for a parent
    report: dict[str, Any]  # the measurement (measure.Measurement as JSON)
    versus: dict[str, Any] | None  # the comparison against the parent (compare.Comparison as JSON), None for a parent
    verdict: str | None  # "within budget", "over budget", "no budget"; None for a parent
    reason: str | None


@dataclass(frozen=True)
class Comparison:
    """Several models side by side: rows (parents first, then their variants), a chart and its text."""

    rows: tuple[CompareRow, ...]
    chart: bytes | None  # PNG
    text: str  # the chart's text alternative
    notes: tuple[str, ...]  # what the reader should know (models without a report, different held-out texts)


class Optimization:
    """Optimization jobs: pre-flight, start, list, status, compare (callers check the role)."""

    def __init__(self, settings: Settings, db: Database, registry: Registry, jobs: Jobs, hardware: HardwareInfo,
                 datasets: Datasets) -> None:
        self._settings = settings
        self._db = db
        self._registry = registry
        self._jobs = jobs
        self._hardware = hardware
        self._datasets = datasets

    def recipes(self) -> list[Recipe]:
        """The shipped recipes, in the YAML's order."""
        return list(load_recipes().values())

    # -- pre-flight -------------------------------------------------------------------------------------------------
    def preflight(self, model: str, config: OptimizationConfig, *, name: str | None = None,
                  dataset: str | int | None = None, owner: str | None = None,
                  hardware_wait: float = 5.0) -> OptimizationPlan:
        """Check that a job can work, without starting it (the module docstring lists what is refused).

        Raises:
            OptimizationConfigInvalid: the config is impossible, or the model cannot be optimized this way (an ONNX
                export, a quantized model, a LoRA adapter without merged weights).
            ModelNotFound, NeedsInstall: no such model, or it is not installed.
            IncompleteModel: its files are incomplete.
            InvalidId, ModelNameTaken: the new name is invalid or taken.
            DatasetNotFound, DatasetUnreadable: the dataset is missing.
            CudaRequired: a step needs a CUDA GPU and the gpu workers have none.
        """
        from modelbay.engine.installs.derived import check_name
        from modelbay.engine.installs.loadable import check_folder, read_config, weights_folder
        from modelbay.engine.optimization.methods import METHODS

        record = self._registry.get(model)
        parent = installed_version(record, "optimize")
        if parent.format == "onnx":
            raise OptimizationConfigInvalid("model", f"{record.name} is an ONNX export, which nothing here changes "
                                            "further: optimize the model it was exported from")
        folder = weights_folder(parent)
        if folder is None:
            raise OptimizationConfigInvalid("model", f"{record.name} is a LoRA adapter (a fine-tune saved without "
                                            "merged weights): optimize its base model, or fine-tune again with "
                                            "`merge:true` and optimize that")
        check_folder(folder, record.name, allow_pickle=False)
        stored = read_config(folder)
        if stored.get("quantization_config"):
            raise OptimizationConfigInvalid("model", f"{record.name} is quantized already "
                                            f"({stored['quantization_config'].get('quant_method', 'quantized')}): "
                                            "optimize the model it was made from")
        found = self._datasets.get(dataset, owner=owner) if dataset is not None else None
        checked = steps(config, stored_dtype=stored.get("dtype") or stored.get("torch_dtype"),
                        calibration=found is not None)
        methods = [METHODS[s.method]() for s in checked]
        needs = [m.needs(s.params) for m, s in zip(methods, checked, strict=True)]
        notices: list[str] = []
        if any(n.cuda for n in needs):
            reading = self._hardware.current(wait=hardware_wait)
            if reading.notice is None and reading.hardware.gpu_known and not reading.hardware.gpus:
                what = next(m.label for m, n in zip(methods, needs, strict=True) if n.cuda)
                raise CudaRequired(what, fix="Use a CPU method (`/optimize onnx <model> int8:true`, or bits:16)")
            if reading.notice is not None:
                notices.append("Whether the gpu workers have CUDA is not known here; the job checks when it starts.")
        if name:
            new_name = check_name(self._db, name)
        else:
            new_name = self._free_default(record.name, config, checked)
        on_gpu = any(s.method == "bnb" or n.cuda for s, n in zip(checked, needs, strict=True))
        return OptimizationPlan(
            model=record, parent=parent, config=config, steps=tuple(checked),
            labels=tuple(m.describe(s.params) for m, s in zip(methods, checked, strict=True)),
            name=new_name, dataset=found, queue="gpu" if on_gpu else "cpu", budget_kind=budget_kind(checked),
            budget=budget_percent(config), output=needs[-1].output, notices=tuple(notices))

    def _free_default(self, parent: str, config: OptimizationConfig, checked: list[Step]) -> str:
        """`<parent>-<suffix>` (the steps' suffixes, or the recipe's name), with -2, -3, ... when taken."""
        from modelbay.engine.installs.derived import check_name
        from modelbay.engine.optimization.methods import METHODS

        suffix = config.recipe or "-".join(METHODS[s.method]().suffix(s.params) for s in checked)
        base = f"{parent}-{suffix}"[:90]
        for n in range(1, 50):
            candidate = base if n == 1 else f"{base}-{n}"
            try:
                return check_name(self._db, candidate)
            except ModelNameTaken:
                continue
        return check_name(self._db, base)  # raises ModelNameTaken: name it yourself

    # -- jobs -------------------------------------------------------------------------------------------------------
    def start(self, model: str, config: OptimizationConfig, *, requester: str, name: str | None = None,
              dataset: str | int | None = None, owner: str | None = None,
              hardware_wait: float = 5.0) -> StartedOptimization:
        """Pre-flight, then queue the job; return it with the pre-flight.

        Raises:
            Everything `preflight` raises.
            TrainingNameBusy: a queued or running job makes a model of that name from another request.
        """
        plan = self.preflight(model, config, name=name, dataset=dataset, owner=owner, hardware_wait=hardware_wait)
        params = {
            "parent_version_id": plan.parent.id, "parent": plan.model.name, "name": plan.name,
            "steps": [s.to_dict() for s in plan.steps], "labels": list(plan.labels),
            "dataset": str(plan.dataset.id) if plan.dataset else None,
            "dataset_name": plan.dataset.name if plan.dataset else None,
            "budget_kind": plan.budget_kind, "budget": plan.budget, "gpu": plan.queue == "gpu",
            "config": plan.config.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        kind = OPTIMIZE if plan.queue == "gpu" else OPTIMIZE_CPU
        busy = self._jobs.active_with_keys((f"optimize:{plan.name}", f"train:{plan.name}"))
        if busy is not None and (busy.kind not in KINDS or busy.requester != requester or busy.params != params):
            raise TrainingNameBusy(plan.name, busy.id, "optimize" if busy.kind in KINDS else "train")
        submitted = self._jobs.submit(kind.name, params, requester=requester, dedup_key=f"optimize:{plan.name}",
                                      model_version_id=plan.parent.id)
        return StartedOptimization(submitted.job, plan, submitted.created)

    def list(self, *, requester: str | None = None, active: bool | None = None, limit: int = 20) -> list[JobRecord]:
        """The newest optimization jobs, optionally one person's or only active ones."""
        return self._jobs.list(requester=requester, active=active, limit=limit, kinds=KINDS)

    def status(self, job_id: str) -> OptimizationStatus:
        """Where an optimization job stands.

        Raises:
            JobNotFound: no job has that id.
            NotAnOptimizationJob: the job is of another kind.
        """
        job = self._jobs.get(job_id)
        if job.kind not in KINDS:
            raise NotAnOptimizationJob(job.id, job.kind)
        params = job.params
        result = job.result if isinstance(job.result, dict) else None
        chart = Path(result["chart"]) if result and result.get("chart") else None
        return OptimizationStatus(
            job=job, detail=OptimizationDetail.of(job.progress_detail), name=params["name"], parent=params["parent"],
            steps=tuple(params.get("steps") or ()), labels=tuple(params.get("labels") or ()), result=result,
            chart=chart if chart is not None and chart.is_file() else None)

    # -- compare ------------------------------------------------------------------------------------------------------
    def compare(self, models: list[str]) -> Comparison:
        """Lay the named models' reports side by side: each optimized variant with the parent it was measured
        against (parents first, once each), and a chart of size, perplexity and speed.

        Raises:
            ModelNotFound: a name matches no model.
            OptimizationConfigInvalid: none of the models has a report (nothing to compare).
        """
        from modelbay.engine.optimization import charts

        parents: dict[str, CompareRow] = {}
        variants: list[CompareRow] = []
        notes: list[str] = []
        texts: set[str] = set()
        for name in dict.fromkeys(models):
            record = self._registry.get(name)
            reports = [(v, v.lineage_params.get("report")) for v in record.versions
                       if v.lineage == LINEAGE and v.lineage_params.get("report")]
            if reports:
                version, report = max(reports, key=lambda pair: pair[0].id)
                parent = report.get("parent_name") or version.lineage_params.get("base") or "parent"
                parents.setdefault(parent, CompareRow(parent, None, "", report["parent"], None, None, None))
                variants.append(CompareRow(record.name, parent, " → ".join(report.get("labels") or ()),
                                           report["variant"], report.get("versus"), report.get("verdict"),
                                           report.get("reason")))
                texts.add(str(report.get("heldout", {}).get("source")))
                continue
            measured = self._variant_reports_of(record)
            if measured:
                for child_name, report in measured:
                    parents.setdefault(record.name, CompareRow(record.name, None, "", report["parent"], None, None,
                                                               None))
                    if child_name not in models:
                        notes.append(f"{child_name} is a variant of {record.name}; name it to see it here.")
            else:
                notes.append(f"{record.name} has no optimization report: optimize it (`/optimize quantize "
                             f"{record.name} bits:8`) or name its variants.")
        if not variants and not parents:
            raise OptimizationConfigInvalid("models", "none of them has an optimization report: name variants made "
                                            "by `/optimize`")
        if len(texts) > 1:
            notes.append("These variants were measured on different held-out texts: compare each with its own parent.")
        if len(variants) > 1:
            notes.append("Each variant's ratios are against its parent as measured in its own job (the parent row is "
                         "the first job's measurement; speed on a shared machine varies between jobs).")
        rows = (*parents.values(), *variants)
        chart_rows = [charts.ChartRow.of(r.name, r.report, parent=r.parent is None, verdict=r.verdict, versus=r.versus)
                      for r in rows]
        return Comparison(rows, charts.variants_png(chart_rows), charts.variants_text(chart_rows), tuple(notes))

    def _variant_reports_of(self, record: ModelRecord) -> list[tuple[str, dict[str, Any]]]:
        """(variant name, report) for each optimized variant whose parent is one of this model's versions."""
        from modelbay.engine.db.schema.catalog import Model, ModelVersion

        ids = [v.id for v in record.versions]
        if not ids:
            return []
        with self._db.session() as session:
            rows = session.execute(select(Model.name, ModelVersion.lineage_params).join(ModelVersion.model).where(
                ModelVersion.parent_version_id.in_(ids), ModelVersion.lineage == LINEAGE)).all()
        return [(name, params["report"]) for name, params in rows if (params or {}).get("report")]
