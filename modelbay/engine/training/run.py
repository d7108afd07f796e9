"""A training job from start to end, in the gpu worker's work horse: prepare the rows, train, make the new version.

`run_job(ctx, ...)` is what the `train` job kind runs (`workers/jobs/train.py` hands it the job's context):

1. prepare (`phase` "preparing"): the dataset's valid rows are split (seeded, or a validation dataset) and encoded
   with the base model's tokenizer by `engine/datasets/tokens.encode`, the same function the dataset report uses,
   under the config's over-length policy; the rows, a few validation prompts and `run.json` go to the run's folder
   (`files.RunFiles`). A retry or a resume of the run finds them there and trains on exactly the same rows.
2. train: in this process (`trainer.train`), or through torchrun in N processes when the worker sees more than one
   GPU, the config asks for processes, or `MODELBAY_TRAIN_PROCESSES` is set, on several machines with
   `MODELBAY_TRAIN_NODES` (`distributed.py`); DDP, or FSDP when the model must be sharded across the GPUs
   (`strategy_of`); rank 0's reports are forwarded to the job's progress. A cancel stops the run at its next step
   with a checkpoint saved, and the job ends canceled. A run that finds a checkpoint in its folder continues from it (a retry after a killed worker,
   or `Training.resume`), its step count going on.
3. finish ("saving"): the adapter (and merged weights) become a new model with one installed version whose lineage
   names the base version, the dataset, the config and the metrics (`versions.add_tuned_version`); the version id is
   remembered in the run's folder, so a retry after this point returns the same version.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelbay.logs import route_transformers_logs
from modelbay.engine.errors import CheckpointMissing, DatasetInvalid, JobCanceled
from modelbay.engine.training.distributed import die_with_parent, rank_environment, read_events, torchrun_command
from modelbay.engine.training.files import RunFiles, write_jsonl
from modelbay.engine.training.progress import TrainingDetail
from modelbay.engine.training.templates import TrainingConfig

if TYPE_CHECKING:
    from modelbay.engine.datasets.examples import Example
    from modelbay.engine.datasets.problems import Problem
    from modelbay.engine.jobs.kinds import Job
    from modelbay.engine.records import VersionRecord

__all__ = ["JobChannel", "processes_for", "run_job", "strategy_of"]

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks at a multi-process run's events and its job's cancel flag
STOP_GRACE = 120.0  # seconds a canceled multi-process run gets to save its checkpoint before it is killed
LOG_TAIL = 2000  # characters of a failed launch's output kept in the error the worker log gets


class JobChannel:
    """The channel of a run trained in the job's own process: reports go to the job's progress, and its cancel
    flag (seen by every report, and asked for each step) stops the run."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.canceled = False

    def report(self, fraction: float, message: str, detail: TrainingDetail, *, force: bool = False) -> None:
        """Publish a report through the job's progress, unless a cancel was seen."""
        if self.canceled:
            return
        try:
            self.job.progress(fraction, message, detail=detail, force=force)
        except JobCanceled:
            self.canceled = True

    def stop_requested(self) -> bool:
        """Whether someone asked to cancel the job."""
        if not self.canceled:
            try:
                self.job.check_canceled()
            except JobCanceled:
                self.canceled = True
        return self.canceled


def _cuda_devices() -> int:
    import torch  # extra: ml

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def processes_for(config: TrainingConfig, setting: int | None, cuda_devices: int) -> int:
    """How many processes train: the config's, else the deployment's setting, else one per GPU (one without)."""
    if config.hardware.processes:
        return config.hardware.processes
    if setting:
        return setting
    if config.hardware.device == "cpu":
        return 1
    return max(1, cuda_devices)


# -- 1. prepare -----------------------------------------------------------------------------------------------------

def _prompt(tokenizer: Any, example: Example) -> dict[str, Any] | None:
    """A validation row as a prompt to answer (input ids) with its reference answer; None for text rows."""
    if example.kind == "chat":
        messages = example.as_dicts()
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        asked = messages[:last]
        ids = tokenizer.apply_chat_template(asked, tokenize=True, add_generation_prompt=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        text = next((m["content"] for m in reversed(asked) if m["role"] == "user"), asked[-1]["content"])
        return {"input_ids": list(ids), "text": text, "reference": messages[last]["content"]}
    if example.kind == "completion":
        ids = tokenizer(example.prompt or "", add_special_tokens=True)["input_ids"]
        return {"input_ids": list(ids), "text": example.prompt, "reference": example.completion}
    return None


def _encode_all(tokenizer: Any, examples: list[Example], config: TrainingConfig, dataset: str,
                counts: dict[str, int], problems: list[Problem]) -> list[dict[str, Any]]:
    from modelbay.engine.datasets.problems import Problem
    from modelbay.engine.datasets.tokens import encode

    rows = []
    p = config.parameters
    for example in examples:
        encoded = encode(tokenizer, example, max_length=p.max_length, policy=p.overlong)
        if isinstance(encoded, Problem):
            if encoded.fatal:
                raise DatasetInvalid(dataset, encoded.message, encoded.line)
            counts[encoded.reason] = counts.get(encoded.reason, 0) + 1
            problems.append(encoded)
            continue
        counts["truncated"] = counts.get("truncated", 0) + int(encoded.truncated)
        rows.append({"input_ids": encoded.input_ids, "assistant_masks": encoded.assistant_masks})
    return rows


def prepare(job: Job, files: RunFiles, *, base: VersionRecord, base_name: str, dataset: str,
            config: TrainingConfig, name: str) -> dict[str, Any]:
    """Split and encode the dataset into the run's folder and write run.json; return what run.json holds.

    Raises:
        DatasetNotFound, DatasetUnreadable: the dataset (or validation dataset) is gone.
        DatasetInvalid: a row the `fail` policy stops at, or fewer training rows than `min_rows`.
    """
    from modelbay.engine.datasets.datasets import Datasets
    from modelbay.engine.datasets.records import main_problem
    from modelbay.engine.datasets.report import summarize
    from modelbay.engine.datasets.tokens import load_tokenizer
    from modelbay.engine.installs.loadable import weights_folder
    from modelbay.engine.training.training import too_few

    folder = weights_folder(base)
    if folder is None:
        raise ValueError(f"version #{base.id} of {base_name} has no full weights installed")
    datasets = Datasets(job.settings, job.db)
    record = datasets.get(dataset)
    p, evaluation = config.parameters, config.evaluation
    split = datasets.split(record.id, validation=evaluation.validation, seed=p.seed,
                           validation_ref=evaluation.validation_dataset)
    tokenizer = load_tokenizer(folder)
    counts: dict[str, int] = {}
    problems: list[Problem] = []
    train_rows = _encode_all(tokenizer, split.train, config, record.name, counts, problems)
    validation_rows = _encode_all(tokenizer, split.validation, config, record.name, counts, problems)
    if len(train_rows) < p.min_rows:
        raise DatasetInvalid(record.name, too_few(len(train_rows), p.overlong, p.min_rows,
                                                  main_problem(summarize(problems))))
    prompts = []
    for example in split.validation:
        if len(prompts) >= evaluation.prompts:
            break
        prompt = _prompt(tokenizer, example)
        if prompt is not None:
            prompts.append(prompt)
    write_jsonl(files.train_rows, train_rows)
    write_jsonl(files.validation_rows, validation_rows)
    write_jsonl(files.prompts, prompts)
    spec = {
        "run": files.root.name, "job": job.job_id, "name": name,
        "base": {"name": base_name, "version_id": base.id, "folder": str(folder)},
        "dataset": {"id": record.id, "name": record.name, "sha256": record.sha256,
                    "validation_dataset": evaluation.validation_dataset},
        "config": config.model_dump(mode="json"),
        "rows": {"train": len(train_rows), "validation": len(validation_rows),
                 "tokens": sum(len(r["input_ids"]) for r in train_rows), **counts},
    }
    files.spec.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return spec


# -- 2. train -------------------------------------------------------------------------------------------------------

def _in_process(job: Job, files: RunFiles) -> dict[str, Any]:
    from modelbay.engine.training.trainer import train

    route_transformers_logs()

    channel = JobChannel(job)
    result = train(files, channel)
    return {**result, "stopped": result["stopped"] or channel.canceled}


def _forward(job: Job, files: RunFiles, offset: int, canceled: bool) -> tuple[int, bool]:
    """Forward rank 0's new reports to the job's progress; return the new offset and whether a cancel was seen."""
    events, offset = read_events(files, offset)
    for event in events:
        if canceled:
            break
        try:
            job.progress(event["fraction"], event["message"], force=bool(event.get("force")),
                         detail=TrainingDetail.of(event.get("detail") or {}))
        except JobCanceled:
            canceled = True
    if not canceled:
        try:
            job.check_canceled()
        except JobCanceled:
            canceled = True
    return offset, canceled


def _gpu_room() -> int | None:
    """Total memory of the smallest GPU this worker sees (bytes), None without one."""
    import torch  # extra: ml

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))


def strategy_of(files: RunFiles, spec: dict[str, Any], config: TrainingConfig, processes: int,
                room: int | None) -> str:
    """How this run's processes train ("single", "ddp" or "fsdp"), decided once and kept in run.json: a retry or a
    resume trains the same way (a DDP checkpoint is not an FSDP one). Auto picks FSDP when one GPU of `room` bytes
    cannot hold the run at its precision but `processes` GPUs sharded can (`memory.strategy_for`)."""
    from pathlib import Path

    from modelbay.engine.training.files import read_jsonl
    from modelbay.engine.training.memory import ModelShape, estimate, strategy_for

    if spec.get("strategy") in ("ddp", "fsdp") and processes > 1:
        return str(spec["strategy"])
    found = None
    if processes > 1 and room is not None and config.hardware.strategy == "auto" and not config.quantized:
        p = config.parameters
        import torch  # extra: ml

        precision = config.hardware.precision if config.hardware.precision != "auto" else (
            "bf16" if torch.cuda.is_bf16_supported() else "fp16")
        longest = max((len(row["input_ids"]) for row in read_jsonl(files.train_rows)), default=p.max_length)
        try:
            shape = ModelShape.of_folder(Path(spec["base"]["folder"]))
        except ValueError:
            shape = None
        if shape is not None:
            found = estimate(shape, precision=precision, batch=p.batch_size, seq_len=min(longest, p.max_length),
                             r=p.lora.r, target_modules=p.lora.target_modules,
                             gradient_checkpointing=config.hardware.gradient_checkpointing)
    chosen = strategy_for(config.hardware.strategy, processes, found, room, quantized=config.quantized)
    if processes > 1:
        files.spec.write_text(json.dumps({**spec, "strategy": chosen}, indent=1), encoding="utf-8")
    return chosen


def _launched(job: Job, files: RunFiles, processes: int,
              wait: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Train in `processes` processes through torchrun, forwarding reports and a cancel; return rank 0's result.

    Raises:
        RuntimeError: the launch failed (its output's tail says why; the whole of it is in train.log).
    """
    files.events.unlink(missing_ok=True)
    files.cancel.unlink(missing_ok=True)
    files.result.unlink(missing_ok=True)
    settings = job.settings
    command = torchrun_command(files, processes, nodes=settings.train_nodes,
                               rdzv_endpoint=settings.train_rdzv_endpoint, node_rank=settings.train_node_rank)
    log.info("training %s in %d processes on %d node(s): %s", files.root.name, processes, settings.train_nodes,
             " ".join(command))
    with files.log.open("ab") as output:
        process = subprocess.Popen(command, env=rank_environment(os.environ), stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, process_group=0,
                                   preexec_fn=die_with_parent)  # noqa: PLW1509 - only a libc call
    offset, canceled, asked_at = 0, False, None
    try:
        while process.poll() is None:
            offset, canceled = _forward(job, files, offset, canceled)
            if canceled and asked_at is None:
                files.cancel.touch()
                asked_at = time.monotonic()
            if asked_at is not None and time.monotonic() - asked_at > STOP_GRACE:
                log.warning("training %s did not stop within %.0fs of its cancel: killing it", files.root.name,
                            STOP_GRACE)
                break
            wait(POLL)
        _forward(job, files, offset, True)
    finally:
        if process.poll() is None:
            _kill(process)
    if process.returncode != 0 or not files.result.exists():
        tail = files.log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:] if files.log.exists() else ""
        if canceled:
            return {"stopped": True}
        raise RuntimeError(f"torchrun exited with {process.returncode}: {tail}")
    result = json.loads(files.result.read_text(encoding="utf-8"))
    return {**result, "stopped": result.get("stopped") or canceled}


def _kill(process: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


# -- 3. finish ------------------------------------------------------------------------------------------------------

def _finish(job: Job, files: RunFiles, spec: dict[str, Any], base: VersionRecord,
            result: dict[str, Any]) -> dict[str, Any]:
    from modelbay.engine.installs.store import ModelStore
    from modelbay.engine.training.versions import add_tuned_version

    made = files.version
    if made.exists():  # a retry after the version was made: the same version
        return json.loads(made.read_text(encoding="utf-8"))
    metrics = {key: result.get(key) for key in (
        "eval_loss_before", "eval_loss_after", "perplexity_before", "perplexity_after", "step", "total_steps",
        "tokens", "runtime_s", "peak_memory_bytes", "processes", "precision", "device")}
    metrics["answers"] = result.get("answers", [])
    params = {"dataset": spec["dataset"], "config": spec["config"], "metrics": metrics, "rows": spec["rows"],
              "job": job.job_id, "run": spec["run"],
              "files": {"steps": str(files.steps), "chart": str(files.chart) if files.chart.exists() else None}}
    merged = files.merged if files.merged.is_dir() else None
    version = add_tuned_version(job.db, base=base, name=spec["name"], adapter_dir=files.adapter, merged_dir=merged,
                                params=params, store=ModelStore(job.settings.resolved_model_store))
    done = {**metrics, "model": spec["name"], "version_id": version.id, "base": spec["base"]["name"],
            "dataset": spec["dataset"]["name"], "train_rows": spec["rows"]["train"],
            "validation_rows": spec["rows"]["validation"], "resumed_from": result.get("resumed_from"),
            "run": spec["run"], "steps_log": str(files.steps),
            "chart": str(files.chart) if files.chart.exists() else None}
    made.write_text(json.dumps(done), encoding="utf-8")
    shutil.rmtree(files.checkpoints, ignore_errors=True)  # a finished run resumes no more: free the disk
    return done


# -- the job --------------------------------------------------------------------------------------------------------

def run_job(job: Job, *, base_version_id: int, base: str, dataset: str, config: dict[str, Any], name: str,
            dataset_name: str | None = None, run: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Prepare, train and finish one training run (the module docstring has the steps); return the job's result.

    `base` is the base model's name, `dataset` the dataset's id (`dataset_name` its name, for messages). `run` names the run folder (the id of the job that started it; a resume passes the canceled job's), `resume`
    says the run must continue from a checkpoint.

    Raises:
        JobCanceled: the job was canceled; a checkpoint was saved when training had started.
        CheckpointMissing: a resume found no checkpoint in the run's folder.
        ResumeNameTaken: a resume of a run that made its model already, or whose name a model has taken since.
        DatasetNotFound, DatasetUnreadable, DatasetInvalid: the dataset cannot be trained on.
        CudaRequired, QuantizationUnavailable: the config needs what this worker lacks.
        ModelNameTaken: the new model's name was taken meanwhile.
    """
    from modelbay.engine.catalog.registry import Registry

    from modelbay.engine.training.training import check_free
    from modelbay.engine.training.versions import check_name

    files = RunFiles.of(job.settings.home, run or job.job_id)
    settings_config = TrainingConfig.model_validate(config)
    if not files.version.exists():  # a name taken since pre-flight: refused before any training, not after it
        if resume:
            check_free(job.db, files, files.root.name, name)
        else:
            check_name(job.db, name)
    checkpoint = files.last_checkpoint()
    if resume and checkpoint is None:
        raise CheckpointMissing(files.root.name, str(files.checkpoints))
    base_version = Registry(job.db).get_version(base_version_id)
    prepared = files.spec.exists() and files.train_rows.exists() and files.validation_rows.exists()
    if prepared:
        spec = json.loads(files.spec.read_text(encoding="utf-8"))
    else:
        job.progress(0.0, f"Preparing {dataset_name or dataset} for {base}", force=True,
                     detail=TrainingDetail(phase="preparing"))
        spec = prepare(job, files, base=base_version, base_name=base, dataset=dataset, config=settings_config,
                       name=name)
    job.check_canceled()
    processes = processes_for(settings_config, job.settings.train_processes,
                              _cuda_devices() if settings_config.hardware.device != "cpu" else 0)
    distributed = processes > 1 or job.settings.train_nodes > 1
    if distributed:
        strategy_of(files, spec, settings_config, processes * job.settings.train_nodes,
                    _gpu_room() if settings_config.hardware.device != "cpu" else None)
    result = _launched(job, files, processes) if distributed else _in_process(job, files)
    if result.get("stopped"):
        raise JobCanceled(job.job_id)
    job.progress(1.0, f"Registering {spec['name']}", force=True,
                 detail=TrainingDetail(phase="saving", step=result.get("step"), total_steps=result.get("total_steps")))
    return _finish(job, files, spec, base_version, result)

