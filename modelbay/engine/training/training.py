"""`Training`: the service commands and REST call to fine-tune models: templates, pre-flight, start, resume, status.

Fine-tuning needs the `trainer` role; the command layer checks it (`bot/commands/train.py`, REST's role
dependency) before calling this service, as for every other service.

`preflight` refuses in one line what cannot work, before any GPU time: a template or setting that does not exist
or is out of range, a base model that is not installed (or is an adapter without merged weights), a new name that is
invalid or taken, a dataset that is missing, has a row the `fail` policy stops at or too few rows to train on, a
config that needs CUDA where the gpu workers have none (QLoRA, FSDP), and a run that would not fit the memory it runs
in at this precision (suggesting the largest batch that would or, when the gpu workers' GPUs together hold it, sharding
it across them with FSDP; `hardware.strategy` auto accepts such a run in several processes as FSDP). `start` queues
the `train` job on the gpu queue (`engine/jobs/kinds.TRAIN`); the job itself (`run.py`) checks again what it can only
check there.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING, Any

from modelbay.engine.datasets.records import main_problem
from modelbay.engine.errors import (
    CheckpointMissing,
    CudaRequired,
    DatasetInvalid,
    IncompleteModel,
    ModelNameTaken,
    NotATrainingJob,
    NotResumable,
    ResumeNameTaken,
    TrainingMemory,
    TrainingNameBusy,
)
from modelbay.engine.inference.serving import installed_version
from modelbay.engine.jobs.kinds import TRAIN
from modelbay.engine.records import JobRecord
from modelbay.engine.training.files import RunFiles, read_jsonl
from modelbay.engine.training.memory import (
    Estimate,
    ModelShape,
    devices_to_shard,
    estimate,
    largest_batch,
    sharded,
    strategy_for,
)
from modelbay.engine.training.progress import TrainingDetail
from modelbay.engine.training.templates import Template, TrainingConfig, load_templates, resolve

if TYPE_CHECKING:
    from pathlib import Path

    from modelbay.config import Settings
    from modelbay.engine.catalog.registry import Registry
    from modelbay.engine.datasets.datasets import Datasets
    from modelbay.engine.datasets.records import DatasetRecord, DatasetReport
    from modelbay.engine.db.database import Database
    from modelbay.engine.hardware import HardwareInfo
    from modelbay.engine.jobs.jobs import Jobs
    from modelbay.engine.records import ModelRecord, VersionRecord

__all__ = ["Preflight", "StartedTraining", "Training", "TrainingStatus", "check_free", "default_name", "too_few",
           "total_steps"]

RESUMABLE = ("canceled", "failed")


@dataclass(frozen=True)
class Preflight:
    """What pre-flight found: the run it would start, and what it measured on the way."""

    model: ModelRecord
    base: VersionRecord
    dataset: DatasetRecord
    report: DatasetReport  # the dataset measured with the base model's tokenizer under the config's policy
    config: TrainingConfig
    name: str  # the new model's name
    estimate: Estimate  # memory one training process needs (bytes), at `precision` (its shard under FSDP)
    precision: str  # "bf16", "fp16", "fp32" or "4bit" (the weights' precision the estimate assumed)
    where: str  # "gpu" or "cpu": where the gpu workers would train
    room: int | None  # memory there (the largest GPU's, or available RAM), None when not known
    processes: int  # training processes the estimate assumed (one per GPU, or the config's)
    total_steps: int  # optimizer steps the run will take
    notices: tuple[str, ...] = ()  # what could not be checked here (the gpu workers' hardware unknown, ...)
    strategy: str = "single"  # "single" (one process), "ddp" or "fsdp" (`memory.strategy_for`)


@dataclass(frozen=True)
class StartedTraining:
    """A queued training job and the pre-flight that let it start."""

    job: JobRecord
    preflight: Preflight
    created: bool  # False: the same run (same new name) was already queued or running


@dataclass(frozen=True)
class TrainingStatus:
    """Where a training job stands: its record, its latest report, its config, and its run's files."""

    job: JobRecord
    detail: TrainingDetail  # the latest report (step, loss, eval loss, ETA, ...); empty before the first
    config: TrainingConfig
    name: str  # the new model's name
    base: str
    dataset: str  # its name when started
    run: str  # the run folder's name (the first job's id; resumes share it)
    steps: tuple[dict[str, Any], ...]  # the run's steps log so far (when this host can read it)
    chart: Path | None  # the loss chart, once drawn (when this host can read it)
    result: dict[str, Any] | None  # the finished job's result: version, metrics, answers


def total_steps(rows: int, config: TrainingConfig, processes: int = 1) -> int:
    """Optimizer steps a run of `rows` training rows takes (as transformers counts them: whole batches per epoch)."""
    p = config.parameters
    if p.max_steps:
        return p.max_steps
    batches = ceil(rows / (p.batch_size * max(1, processes)))
    per_epoch = max(1, batches // p.gradient_accumulation)
    return max(1, ceil(p.epochs * per_epoch))


def too_few(rows: int, policy: str, needed: int, why: str) -> str:
    """Why a run has too few training rows, naming the reason most rows were left out for (`main_problem`)."""
    left_out = f"; most left out: {why}" if why else ""
    return (f"it leaves {rows} training row{'s' * (rows != 1)} after the split and the {policy} policy, fewer than "
            f"the {needed} a job needs (add rows, or set `min_rows:`){left_out}")


def check_free(db: Database, files: RunFiles, job_id: str, name: str) -> None:
    """Refuse to resume a run whose new model cannot be registered at its end.

    Raises:
        ResumeNameTaken: the run made its model already (its `version.json`), or a model has taken its name.
    """
    from modelbay.engine.training.versions import check_name

    if files.version.exists():
        raise ResumeNameTaken(job_id, name, finished=True)
    try:
        check_name(db, name)
    except ModelNameTaken:
        raise ResumeNameTaken(job_id, name, finished=False) from None


def default_name(model: str) -> str:
    """A new model's name when none is given: the base's, `-ft-`, and six random hex digits."""
    return f"{model}-ft-{secrets.token_hex(3)}"


class Training:
    """Fine-tuning jobs: templates, pre-flight, start, resume, list, status (callers check the trainer role)."""

    def __init__(self, settings: Settings, db: Database, registry: Registry, jobs: Jobs, hardware: HardwareInfo,
                 datasets: Datasets) -> None:
        self._settings = settings
        self._db = db
        self._registry = registry
        self._jobs = jobs
        self._hardware = hardware
        self._datasets = datasets

    # -- templates ----------------------------------------------------------------------------------------------
    def templates(self) -> list[Template]:
        """The shipped templates, in the order the YAML lists them."""
        return list(load_templates().values())

    def config(self, template: str | None = None, overrides: dict[str, Any] | None = None) -> TrainingConfig:
        """A template's config with overrides applied (nested as the REST body; `templates.flat_overrides` nests
        a command's `key:value` pairs).

        Raises:
            TemplateNotFound: no template has that name.
            TrainingConfigInvalid: an override names no field, or has a value its field refuses.
        """
        return resolve(template, overrides)

    # -- pre-flight -----------------------------------------------------------------------------------------------
    def preflight(self, model: str, dataset: str | int, *, template: str | None = None,
                  overrides: dict[str, Any] | None = None, name: str | None = None,
                  owner: str | None = None, hardware_wait: float = 10.0) -> Preflight:
        """Check that a run can work, without starting it (the module docstring lists what is refused).

        `owner` finds a dataset named (not numbered) among that person's; `hardware_wait` is how long to wait for
        the gpu workers to describe their hardware (seconds) before measuring against this machine.

        Raises:
            TemplateNotFound, TrainingConfigInvalid: the template or a setting is wrong.
            ModelNotFound: no such model.
            NeedsInstall: the base model is not installed.
            IncompleteModel: its files are incomplete, or it is an adapter without merged weights.
            InvalidId, ModelNameTaken: the new name is invalid or taken.
            DatasetNotFound, DatasetUnreadable: no such dataset, or its file is gone.
            DatasetInvalid: a row the `fail` policy stops at, or fewer training rows than `min_rows`.
            CudaRequired: the config needs a CUDA GPU and the gpu workers have none.
            TrainingMemory: the run would not fit; the message suggests the largest batch that would.
        """
        from modelbay.engine.datasets.tokens import load_tokenizer
        from modelbay.engine.installs.loadable import check_folder, weights_folder
        from modelbay.engine.training.versions import check_name

        config = resolve(template, overrides)
        record = self._registry.get(model)
        base = installed_version(record, "fine-tune")
        folder = weights_folder(base)
        if folder is None:
            raise IncompleteModel(record.name, ["full weights"], installed=True,
                                  fix="It is a LoRA adapter: fine-tune its base model, or a fine-tune made with "
                                      "`merge:true`.")
        check_folder(folder, record.name, allow_pickle=self._settings.allow_pickle)
        new_name = check_name(self._db, name or default_name(record.name))
        found = self._datasets.get(dataset, owner=owner)
        p, evaluation = config.parameters, config.evaluation
        notices: list[str] = []
        try:
            tokenizer = load_tokenizer(folder)
        except ImportError:  # a bot host with the base install: lengths in characters, tokens counted by the job
            tokenizer = None
            notices.append("Token lengths are not measured here (no transformers on this host); the job measures "
                           "them and applies the over-length policy when it starts.")
        report = self._datasets.report(found.id, tokenizer=tokenizer, model=record.name if tokenizer else None,
                                       max_length=p.max_length, policy=p.overlong, validation=evaluation.validation,
                                       seed=p.seed, validation_ref=evaluation.validation_dataset)
        report.check()
        if report.train_rows < p.min_rows:
            raise DatasetInvalid(found.name, too_few(report.train_rows, p.overlong, p.min_rows,
                                                     main_problem(report.problems)))
        reading = self._hardware.current(wait=hardware_wait)
        hw = reading.hardware
        if reading.notice:
            notices.append(reading.notice)
        known_gpus = reading.notice is None and hw.gpu_known
        on_gpu = bool(hw.gpus) and config.hardware.device != "cpu"
        if config.needs_cuda and known_gpus and not hw.gpus:
            raise CudaRequired(config.cuda_use)
        if config.needs_cuda and not known_gpus:
            notices.append("Whether the gpu workers have CUDA is not known here; the job checks when it starts.")
        precision = _precision(config, on_gpu or (config.needs_cuda and not known_gpus))
        processes = config.hardware.processes or self._settings.train_processes or (len(hw.gpus) if on_gpu else 1)
        histogram = report.histogram
        seq_len = min(p.max_length, histogram.maximum) if histogram is not None and histogram.unit == "tokens" \
            else p.max_length
        shape = ModelShape.of_folder(folder)
        found_estimate = estimate(shape, precision=precision, batch=p.batch_size, seq_len=max(1, seq_len),
                                  r=p.lora.r, target_modules=p.lora.target_modules,
                                  gradient_checkpointing=config.hardware.gradient_checkpointing)
        room = hw.largest_gpu_memory if on_gpu else hw.ram_available
        where = "the largest GPU" if on_gpu else "this machine's available RAM" if reading.notice else \
            "the gpu workers' available RAM"
        strategy = strategy_for(config.hardware.strategy, processes, found_estimate,
                                room if on_gpu and known_gpus else None, quantized=config.quantized)
        per_process = sharded(found_estimate, processes) if strategy == "fsdp" else found_estimate
        if known_gpus or not on_gpu:
            if per_process.needed > room:
                # The GPUs together may hold what one cannot: say how many, sharded (FSDP), before a smaller batch.
                shard = devices_to_shard(found_estimate, room, len(hw.gpus)) if on_gpu and not config.quantized \
                    and config.hardware.device != "cpu" else 0
                raise TrainingMemory(record.name, precision, p.batch_size, seq_len, per_process.needed, room,
                                     where if strategy != "fsdp" else f"each of {processes} GPUs (FSDP)",
                                     largest_batch(per_process, room), shard=shard if shard > processes
                                     or strategy != "fsdp" else 0)
        return Preflight(model=record, base=base, dataset=found, report=report, config=config, name=new_name,
                         estimate=per_process, precision=precision, where="gpu" if on_gpu else "cpu", room=room,
                         processes=processes, total_steps=total_steps(report.train_rows, config, processes),
                         notices=tuple(notices), strategy=strategy)

    # -- jobs -----------------------------------------------------------------------------------------------------
    def start(self, model: str, dataset: str | int, *, requester: str, template: str | None = None,
              overrides: dict[str, Any] | None = None, name: str | None = None, owner: str | None = None,
              hardware_wait: float = 10.0) -> StartedTraining:
        """Pre-flight, then queue a `train` job on the gpu queue; return it with the pre-flight.

        Raises:
            Everything `preflight` raises.
            TrainingNameBusy: a queued or running job makes a model of that name from another request (another
                person's, or other settings); the very same request again answers with that job (`created` False).
        """
        checked = self.preflight(model, dataset, template=template, overrides=overrides, name=name, owner=owner,
                                 hardware_wait=hardware_wait)
        params = {"base_version_id": checked.base.id, "base": checked.model.name, "dataset": str(checked.dataset.id),
                  "dataset_name": checked.dataset.name, "config": checked.config.model_dump(mode="json"),
                  "name": checked.name}
        optimizing = self._jobs.active_with_keys((f"optimize:{checked.name}",))
        if optimizing is not None:  # an optimization job makes a model of that name
            raise TrainingNameBusy(checked.name, optimizing.id, "optimize")
        submitted = self._jobs.submit(TRAIN.name, params, requester=requester, dedup_key=f"train:{checked.name}",
                                      model_version_id=checked.base.id)
        if not submitted.created and (submitted.job.requester != requester or submitted.job.params != params):
            raise TrainingNameBusy(checked.name, submitted.job.id)  # the same name, another run: not this request
        return StartedTraining(submitted.job, checked, submitted.created)

    def resume(self, job_id: str, *, requester: str) -> JobRecord:
        """Continue a canceled (or failed) training job from its last checkpoint, as a new job in the same run.

        Raises:
            JobNotFound: no job has that id.
            NotATrainingJob: it is a job of another kind.
            NotResumable: it has not stopped before its end.
            CheckpointMissing: its run left no checkpoint (checked here when this host sees the run's folder, else
                by the job).
            ResumeNameTaken: its run already made its model (resumed before), or another model took the name.
            TrainingNameBusy: another run, queued or running, makes a model of that name.
        """
        job = self._jobs.get(job_id)
        if job.kind != TRAIN.name:
            raise NotATrainingJob(job.id, job.kind)
        if job.status not in RESUMABLE:
            raise NotResumable(job.id, job.status, job.kind)
        run = job.params.get("run") or job.id
        files = RunFiles.of(self._settings.home, run)
        check_free(self._db, files, job.id, job.params["name"])
        if files.root.is_dir() and files.last_checkpoint() is None:
            raise CheckpointMissing(job.id, str(files.checkpoints))
        params = {**job.params, "run": run, "resume": True}
        submitted = self._jobs.submit(TRAIN.name, params, requester=requester, dedup_key=f"train:{params['name']}",
                                      model_version_id=params.get("base_version_id"))
        if not submitted.created and submitted.job.params.get("run") != run:
            raise TrainingNameBusy(params["name"], submitted.job.id)  # another run makes that name meanwhile
        return submitted.job

    def list(self, *, requester: str | None = None, active: bool | None = None, limit: int = 20) -> list[JobRecord]:
        """The newest training jobs, optionally one person's or only active ones."""
        return self._jobs.list(requester=requester, active=active, limit=limit, kinds=(TRAIN.name,))

    def using(self, dataset_id: int) -> list[JobRecord]:
        """The queued or running training jobs that will read this dataset: to train on, or to validate on."""
        ref = str(dataset_id)
        return [job for job in self.list(active=True, limit=1000)
                if job.params.get("dataset") == ref
                or str((job.params.get("config") or {}).get("evaluation", {}).get("validation_dataset")) == ref]

    def status(self, job_id: str) -> TrainingStatus:
        """Where a training job stands (reconciled with the queue first).

        Raises:
            JobNotFound: no job has that id.
            NotATrainingJob: the job is of another kind.
        """
        job = self._jobs.get(job_id)
        if job.kind != TRAIN.name:
            raise NotATrainingJob(job.id, job.kind)
        params = job.params
        run = params.get("run") or job.id
        files = RunFiles.of(self._settings.home, run)
        return TrainingStatus(
            job=job, detail=TrainingDetail.of(job.progress_detail), config=TrainingConfig.model_validate(params["config"]),
            name=params["name"], base=params["base"], dataset=params.get("dataset_name") or params["dataset"], run=run,
            steps=tuple(read_jsonl(files.steps)), chart=files.chart if files.chart.exists() else None,
            result=job.result,
        )


def _precision(config: TrainingConfig, gpu: bool) -> str:
    """The weights' precision a run on a GPU (or not) uses, as the memory estimate names it."""
    if config.quantized:
        return "4bit"
    chosen = config.hardware.precision
    if chosen != "auto":
        return chosen
    return "bf16" if gpu else "fp32"
