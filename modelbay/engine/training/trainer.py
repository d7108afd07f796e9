"""The training itself, in the process that trains (the job's work horse, or each rank of a torchrun launch).

`train(files, channel)` reads what `run.json` and `data/` say (written by the job, `engine/training/run.py`) and
runs TRL's `SFTTrainer` with a peft LoRA adapter on the pre-tokenised rows (`input_ids` + `assistant_masks`, from
`engine/datasets/tokens.encode`, so what the dataset report shows is what trains; TRL builds the labels from the
masks). The base model loads in 4-bit NF4 through bitsandbytes for QLoRA (CUDA only). It measures the held-out loss
of the base model (once per run), trains from the run's last valid checkpoint if there is one (the step count
continues), measures the held-out loss again, answers a few validation prompts greedily with the base and the tuned
model, and saves the adapter with the tokenizer files (and merged weights when asked).

Every logged step goes to `steps.jsonl` and, as a `TrainingDetail`, to the channel (only rank 0 reports). The
channel also says when to stop: the callback then asks transformers to save a checkpoint and stop at the end of the
step (`control.should_save`, `control.should_training_stop`), after all ranks agree (the flag is all-reduced, MAX),
so that no rank waits for another in a collective.

Several processes train with DDP, or with FSDP when run.json's `strategy` says so (`fsdp_arguments`: FULL_SHARD,
one unit per decoder layer); a sharded run saves its adapter through all ranks and answers no validation prompts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from modelbay.engine.errors import CudaRequired, QuantizationUnavailable
from modelbay.engine.training.files import RunFiles, draw_chart, read_jsonl, trim_steps
from modelbay.engine.training.progress import RECENT_LOSSES, TrainingDetail
from modelbay.engine.training.templates import TrainingConfig

try:
    from transformers import TrainerCallback  # extra: ml
except ImportError:  # the base install trains nothing; this module is imported only by training jobs
    TrainerCallback = object  # type: ignore[assignment,misc]

__all__ = ["Channel", "Reporter", "train"]

log = logging.getLogger(__name__)

WINDOW = 20  # steps the rate (tokens/s, ETA) is measured over


class Channel(Protocol):
    """Where a training process sends its reports and learns that it should stop."""

    def report(self, fraction: float, message: str, detail: TrainingDetail, *, force: bool = False) -> None:
        """Publish one report (`fraction` of the run done, a one-line message, the detail)."""

    def stop_requested(self) -> bool:
        """Whether the job was asked to stop (canceled)."""


class _Rank:
    """This process's place in a distributed run (rank 0 of 1 when not distributed)."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _peak_memory(cuda: bool) -> int:
    """Peak GPU memory allocated by this process on CUDA, else its peak resident set size, in bytes."""
    if cuda:
        import torch  # extra: ml

        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


class Reporter(TrainerCallback):
    """Every logged step to steps.jsonl and the channel (rank 0); a stop request to a checkpoint and a stop."""

    def __init__(self, files: RunFiles, channel: Channel, rank: _Rank, *, cuda: bool, before: float | None) -> None:
        self.files = files
        self.channel = channel
        self.rank = rank
        self.cuda = cuda
        self.before = before
        self.stopped = False
        self.total_steps = 0
        self.eval_loss: float | None = None
        self.losses: deque[float] = deque(maxlen=RECENT_LOSSES)
        self._marks: deque[tuple[float, int, int]] = deque(maxlen=WINDOW)  # (time, step, tokens)
        self._last: dict[str, Any] = {}

    def _stop_flag(self) -> bool:
        wanted = self.channel.stop_requested()
        if self.rank.world > 1:
            import torch  # extra: ml
            import torch.distributed as dist  # extra: ml

            flag = torch.tensor([1 if wanted else 0], device="cuda" if self.cuda else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            wanted = bool(flag.item())
        return wanted

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.total_steps = int(state.max_steps)
        self._marks.append((time.monotonic(), int(state.global_step), int(state.num_input_tokens_seen or 0)))
        for row in read_jsonl(self.files.steps):  # a resume keeps the sparkline it had
            if row.get("loss") is not None:
                self.losses.append(float(row["loss"]))
            if row.get("eval_loss") is not None:
                self.eval_loss = float(row["eval_loss"])
        self._report(state, phase="training", force=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._marks.append((time.monotonic(), int(state.global_step), int(state.num_input_tokens_seen or 0)))
        if not self.stopped and self._stop_flag():
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at this step: a resume continues from here
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" not in logs and "eval_loss" not in logs:
            return  # the summary transformers logs at the end of train()
        row: dict[str, Any] = {"step": int(state.global_step), "epoch": round(float(state.epoch or 0.0), 4)}
        if "loss" in logs:
            self.losses.append(float(logs["loss"]))
            row.update(loss=float(logs["loss"]), learning_rate=logs.get("learning_rate"),
                       grad_norm=logs.get("grad_norm"), tokens=int(state.num_input_tokens_seen or 0))
            rate = self._rate()
            if rate is not None:
                row["tokens_per_s"] = round(rate[0], 1)
        if "eval_loss" in logs:
            self.eval_loss = float(logs["eval_loss"])
            row["eval_loss"] = self.eval_loss
        row["time"] = round(time.time(), 3)
        if self.rank.main:
            with self.files.steps.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        self._last = {**self._last, **row}
        self._report(state, phase="training", force="eval_loss" in logs)

    def _rate(self) -> tuple[float, float] | None:
        """Tokens per second and seconds per step over the window, once two marks exist."""
        if len(self._marks) < 2:
            return None
        (t0, s0, n0), (t1, s1, n1) = self._marks[0], self._marks[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return (n1 - n0) / (t1 - t0), (t1 - t0) / (s1 - s0)

    def _report(self, state: Any, *, phase: str, force: bool = False) -> None:
        if not self.rank.main:
            return
        step, total = int(state.global_step), max(1, self.total_steps)
        rate = self._rate()
        loss = self._last.get("loss")
        detail = TrainingDetail(
            phase=phase, step=step, total_steps=total, epoch=round(float(state.epoch or 0.0), 4), loss=loss,
            eval_loss=self.eval_loss, eval_loss_before=self.before, learning_rate=self._last.get("learning_rate"),
            grad_norm=self._last.get("grad_norm"), tokens=int(state.num_input_tokens_seen or 0),
            tokens_per_s=round(rate[0], 1) if rate else None,
            eta=round(max(0, total - step) * rate[1], 1) if rate else None,
            peak_memory_bytes=_peak_memory(self.cuda), recent_losses=list(self.losses), processes=self.rank.world,
        )
        message = f"step {step}/{total}" + (f" · loss {loss:.4f}" if loss is not None else "")
        if self.eval_loss is not None:
            message += f" · held-out {self.eval_loss:.4f}"
        self.channel.report(min(1.0, step / total), message, detail, force=force)


# -- the run --------------------------------------------------------------------------------------------------------

def _device(config: TrainingConfig) -> bool:
    """Whether this run trains on CUDA; refuses what cannot run here.

    Raises:
        CudaRequired: the config needs CUDA (QLoRA, 8-bit optimizers, device cuda) and there is none.
        QuantizationUnavailable: QLoRA asked for and bitsandbytes is not installed.
    """
    import torch  # extra: ml

    cuda = torch.cuda.is_available() and config.hardware.device != "cpu"
    if config.needs_cuda and not cuda:
        raise CudaRequired(config.cuda_use, "this gpu worker has none")
    if config.quantized or config.parameters.optimizer != "adamw_torch":
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise QuantizationUnavailable("bitsandbytes is not installed")
    return cuda


def _precision(config: TrainingConfig, cuda: bool) -> str:
    """The precision the run computes in: the config's, or for auto bf16 on GPUs that have it, fp16 on other GPUs,
    fp32 on the CPU."""
    import torch  # extra: ml

    chosen = config.hardware.precision
    if chosen == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return chosen


def _load_model(folder: str, config: TrainingConfig, cuda: bool, precision: str, rank: _Rank) -> Any:
    import torch  # extra: ml
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # extra: ml

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.quantized:
        quant = config.parameters.quantization
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type, bnb_4bit_use_double_quant=quant.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, quant.compute_dtype))
    if cuda:
        kwargs["device_map"] = {"": rank.local}
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs)


def fsdp_arguments(layer_classes: list[str] | None) -> dict[str, Any]:
    """transformers' TrainingArguments for FSDP: FULL_SHARD (parameters resharded after the forward pass), each
    decoder layer its own unit (auto wrap by transformer layer class; None: the model's `_no_split_modules`), full
    state dicts in checkpoints (so a checkpoint and the adapter load anywhere).

    FSDP2 (`fully_shard`, transformers' default) shards each parameter on its own, so peft's frozen base weights and
    trainable adapters live side by side: FSDP1's `use_orig_params=True` (and its flat parameters, whose frozen and
    trainable parts must not mix) are not needed.
    """
    config: dict[str, Any] = {"version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                              "state_dict_type": "FULL_STATE_DICT"}
    if layer_classes:
        config["transformer_layer_cls_to_wrap"] = list(layer_classes)
    return {"fsdp": True, "fsdp_config": config}


def _sft_config(files: RunFiles, config: TrainingConfig, cuda: bool, precision: str, has_validation: bool,
                distributed: bool, fsdp: dict[str, Any] | None = None) -> Any:
    from trl import SFTConfig  # extra: ml

    p = config.parameters
    evaluation = config.evaluation
    if not has_validation:
        eval_strategy, eval_steps = "no", None
    elif evaluation.eval_steps:
        eval_strategy, eval_steps = "steps", evaluation.eval_steps
    else:
        eval_strategy, eval_steps = "epoch", None
    return SFTConfig(
        output_dir=str(files.checkpoints), num_train_epochs=p.epochs, max_steps=p.max_steps or -1,
        per_device_train_batch_size=p.batch_size, per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation, learning_rate=p.learning_rate,
        lr_scheduler_type=p.scheduler, warmup_steps=p.warmup,  # a float below 1 is a share of the steps
        weight_decay=p.weight_decay, max_grad_norm=p.max_grad_norm, optim=p.optimizer,
        logging_steps=1, save_strategy="steps", save_steps=p.save_steps, save_total_limit=p.save_total_limit,
        eval_strategy=eval_strategy, eval_steps=eval_steps, seed=p.seed, data_seed=p.seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda,
        gradient_checkpointing=config.hardware.gradient_checkpointing,
        ddp_backend=("nccl" if cuda else "gloo") if distributed else None, ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding", max_length=p.max_length, packing=False,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, save_only_model=False, **(fsdp or {}),
    )


def _trainer_class(cuda: bool) -> type:
    """TRL's SFTTrainer on CUDA; on the CPU, the same trainer computing the loss the way transformers' Trainer does.

    TRL patches the model with a fused LM head: log-probabilities computed in vocabulary chunks and recomputed in the
    backward pass, with entropy and token accuracy (metrics ModelBay does not log). With Triton (CUDA) it projects only
    the trained positions, sparing the memory of the full logits; without it (the CPU) it projects every position, so
    the chunking and recomputation are pure cost: a step of the tiny test model took about 20% longer than with the
    model's own loss (bench/train.py). The CPU path takes the model's own loss, over the full fp32 logits that
    `memory.estimate` already counts; the loss is the same (mean cross-entropy of the trained tokens).
    """
    from transformers import Trainer  # extra: ml
    from trl import SFTTrainer  # extra: ml

    if cuda:
        return SFTTrainer

    class CpuSFTTrainer(SFTTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = {**inputs, "use_cache": False}  # as TRL's: no key/value cache while training
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CpuSFTTrainer


def _rows(path: Path, loss: str) -> list[dict[str, Any]]:
    rows = []
    for row in read_jsonl(path):
        ids = row["input_ids"]
        masks = [1] * len(ids) if loss == "all_tokens" else row["assistant_masks"]
        rows.append({"input_ids": ids, "assistant_masks": masks})
    return rows


def _generate(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int, device: Any) -> str:
    import torch  # extra: ml

    inputs = torch.tensor([prompt_ids], device=device)
    with torch.no_grad():
        output = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
                                if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    return tokenizer.decode(output[0, len(prompt_ids):], skip_special_tokens=True).strip()


def _answers(model: Any, tokenizer: Any, prompts: list[dict[str, Any]], max_new_tokens: int) -> list[dict[str, Any]]:
    """Each prompt answered greedily by the base model (adapter disabled) and the tuned one, side by side."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers = []
    try:
        for prompt in prompts:
            with model.disable_adapter():
                base = _generate(model, tokenizer, prompt["input_ids"], max_new_tokens, device)
            tuned = _generate(model, tokenizer, prompt["input_ids"], max_new_tokens, device)
            answers.append({"prompt": prompt["text"], "reference": prompt.get("reference"), "base": base,
                            "tuned": tuned})
    finally:
        model.train(was_training)
    return answers


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


def _save(trainer: Any, tokenizer: Any, files: RunFiles, spec: dict[str, Any], config: TrainingConfig,
          precision: str) -> None:
    """Write the adapter with the tokenizer files, and merged weights when asked (rank 0 only)."""
    import shutil

    for folder in (files.adapter, files.merged):
        shutil.rmtree(folder, ignore_errors=True)
    model = trainer.model
    model.save_pretrained(str(files.adapter))
    tokenizer.save_pretrained(str(files.adapter))
    if not config.parameters.merge:
        return
    if config.quantized:
        # A 4-bit base cannot take the adapter's update exactly: merge into the base reloaded at compute precision.
        import torch  # extra: ml
        from peft import PeftModel  # extra: ml
        from transformers import AutoModelForCausalLM  # extra: ml

        dtype = getattr(torch, config.parameters.quantization.compute_dtype)
        base = AutoModelForCausalLM.from_pretrained(spec["base"]["folder"], dtype=dtype)
        merged = PeftModel.from_pretrained(base, str(files.adapter)).merge_and_unload()
    else:
        merged = model.merge_and_unload()
    merged.save_pretrained(str(files.merged))
    tokenizer.save_pretrained(str(files.merged))


def _save_sharded(trainer: Any, tokenizer: Any, files: RunFiles, spec: dict[str, Any], config: TrainingConfig,
                  precision: str, rank: _Rank) -> None:
    """Write an FSDP run's adapter (every rank takes part: the full state dict is gathered to rank 0, which writes
    it), and merged weights when asked: the base reloaded on rank 0's CPU with the adapter merged in."""
    import shutil

    import torch  # extra: ml

    if rank.main:
        for folder in (files.adapter, files.merged):
            shutil.rmtree(folder, ignore_errors=True)
    torch.distributed.barrier()
    trainer.save_model(str(files.adapter))  # a collective under FSDP; rank 0 writes adapter_config + weights
    if not rank.main:
        return
    tokenizer.save_pretrained(str(files.adapter))
    if config.parameters.merge:
        from peft import PeftModel  # extra: ml
        from transformers import AutoModelForCausalLM  # extra: ml

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        base = AutoModelForCausalLM.from_pretrained(spec["base"]["folder"], dtype=dtype)
        merged = PeftModel.from_pretrained(base, str(files.adapter)).merge_and_unload()
        merged.save_pretrained(str(files.merged))
        tokenizer.save_pretrained(str(files.merged))


def _phase(channel: Channel, rank: _Rank, phase: str, message: str, fraction: float, **detail: Any) -> None:
    if rank.main:
        channel.report(fraction, message, TrainingDetail(phase=phase, **detail), force=True)


def train(files: RunFiles, channel: Channel) -> dict[str, Any]:
    """Train what `files` describes, report through `channel`, and return (and, rank 0, write) the result.

    The result: `stopped` (True when asked to stop: a checkpoint was saved at `step`), `step`, `total_steps`,
    `resumed_from` (the checkpoint's step, or None), `eval_loss_before`/`eval_loss_after` (nats per trained
    token) and their `perplexity_*`, `answers` (prompt, reference, base, tuned), `tokens`, `runtime_s`,
    `peak_memory_bytes`, `processes`, `precision`, `device`, `train_rows`.

    Raises:
        CudaRequired: the config needs CUDA and there is none here.
        QuantizationUnavailable: QLoRA without bitsandbytes.
        RuntimeError: TRL left out rows it was given (a mismatch between our tokenization and its checks).
    """
    import torch  # extra: ml
    from datasets import Dataset, disable_progress_bars  # extra: ml
    from peft import LoraConfig  # extra: ml
    from transformers import AutoTokenizer  # extra: ml
    from transformers.utils import logging as hf_logging  # extra: ml

    hf_logging.disable_progress_bar()
    disable_progress_bars()  # datasets' map bars would fill the worker log
    started = time.monotonic()
    rank = _Rank()
    spec = json.loads(files.spec.read_text(encoding="utf-8"))
    config = TrainingConfig.model_validate(spec["config"])
    cuda = _device(config)
    precision = _precision(config, cuda)
    if cuda:
        torch.cuda.set_device(rank.local)
    _phase(channel, rank, "loading", f"Loading {spec['base']['name']}", 0.0, processes=rank.world)
    tokenizer = AutoTokenizer.from_pretrained(spec["base"]["folder"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = _load_model(spec["base"]["folder"], config, cuda, precision, rank)
    train_rows = _rows(files.train_rows, config.parameters.loss)
    validation_rows = _rows(files.validation_rows, config.parameters.loss)
    prompts = list(read_jsonl(files.prompts))
    lora = config.parameters.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    metrics = json.loads(files.metrics.read_text(encoding="utf-8")) if files.metrics.exists() else {}
    reporter = Reporter(files, channel, rank, cuda=cuda, before=metrics.get("eval_loss_before"))
    strategy = spec.get("strategy", "ddp") if rank.world > 1 else "single"
    fsdp = fsdp_arguments(getattr(model, "_no_split_modules", None)) if strategy == "fsdp" else None
    trainer = _trainer_class(cuda)(
        model=model, args=_sft_config(files, config, cuda, precision, bool(validation_rows), rank.world > 1, fsdp),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(validation_rows) if validation_rows else None,
        processing_class=tokenizer, peft_config=peft_config, callbacks=[reporter],
    )
    from transformers.trainer_callback import PrinterCallback  # extra: ml

    trainer.remove_callback(PrinterCallback)  # it prints every log to stdout: the steps log and progress have them
    if fsdp and not trainer.is_fsdp_enabled:  # accelerate shards only on GPUs: say so rather than train otherwise
        raise RuntimeError("FSDP was asked for but accelerate did not enable it (it shards on GPUs only; "
                           f"this run's processes are {trainer.accelerator.state.distributed_type})")
    if len(trainer.train_dataset) != len(train_rows):
        raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of the {len(train_rows)} training rows it was given")

    if validation_rows and "eval_loss_before" not in metrics:
        _phase(channel, rank, "evaluating", "Measuring the base model's held-out loss", 0.0, processes=rank.world)
        with trainer.model.disable_adapter():
            before = trainer.evaluate(metric_key_prefix="base")["base_loss"]
        metrics["eval_loss_before"] = reporter.before = float(before)
        if rank.main:
            files.metrics.write_text(json.dumps(metrics), encoding="utf-8")
    checkpoint = files.last_checkpoint()
    resumed_from = None
    if checkpoint is not None:
        resumed_from = int(checkpoint.name.rpartition("-")[2])
        if rank.main:
            trim_steps(files.steps, resumed_from)
    elif rank.main and files.steps.exists():
        files.steps.unlink()  # steps of an attempt that saved nothing: this attempt repeats them
    if rank.world > 1:
        torch.distributed.barrier()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    state = trainer.state
    result: dict[str, Any] = {
        "stopped": reporter.stopped, "step": int(state.global_step), "total_steps": int(state.max_steps),
        "resumed_from": resumed_from, "processes": rank.world, "strategy": strategy, "precision": precision,
        "device": "cuda" if cuda else "cpu", "train_rows": len(train_rows), "validation_rows": len(validation_rows),
        "eval_loss_before": metrics.get("eval_loss_before"), "tokens": int(state.num_input_tokens_seen or 0),
    }
    if not reporter.stopped:
        if validation_rows:
            _phase(channel, rank, "testing", "Measuring the held-out loss after training", 1.0,
                   step=result["step"], total_steps=result["total_steps"], eval_loss_before=result["eval_loss_before"])
            result["eval_loss_after"] = float(trainer.evaluate(metric_key_prefix="final")["final_loss"])
        # Under FSDP no rank holds the whole model: generating on rank 0 alone would wait on the others' shards, so
        # a sharded run answers no validation prompts (its held-out loss above is measured by all ranks).
        if rank.main and prompts and strategy != "fsdp":
            _phase(channel, rank, "testing", f"Answering {len(prompts)} validation prompts with both models", 1.0,
                   step=result["step"], total_steps=result["total_steps"])
            result["answers"] = _answers(trainer.model, tokenizer, prompts, config.evaluation.max_new_tokens)
        _phase(channel, rank, "saving", "Saving the adapter" + (" and merged weights"
                                                                 if config.parameters.merge else ""), 1.0,
               step=result["step"], total_steps=result["total_steps"])
        if strategy == "fsdp":
            _save_sharded(trainer, tokenizer, files, spec, config, precision, rank)
        elif rank.main:
            _save(trainer, tokenizer, files, spec, config, precision)
    result["perplexity_before"] = _perplexity(result.get("eval_loss_before"))
    result["perplexity_after"] = _perplexity(result.get("eval_loss_after"))
    result["runtime_s"] = round(time.monotonic() - started, 3)
    result["peak_memory_bytes"] = _peak_memory(cuda)
    if rank.main:
        title = f"{spec['name']}: fine-tuning {spec['base']['name']}"
        with contextlib.suppress(Exception):  # a chart is a nicety: never fail a run over it
            draw_chart(list(read_jsonl(files.steps)), files.chart, title, before=result.get("eval_loss_before"))
        files.result.write_text(json.dumps(result), encoding="utf-8")
    if rank.world > 1:
        torch.distributed.barrier()
    return result
