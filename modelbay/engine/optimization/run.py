"""An optimization job from start to end, in a worker's work horse: apply the steps, measure, register the variant.

`run_job(job, ...)` is what the `optimize` and `optimize.cpu` job kinds run (`workers/jobs/optimize.py`):

1. prepare ("preparing"): the parent's folder, and the text the job measures on: the person's dataset when given,
   else the shipped held-out text (`heldout.py`), cut into held-out windows and, apart from them, calibration
   windows for the methods that need them (Wanda, static int8).
2. apply ("applying"): each step's method reads the previous step's folder and writes its own under the job's
   folder (`<home>/optimization/<job id>/step<N>/`), reporting its part of the job's progress.
3. measure ("measuring-parent", then "measuring"): the parent and the variant each in a child process, on this
   machine and the same windows (`measure.py`): size, load time and peak memory, perplexity with its standard
   error, and the variant's KL divergence and top-1 agreement against the parent; then time to first token and
   tokens/s of both in the variant's child, their rounds alternating, so a busy machine slows both alike.
4. judge and register ("saving"): the comparison against the person's (or the kind's default) perplexity budget
   gives a verdict; the chart is drawn into the variant's folder, and the variant becomes a new model whose version
   points at the parent's (`installs/derived.add_derived_version`), its report in `lineage_params`; a variant over
   its budget is tagged `over-budget`, so searches and lists show it is not a drop-in.

A cancel (seen at every progress report) or a failure removes the job's folder: nothing partial is left.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelbay.engine.errors import OptimizationConfigInvalid, OptimizationFailed
from modelbay.engine.optimization.progress import OptimizationDetail
from modelbay.logs import route_transformers_logs

if TYPE_CHECKING:
    from modelbay.engine.jobs.kinds import Job
    from modelbay.engine.optimization.methods.base import Applied
    from modelbay.engine.records import VersionRecord

__all__ = ["JobWork", "job_folder", "run_job"]

log = logging.getLogger(__name__)

# The job's fraction at the start of each phase; the steps share APPLYING..MEASURING_PARENT equally.
PREPARING, APPLYING, MEASURING_PARENT, MEASURING, SAVING = 0.0, 0.05, 0.6, 0.75, 0.95
HELDOUT_TOKENS = 16_384  # held-out tokens measured at most (perplexity, KL)
MIN_HELDOUT_TOKENS = 512  # fewer scored tokens give a perplexity too uncertain to judge a variant by
CALIBRATION_WINDOWS = 32  # calibration windows a method gets at most
WINDOW_TOKENS = 256  # a held-out window's length, or the model's context when that is shorter


def job_folder(home: Path, job_id: str) -> Path:
    """The folder a job works in: its steps' outputs and the parent's log-probabilities."""
    return Path(home) / "optimization" / job_id


@dataclass
class JobWork:
    """What a method gets from the job (`methods.base.Work`): the device, progress within its step, calibration."""

    job: Job
    device: str
    step: int  # from 1
    steps: int
    label: str
    calibration_windows: list[list[int]] = field(default_factory=list)

    def progress(self, fraction: float, message: str) -> None:
        """Report this step's progress (0..1) as the job's; raises JobCanceled once a cancel was asked for."""
        share = (MEASURING_PARENT - APPLYING) / self.steps
        whole = APPLYING + share * (self.step - 1 + max(0.0, min(1.0, fraction)))
        self.job.progress(whole, f"Step {self.step}/{self.steps} ({self.label}): {message}",
                          detail=OptimizationDetail(phase="applying", step=self.step, steps=self.steps,
                                                    method=self.label, step_fraction=round(fraction, 4)))

    def calibration(self, n: int, length: int) -> list[list[int]]:
        """Up to n calibration windows of at most `length` tokens (never the held-out windows)."""
        return [w[:length] for w in self.calibration_windows[:n]]


def _device(queue_gpu: bool) -> str:
    if not queue_gpu:
        return "cpu"
    import torch  # extra: ml

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_job(job: Job, *, parent_version_id: int, parent: str, name: str, steps: list[dict[str, Any]],
            labels: list[str], dataset: str | None, dataset_name: str | None, budget_kind: str,
            budget: float | bool, gpu: bool, target_reduction: float | None = None) -> dict[str, Any]:
    """Apply, measure, judge and register one optimization (the module docstring has the phases); return the result.

    `target_reduction` (percent of the parent's size asked to be removed) is checked against the result and said in
    the verdict's reason.

    Raises:
        JobCanceled: the job was canceled; its folder is removed.
        OptimizationFailed: a method could not make this variant, or the parent's files went away (uninstalled
            while the job ran); nothing is kept.
        OptimizationConfigInvalid: the dataset gives too few held-out tokens to judge by.
        ModelNameTaken: the new model's name was taken meanwhile.
        DatasetNotFound, DatasetUnreadable: the dataset is gone.
    """
    from modelbay.engine.catalog.registry import Registry
    from modelbay.engine.installs.derived import check_name
    from modelbay.engine.installs.loadable import read_config, weights_folder

    route_transformers_logs()
    check_name(job.db, name)  # a name taken since pre-flight: refused before any work
    root = job_folder(job.settings.home, job.job_id)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        version = Registry(job.db).get_version(parent_version_id)
        source = weights_folder(version)
        if source is None:
            raise ValueError(f"version #{parent_version_id} has no full weights (pre-flight refuses this)")
        job.progress(PREPARING, f"Preparing {parent}", force=True, detail=OptimizationDetail(phase="preparing"))
        config = read_config(source)
        heldout, calibration, text_source = _windows(job, version, source, dataset, dataset_name,
                                                     _context_length(config))
        device = _device(gpu)
        folder, facts, output = _apply(job, source, root, steps, labels, device, calibration)
        return _measure_and_register(job, version, parent, name, source, folder, output, facts, steps, labels,
                                     heldout, text_source, budget_kind, budget, device, root, target_reduction,
                                     config.get("vocab_size"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _windows(job: Job, version: VersionRecord, source: Path, dataset: str | None, dataset_name: str | None,
             context: int) -> tuple[list[list[int]], list[list[int]], str]:
    """Held-out and calibration windows of the person's dataset (or the shipped text), and where they came from.

    A dataset the parent was fine-tuned on is split as its training split it (same validation share and seed): the
    held-out windows come from its validation rows only, which the parent never trained on, and calibration from its
    training rows. Any other dataset is the person's held-out data: its first part held out, the rest calibration.
    Windows are at most the model's context long.

    Raises:
        OptimizationConfigInvalid: fewer than MIN_HELDOUT_TOKENS tokens to measure on.
    """
    from modelbay.engine.datasets.tokens import load_tokenizer
    from modelbay.engine.optimization import heldout

    length = min(WINDOW_TOKENS, context)
    tokenizer = load_tokenizer(source)  # once: every cut and rendering below uses it
    if dataset is not None:
        from modelbay.engine.datasets.datasets import Datasets

        datasets = Datasets(job.settings, job.db)
        trained = _trained_split(version, dataset)
        if trained is not None:
            split = datasets.split(dataset, validation=trained[0], seed=trained[1])
            held = heldout.windows(tokenizer, heldout.dataset_texts(split.validation, tokenizer), length,
                                   HELDOUT_TOKENS)
            calibration = heldout.windows(tokenizer, heldout.dataset_texts(split.train, tokenizer), length,
                                          CALIBRATION_WINDOWS * length)
            text_source = f"dataset {dataset_name or dataset} (its validation rows: the parent trained on the rest)"
        else:
            texts = heldout.dataset_texts(datasets.examples(dataset), tokenizer)
            held, calibration = heldout.split_windows(tokenizer, texts, length=length, max_tokens=HELDOUT_TOKENS,
                                                      calibration=CALIBRATION_WINDOWS)
            text_source = f"dataset {dataset_name or dataset}"
    else:
        held, calibration = heldout.split_windows(tokenizer, heldout.default_texts(), length=length,
                                                  max_tokens=HELDOUT_TOKENS, calibration=CALIBRATION_WINDOWS)
        text_source = "the shipped held-out text"
    scored = sum(len(w) - 1 for w in held)
    if scored < MIN_HELDOUT_TOKENS:
        raise OptimizationConfigInvalid("dataset", f"{text_source} gives {scored} held-out tokens to measure on, fewer "
                                        f"than {MIN_HELDOUT_TOKENS}: give a larger dataset, or leave `dataset` out for "
                                        "the shipped text")
    return held, calibration, text_source


def _context_length(config: dict[str, Any]) -> int:
    """The model's context in tokens, from its config (WINDOW_TOKENS when it names none)."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = config.get(key)
        if isinstance(value, int) and value >= 2:
            return value
    return WINDOW_TOKENS


def _trained_split(version: VersionRecord, dataset: str) -> tuple[float, int] | None:
    """(validation share, seed) of the fine-tune's training split when the parent was fine-tuned on `dataset`."""
    params = version.lineage_params or {}
    trained = params.get("dataset")
    if version.lineage != "finetune" or not isinstance(trained, dict) or str(trained.get("id")) != str(dataset):
        return None
    config = params.get("config") or {}
    evaluation, parameters = config.get("evaluation") or {}, config.get("parameters") or {}
    validation = evaluation.get("validation", 0.1)
    return (float(validation) if isinstance(validation, int | float) and 0 < validation < 1 else 0.1,
            int(parameters.get("seed", 0) or 0))


def _apply(job: Job, source: Path, root: Path, steps: list[dict[str, Any]], labels: list[str], device: str,
           calibration: list[list[int]]) -> tuple[Path, list[dict[str, Any]], str]:
    """Apply each step to the previous one's folder; return the last folder, each step's facts and its format."""
    from modelbay.engine.optimization.methods import METHODS

    folder, facts, output = source, [], "transformers"
    for i, step in enumerate(steps, start=1):
        method = METHODS[step["method"]]()
        label = labels[i - 1] if i - 1 < len(labels) else method.label
        work = JobWork(job, device, i, len(steps), label, calibration)
        work.progress(0.0, "starting")
        out = root / f"step{i}"
        out.mkdir()
        applied: Applied = method.apply(folder, out, step["params"], work)
        facts.append({"step": step["method"], "label": label, **applied.facts})
        output = method.needs(step["params"]).output
        if folder != source:
            shutil.rmtree(folder, ignore_errors=True)  # an intermediate step's folder is not needed any more
        folder = applied.folder
    return folder, facts, output


def _measure_and_register(job: Job, version: VersionRecord, parent: str, name: str, source: Path, folder: Path,
                          output: str, facts: list[dict[str, Any]], steps: list[dict[str, Any]], labels: list[str],
                          heldout: list[list[int]], text_source: str, budget_kind: str, budget: float | bool,
                          device: str, root: Path, target_reduction: float | None,
                          vocab_size: Any) -> dict[str, Any]:
    from modelbay.engine.installs.derived import Derived, add_derived_version
    from modelbay.engine.installs.store import ModelStore
    from modelbay.engine.optimization import charts, compare, measure
    from modelbay.engine.optimization.optimization import LINEAGE, OPTIMIZED, OVER_BUDGET, REPORT_CHART

    job.progress(MEASURING_PARENT, f"Measuring {parent} on this machine", force=True,
                 detail=OptimizationDetail(phase="measuring-parent"))
    reference = root / "parent-logprobs.npy"
    _parent_present(source, parent)
    parent_m, _ = measure.measure(source, "transformers", heldout, reference=None, logprobs_out=reference,
                                  device=device, cancel=job.check_canceled, label=parent)
    job.progress(MEASURING, f"Measuring {name} against {parent}", force=True,
                 detail=OptimizationDetail(phase="measuring"))
    _parent_present(source, parent)
    variant_m, kl = measure.measure(folder, output, heldout, reference=reference, logprobs_out=None, device=device,
                                    cancel=job.check_canceled, speed_against=(source, "transformers"), label=name)
    # The speed figures of both come from the variant's child, their rounds alternating: the same load for each.
    parent_m = dataclasses.replace(parent_m, ttft_ms=variant_m.parent_ttft_ms,
                                   tokens_per_s=variant_m.parent_tokens_per_s)
    comparison = compare.Comparison(parent=parent_m, variant=variant_m, kl=kl)
    rule = compare.Budget.of(budget_kind, budget)
    verdict, reason = compare.verdict(comparison, rule)
    reason += _target_note(target_reduction, comparison.size_ratio) + _fit_note(parent_m, vocab_size)
    report = {
        "parent_name": parent, "labels": list(labels), "steps": steps, "facts": facts, "format": output,
        "parent": parent_m.to_dict(), "variant": variant_m.to_dict(), "versus": comparison.versus(),
        "verdict": verdict, "reason": reason, "budget": rule.to_dict(),
        "heldout": {"source": text_source, "tokens": parent_m.tokens, "windows": len(heldout)},
    }
    rows = [charts.ChartRow.of(parent, report["parent"], parent=True),
            charts.ChartRow.of(name, report["variant"], verdict=verdict, versus=report["versus"])]
    (folder / REPORT_CHART).write_bytes(charts.variants_png(rows))
    job.progress(SAVING, f"Registering {name}", force=True, detail=OptimizationDetail(phase="saving"))
    parameters = next((_count(f.get("parameters")) for f in reversed(facts) if _count(f.get("parameters"))), None)
    derived = Derived(source=OPTIMIZED, lineage=LINEAGE, parts=[(folder, ".")], not_inherited=(OVER_BUDGET,),
                      tags=(OPTIMIZED, OVER_BUDGET) if verdict == "over budget" else (OPTIMIZED,),
                      format="onnx" if output == "onnx" else "safetensors", parameter_count=parameters,
                      description=f"{' → '.join(labels)} of {{base}}, measured against it: {reason}")
    added = add_derived_version(job.db, parent=version, name=name, derived=derived,
                                params={"steps": steps, "report": report, "verdict": verdict, "format": output},
                                store=ModelStore(job.settings.resolved_model_store), check=_checker(output))
    chart = Path(added.local_path or "") / REPORT_CHART
    return {"version_id": added.id, "name": name, "parent": parent, "verdict": verdict, "reason": reason,
            "report": report, "chart": str(chart) if chart.is_file() else None, "text": charts.variants_text(rows)}


def _count(value: Any) -> int | None:
    """A parameter count from a step's facts: a number, or the last of [before, after] (a structured pruning)."""
    if isinstance(value, list) and value:
        value = value[-1]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _parent_present(source: Path, parent: str) -> None:
    """Refuse to go on when the parent's files are gone (uninstalled with force while the job ran)."""
    if not (source / "config.json").is_file():
        raise OptimizationFailed("measurement", parent, "its files were removed while the job ran (the model was "
                                 "uninstalled): install it again and start the job again")


def _target_note(target: float | None, size_ratio: float | None) -> str:
    """The asked size reduction against the one reached, for the verdict's reason ("" without a target)."""
    if target is None or size_ratio is None:
        return ""
    reached = 100.0 * (1.0 - size_ratio)
    met = "reached" if reached + 1e-9 >= target else "NOT reached"
    return f"; size target -{target:g}% {met}: {reached:+.1f}% removed" if reached >= 0 else \
        f"; size target -{target:g}% NOT reached: the variant is {-reached:.1f}% larger"


def _fit_note(parent: Any, vocab_size: Any) -> str:
    """A warning when the parent does not model the held-out text at all (perplexity above its vocabulary's size,
    worse than a uniform guess): its figures then say little about the variant on real use."""
    if isinstance(vocab_size, int) and vocab_size > 0 and parent.perplexity > vocab_size:
        return (f"; note: the parent's perplexity on this text ({parent.perplexity:,.0f}) is above its vocabulary's "
                f"size ({vocab_size:,}), so it does not model this text: give your own data (`dataset:`) for figures "
                "that mean something")
    return ""


def _checker(output: str) -> Any:
    """The loadability check of a staged variant folder: ONNX layout, or a folder transformers loads."""
    from modelbay.engine.installs import loadable

    def check(staged: Path, parent_name: str) -> dict[str, Any]:
        if output == "onnx":
            loadable.check_onnx(staged, parent_name)
        else:
            loadable.check_folder(staged, parent_name, allow_pickle=False)
        return {}

    return check
