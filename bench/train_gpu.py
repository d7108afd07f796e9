"""A prepared GPU check: ModelBay's training job on CUDA (bf16 LoRA, bitsandbytes QLoRA) beside a plain peft script.

For a session that is lent a GPU (the `device` tool); CI never runs it, and without CUDA it exits at once with one
line saying so. On a model of Llama-3.2-1B's shape (1.24B parameters: 16 layers, hidden 2048, MLP 8192, 32 heads
with 8 key/value heads, vocabulary 128,256, tied embeddings, llama3 RoPE), with random weights built here from a
`LlamaConfig` (nothing is downloaded) and the tiny test model's tokenizer (its ids fit the vocabulary; the LM head
still computes all 128,256 logits), it runs four trainings on the same made-up chat rows, settings and steps:

- `modelbay_bf16`: ModelBay's job through the console path (embedded runtime: SQLite, the in-process Redis, RQ worked
  by threads; `Training.start` -> the gpu queue's worker -> `workers/jobs/train.train` with a real `JobContext`),
  template `chat-lora` in bf16 on CUDA: TRL's SFTTrainer with its fused LM head, every step reported and stored, a
  checkpoint every `save_steps`;
- `plain_bf16`: transformers' `Trainer` over peft's `get_peft_model`, bf16, the model's own loss, no logging or
  checkpoints;
- `modelbay_qlora`: the same job with template `qlora-4bit` (bitsandbytes NF4 with double quantization and bf16
  compute, paged 8-bit AdamW, gradient checkpointing);
- `plain_qlora`: the plain script with the same quantization, optimizer and checkpointing, the adapter cast to bf16
  and input gradients enabled, as TRL does (no `prepare_model_for_kbit_training`, whose fp32 upcasts ModelBay does not
  make).

Each run's step time and tokens/s (input tokens without padding) are the steady state from the end of step
WARMUP_STEPS to the end of the last step (the plain script synchronises CUDA at those two marks; ModelBay's steps
log is written after each step's loss is read back, which synchronises); peak memory is
`torch.cuda.max_memory_allocated` over the run (reset before each; ModelBay's includes its held-out evaluations).
Prints a line per run, then a final JSON line: {"gpu", "torch", "model", "params", ..., "runs": {name: {"step_ms",
"tokens_per_s", "peak_memory_gib", ...}}, "ratio_bf16", "ratio_qlora"} (ratio: ModelBay's step time over the plain
script's; the issue's goal on the CPU is 1.10). A run that cannot start (bitsandbytes missing) is reported as skipped
with the reason.

On the lent H200 (its image: torch, transformers 5.17, peft, accelerate, huggingface-hub 1.x, pyarrow, pandas and
pytest are there; see /work/.library/device/KINDS.md), ModelBay's own needs travel as wheels (the device README's
`pip download` line, `--python-version 3.12`): trl, datasets, dill, multiprocess, bitsandbytes, pydantic,
pydantic-core, annotated-types, typing-inspection, pydantic-settings, python-dotenv, sqlalchemy, alembic, mako, rq,
redis, fakeredis. Check there first with one `python3 -m pip show pyarrow huggingface-hub transformers ...`: datasets
5.x needs pyarrow >= 24. The script lists any module still missing and stops before building anything. Then:
`python3 -m pip install ... --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD;
PYTHONUNBUFFERED=1 python3 bench/train_gpu.py`.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEVICE = "cuda"  # where the model is built and trained (a smoke run of this script's own code may set "cpu")
STEPS = 30
WARMUP_STEPS = 5  # left out: CUDA and Triton warm up, the allocator settles
ROWS = 320
TURNS_PER_ROW = 32  # made-up exchanges run together into one row: about 900 tokens
BATCH_SIZE = 8
MAX_LENGTH = 1024
SEED = 0
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
LEARNING_RATE = 2e-4
OWNER = "console:bench"
MODEL = "llama-3.2-1b-shape"
JOB_TIMEOUT = 600.0  # seconds
GIB = 1024 ** 3
# Llama-3.2-1B's config.json, less the ids (taken from the tokenizer) and the weights (random).
LLAMA_3_2_1B = {
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False, "initializer_range": 0.02,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}
# Modules this check imports (ModelBay's runtime and training job, the plain script, the tiny tokenizer's builder).
NEEDED = ("torch", "transformers", "tokenizers", "safetensors", "peft", "accelerate", "trl", "datasets", "pydantic",
          "pydantic_settings", "sqlalchemy", "alembic", "rq", "redis", "fakeredis", "yaml", "huggingface_hub", "pytest")


def _refusal() -> str | None:
    """Why this check cannot run here (no CUDA, a module missing), or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return (f"no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
                "run it on a machine with an NVIDIA GPU, such as the device tool's")
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return (f"missing modules: {', '.join(missing)}; on the lent GPU machine they travel as wheels "
                "(this script's docstring lists them)")
    return None


# -- the model and the data ----------------------------------------------------------------------------------------

def _build_model(folder: Path, scratch: Path) -> int:
    """Write a Llama-3.2-1B-shaped model with random bf16 weights and the tiny tokenizer into folder; its size."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.support.tinymodel import TinyModelSpec, build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(scratch / "tiny", TinyModelSpec()))
    config = LlamaConfig(**LLAMA_3_2_1B, bos_token_id=tokenizer.bos_token_id or tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(SEED)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    _free()
    return params


def _dataset() -> bytes:
    """ROWS made-up chat rows, each TURNS_PER_ROW question-answer exchanges of the tiny model's corpus run together."""
    from tests.support.tinymodel import chat_corpus

    turns: list[dict[str, str]] = []
    seed = 1
    while len(turns) < ROWS * TURNS_PER_ROW * 2:
        for conversation in chat_corpus(seed=seed):
            turns.extend(m for m in conversation if m["role"] != "system")
        seed += 1
    rows = []
    for i in range(ROWS):
        messages = turns[i * TURNS_PER_ROW * 2:(i + 1) * TURNS_PER_ROW * 2]
        rows.append(json.dumps({"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                             *messages]}))
    return ("\n".join(rows) + "\n").encode()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / GIB, 2) if torch.cuda.is_available() else None


def _steady(marks: dict[int, tuple[float, int]]) -> dict[str, float]:
    """Step time (ms) and tokens/s between WARMUP_STEPS and the last step, from {step: (time s, tokens seen)}."""
    last = max(marks)
    (t0, n0), (t1, n1) = marks[WARMUP_STEPS], marks[last]
    return {"step_ms": round((t1 - t0) / (last - WARMUP_STEPS) * 1000, 1), "tokens_per_s": round((n1 - n0) / (t1 - t0)),
            "window_steps": last - WARMUP_STEPS, "window_tokens": n1 - n0}


# -- ModelBay's job ------------------------------------------------------------------------------------------------

def _overrides() -> dict[str, Any]:
    """The job's settings on top of its template; the plain script is given the same."""
    hardware = {"device": DEVICE, "precision": "bf16"}
    return {"parameters": {"max_steps": STEPS, "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH,
                           "overlong": "truncate", "seed": SEED, "learning_rate": LEARNING_RATE, "lora": LORA},
            "hardware": hardware,
            "evaluation": {"validation": 0.1, "eval_steps": 1_000_000, "prompts": 0}}


def _modelbay(runtime: Any, qlora: bool) -> tuple[dict[str, Any], Path]:
    """A training job as /train start makes it, followed to its end; its steady state and peak memory."""
    from modelbay.engine.training.files import RunFiles, read_jsonl
    from modelbay.engine.training.progress import TrainingDetail

    _reset_peak()
    template = "qlora-4bit" if qlora else "chat-lora"
    started = runtime.training.start(MODEL, "bench-chat", requester=OWNER, owner=OWNER, template=template,
                                     name=f"bench-{template}", overrides=_overrides(), hardware_wait=120)
    for event in runtime.jobs.events(started.job.id, poll=1.0):  # what a live card listens to
        TrainingDetail.of(event.detail)
    done = runtime.jobs.wait(started.job.id, JOB_TIMEOUT)
    if done.status != "finished":
        raise RuntimeError(f"the {template} job {done.id} ended {done.status}: {done.error}")
    files = RunFiles.of(runtime.settings.home, done.id)
    steps = [row for row in read_jsonl(files.steps) if "loss" in row]
    result = {**_steady({row["step"]: (row["time"], row["tokens"]) for row in steps}),
              "peak_memory_gib": round(done.result["peak_memory_bytes"] / GIB, 2),
              "precision": done.result.get("precision"),
              "train_loss_mean": round(sum(row["loss"] for row in steps) / len(steps), 4),
              "checkpoint_every": started.preflight.config.parameters.save_steps}
    _free()
    return result, files.train_rows


# -- the plain script ----------------------------------------------------------------------------------------------

def _plain(folder: Path, rows_file: Path, out: Path, qlora: bool) -> dict[str, Any]:
    """transformers' Trainer on peft's LoRA (4-bit base for QLoRA), on the rows the job trained on."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq,
                              PrinterCallback, Trainer, TrainerCallback, TrainingArguments)

    from modelbay.engine.training.files import read_jsonl

    marks: dict[int, tuple[float, int]] = {}

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            if state.global_step in (WARMUP_STEPS, STEPS):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks[state.global_step] = (time.time(), int(state.num_input_tokens_seen))

    _reset_peak()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "device_map": {"": DEVICE}}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["target_modules"], bias="none",
                                             task_type="CAUSAL_LM"))
    if qlora:
        model.enable_input_require_grads()  # gradient checkpointing through a frozen base needs input gradients
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.bfloat16)  # as TRL does for QLoRA (the QLoRA paper's choice)
    rows = [{"input_ids": r["input_ids"],
             "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"], strict=True)]}
            for r in read_jsonl(rows_file)]
    args = TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0, max_grad_norm=1.0,
        optim="paged_adamw_8bit" if qlora else "adamw_torch", bf16=True, gradient_checkpointing=qlora,
        gradient_checkpointing_kwargs={"use_reentrant": False} if qlora else None, seed=SEED, data_seed=SEED,
        use_cpu=DEVICE == "cpu", save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True), callbacks=[Marks()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    model.save_pretrained(str(out / "adapter"))
    result = {**_steady(marks), "peak_memory_gib": _peak_gib(), "precision": "4bit+bf16" if qlora else "bf16",
              "train_loss_mean": round(trainer.state.log_history[-1]["train_loss"], 4)}
    del trainer, model
    _free()
    return result


# -- the run -------------------------------------------------------------------------------------------------------

def main() -> dict[str, Any]:
    """Build the model, run the four trainings, and return the figures."""
    import torch
    from datasets import disable_progress_bars
    from transformers.utils import logging as hf_logging

    from modelbay.config import load_settings
    from modelbay.runtime import Runtime

    # the embedded scheduler's "Acquired scheduler lock" lines (RQ sets that logger's level itself when it starts)
    logging.getLogger("rq.scheduler").addFilter(lambda record: record.levelno >= logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="modelbay-bench-train-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / MODEL
        started = time.monotonic()
        params = _build_model(folder, tmp)
        print(f"built {MODEL}: {params / 1e9:.3f}B parameters in {time.monotonic() - started:.0f} s", flush=True)
        settings = load_settings(home=tmp / "home", environment="test", redis_url=None, database_url=None)
        runtime = Runtime(settings)
        try:
            runtime.prepare()
            runtime.start_embedded_workers()
            model = runtime.registry.upsert({"name": MODEL, "repo_id": f"local/{MODEL}", "category": "chat",
                                             "display_name": "Llama 3.2 1B shape", "context_length": 131072,
                                             "tags": ["bench"]}, source="local")
            runtime.registry.add_version(model.id, "main", install_state="installed", local_path=str(folder),
                                         installed_at=datetime.now(timezone.utc))
            runtime.datasets.add(OWNER, "bench-chat.jsonl", [_dataset()], source="console")
            rows_file = None
            for name in ("modelbay_bf16", "plain_bf16", "modelbay_qlora", "plain_qlora"):
                qlora = name.endswith("qlora")
                if qlora and importlib.util.find_spec("bitsandbytes") is None:
                    runs[name] = {"skipped": "bitsandbytes is not installed"}
                elif name.startswith("plain") and rows_file is None:
                    runs[name] = {"skipped": "ModelBay's job, whose rows it trains on, did not run"}
                else:
                    try:
                        if name.startswith("modelbay"):
                            runs[name], rows_file = _modelbay(runtime, qlora)
                        else:
                            runs[name] = _plain(folder, rows_file, tmp / name, qlora)
                    except Exception as exc:  # report the others: one failed run says why and the check goes on
                        logging.getLogger(__name__).exception("%s failed", name)
                        runs[name] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
                        _free()
                print(f"{name}: {json.dumps(runs[name])}", flush=True)
        finally:
            runtime.close()
    figures: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__,
        "model": "Llama-3.2-1B shape, random weights", "params": params, "rows": ROWS, "batch_size": BATCH_SIZE,
        "max_length": MAX_LENGTH, "steps": STEPS, "warmup_steps": WARMUP_STEPS, "lora": LORA, "runs": runs,
    }
    for kind in ("bf16", "qlora"):
        ours, plain = runs.get(f"modelbay_{kind}", {}), runs.get(f"plain_{kind}", {})
        if "step_ms" in ours and "step_ms" in plain:
            figures[f"ratio_{kind}"] = round(ours["step_ms"] / plain["step_ms"], 3)
    return figures


if __name__ == "__main__":
    refusal = _refusal()
    if refusal:
        sys.exit(f"bench/train_gpu.py: {refusal}.")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(json.dumps(main()))
