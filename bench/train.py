"""Step time and tokens/s of a ModelBay training job against a plain peft + transformers script, same model and data.

ModelBay's side is the whole console path: an embedded runtime (SQLite file, the in-process Redis emulation, RQ
worked by threads), the dataset added to the Datasets store, `Training.start` (pre-flight, the `train` job on the
gpu queue), the worker thread running `workers/jobs/train.train` -> `engine/training/run.run_job` with a real
`JobContext`: every step's report checks the cancel flag, is published (pubsub, at most every 0.1 s) and stored in
the job's row (every 1 s), written to steps.jsonl, and a checkpoint is saved every `save_steps` (ModelBay's default,
50: one lands inside the measured window). Meanwhile this process's main thread follows the job's events and
parses each report, as a live card does. The plain side is what a person would write by hand: transformers'
`Trainer` over peft's `get_peft_model`, the same rows (the very input ids and answer masks the job trained on, read
back from its run folder), labels -100 where the mask is 0, padding to the longest row of each batch, no logging,
no checkpoints.

Both use the tiny Llama the tests build (`tests/support/tinymodel.py`, untrained: step time does not depend on
the weights), a made-up chat dataset of ROWS conversations (10% held out), the same LoRA (rank 16, alpha 32,
dropout 0.05, every linear layer), batch size, max length, seed, learning-rate schedule and STEPS optimizer steps.
Step time is the steady state: the time from the end of step WARMUP_STEPS to the end of the last step, divided by
the steps between (so a checkpoint inside counts, spread over the window); tokens/s counts input tokens without
padding over the same window. Rounds alternate which side runs first; the first round warms up (imports, allocator)
and is left out. Goal: ModelBay's step time at most 1.10x the plain script's (the median of the rounds' ratios).

This machine is shared, so wall-clock time swings with whatever else runs: the JSON line gives each round's ratio,
each side's round-to-round variation (`noise_cv`, standard deviation over mean of the step time) and the load
average before and after. Beside wall-clock time it gives CPU time per step over the same window, which load moves
less: the whole process's (`cpu_ratio`: ModelBay's side counts its follower and worker threads too) and the training
thread's alone (`thread_cpu_ratio`, from Linux's schedstat). ModelBay's CPU samples are taken when a progress event
arrives (at most every 0.1 s), the plain script's at every step. Torch runs on THREADS threads
(MODELBAY_BENCH_THREADS, default 1) on both sides, which keeps other processes' load from swinging the figures more.
`page_faults_per_step` counts the training thread's minor page faults.

What the gap was made of when this was written (cProfile, and CPU time and page faults per function): TRL's fused
LM head, which on the CPU projects every position in chunks and again in the backward pass (about 20% of a step;
the CPU path now takes the model's own loss, engine/training/trainer.py); a checkpoint every 50 steps (about 70 ms,
some 4% over this window); the per-step report (steps log, progress published and stored, the cancel flag: about
0.7 ms, 3%); and, in the console's embedded worker thread only, glibc's per-thread malloc arena creating and
deleting a heap around each step's activations: hundreds of minor page faults a step where the main thread has
none, 0-15% depending on the arena's state (`mallopt(M_MMAP_THRESHOLD, 32 MiB)` with `M_TOP_PAD` 64 MiB removed
them; a `modelbay worker` runs each job in a forked work horse's main thread, which does not have them).
Prints a line per round, then a final JSON line.
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("MODELBAY_BENCH_THREADS", "1"))
os.environ["OMP_NUM_THREADS"] = str(THREADS)  # before torch loads: worker threads take the process-wide setting
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = 7  # the first warms up
STEPS = 80
WARMUP_STEPS = 10  # steps left out at the start of each run
ROWS = 300
BATCH_SIZE = 4
MAX_LENGTH = 256
SEED = 0
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
LEARNING_RATE = 2e-4
GOAL_RATIO = 1.10
OWNER = "console:bench"
JOB_TIMEOUT = 900.0  # seconds


def _overrides() -> dict[str, Any]:
    """The job's settings on top of the chat-lora template; the plain script is given the same."""
    return {"parameters": {"max_steps": STEPS, "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "seed": SEED,
                           "learning_rate": LEARNING_RATE, "lora": LORA},
            "hardware": {"device": "cpu"},
            # held-out loss before and after training only (outside the window), no answers to generate
            "evaluation": {"validation": 0.1, "eval_steps": 1_000_000, "prompts": 0}}


def _dataset() -> bytes:
    """ROWS made-up chat conversations (the tiny model's corpus generator, another seed) as chat JSONL."""
    from tests.support.tinymodel import chat_corpus

    conversations = (chat_corpus(seed=1) * 2)[:ROWS]
    return "".join(json.dumps({"messages": c}) + "\n" for c in conversations).encode()


def _thread_stats(native_id: int | None) -> tuple[float, int] | None:
    """CPU time (s, Linux's schedstat) and minor page faults so far of one thread of this process; None where not
    known."""
    try:
        cpu = int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
        return cpu, int(stat[stat.rindex(")") + 2:].split()[7])
    except (OSError, ValueError, IndexError):
        return None


def _window(marks: list[tuple[float, int, int]],
            cpu: list[tuple[int, float, tuple[float, int] | None]]) -> dict[str, Any]:
    """Steady-state figures from (wall time s, step, tokens) marks at the end of each step and (step, process CPU
    time s, the training thread's CPU time s and page faults) samples taken at some of them."""
    by_step = {step: (t, tokens) for t, step, tokens in marks}
    last = max(by_step)
    (t0, n0), (t1, n1) = by_step[WARMUP_STEPS], by_step[last]
    intervals = [by_step[s][0] - by_step[s - 1][0] for s in range(WARMUP_STEPS + 1, last + 1)]
    # not the last step's: what follows it (the final checkpoint, evaluation) would be counted until it is read
    samples = [sample for sample in cpu if WARMUP_STEPS <= sample[0] < last]
    (s0, c0, h0), (s1, c1, h1) = samples[0], samples[-1]
    known = h0 is not None and h1 is not None
    return {"step_s": (t1 - t0) / (last - WARMUP_STEPS), "step_s_median": statistics.median(intervals),
            "cpu_step_s": (c1 - c0) / (s1 - s0),
            "thread_cpu_step_s": (h1[0] - h0[0]) / (s1 - s0) if known else None,
            "faults_per_step": (h1[1] - h0[1]) / (s1 - s0) if known else None,
            "tokens_per_s": (n1 - n0) / (t1 - t0), "tokens": n1 - n0, "steps": last - WARMUP_STEPS}


# -- ModelBay: a job through the console's embedded runtime ----------------------------------------------------------

def _modelbay(runtime: Any, round_no: int) -> tuple[dict[str, float], Path, int]:
    """Start a training job as /train start does, follow its events, and time its steps from its steps log."""
    from modelbay.engine.training.files import RunFiles, read_jsonl
    from modelbay.engine.training.progress import TrainingDetail

    started = runtime.training.start("tiny-chat", "bench-chat", requester=OWNER, owner=OWNER,
                                     name=f"bench-ft-{round_no}", overrides=_overrides(), hardware_wait=60)
    worker = next((t.native_id for t in threading.enumerate() if t.name == "modelbay-worker-gpu"), None)
    events, cpu = 0, []
    for event in runtime.jobs.events(started.job.id, poll=1.0):  # what a live card listens to
        detail = TrainingDetail.of(event.detail)
        events += 1
        if detail.phase == "training" and detail.step:
            # this process (the job's thread and all the others), and the job's thread alone
            cpu.append((detail.step, time.process_time(), _thread_stats(worker)))
    done = runtime.jobs.wait(started.job.id, JOB_TIMEOUT)
    if done.status != "finished":
        raise RuntimeError(f"the training job {done.id} ended {done.status}: {done.error}")
    files = RunFiles.of(runtime.settings.home, done.id)
    marks = [(row["time"], row["step"], row["tokens"]) for row in read_jsonl(files.steps) if "loss" in row]
    return _window(marks, cpu), files.train_rows, events


# -- the plain script --------------------------------------------------------------------------------------------

def _plain(folder: Path, rows_file: Path, out: Path) -> dict[str, float]:
    """transformers' Trainer on peft's LoRA, written as a person would, on the rows the job trained on."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, PrinterCallback, Trainer,
                              TrainerCallback, TrainingArguments)

    from modelbay.engine.training.files import read_jsonl

    marks: list[tuple[float, int, int]] = []
    cpu: list[tuple[int, float, tuple[float, int] | None]] = []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            marks.append((time.time(), state.global_step, int(state.num_input_tokens_seen)))
            cpu.append((state.global_step, time.process_time(), _thread_stats(threading.get_native_id())))

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=LORA["target_modules"], bias="none",
                                             task_type="CAUSAL_LM"))
    rows = [{"input_ids": r["input_ids"],
             "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"], strict=True)]}
            for r in read_jsonl(rows_file)]
    args = TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
        lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        seed=SEED, data_seed=SEED, use_cpu=True, save_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True), callbacks=[Marks()])
    trainer.remove_callback(PrinterCallback)  # the summary it prints at the end
    trainer.train()
    model.save_pretrained(str(out / "adapter"))
    return _window(marks, cpu)


# -- the run -----------------------------------------------------------------------------------------------------

def main() -> dict[str, Any]:
    """Run ROUNDS rounds of both sides, alternating their order, and return the figures."""
    from datasets import disable_progress_bars
    from transformers.utils import logging as hf_logging

    from modelbay.config import load_settings
    from modelbay.engine.training.templates import resolve
    from modelbay.runtime import Runtime
    from tests.support.chat import installed
    from tests.support.tinymodel import TinyModelSpec, build_tiny_model

    # the embedded scheduler's "Acquired scheduler lock" lines (RQ sets that logger's level itself when it starts)
    logging.getLogger("rq.scheduler").addFilter(lambda record: record.levelno >= logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="modelbay-bench-train-") as tmp:
        folder = build_tiny_model(Path(tmp) / "tiny", TinyModelSpec())
        settings = load_settings(home=Path(tmp) / "home", environment="test", redis_url=None, database_url=None)
        runtime = Runtime(settings)
        try:
            runtime.prepare()
            runtime.start_embedded_workers()
            installed(runtime.registry, folder)
            runtime.datasets.add(OWNER, "bench-chat.jsonl", [_dataset()], source="console")
            for round_no in range(ROUNDS):
                figures: dict[str, Any] = {}
                order = ("modelbay", "plain") if round_no % 2 == 0 else ("plain", "modelbay")
                rows_file = None
                if order[0] == "plain":
                    rows_file = rounds[-1]["rows_file"]
                for side in order:
                    if side == "modelbay":
                        figures["modelbay"], rows_file, figures["events"] = _modelbay(runtime, round_no)
                    else:
                        figures["plain"] = _plain(folder, rows_file, Path(tmp) / f"plain-{round_no}")
                mb, pl = figures["modelbay"], figures["plain"]
                figures.update(order=order, rows_file=rows_file, ratio=mb["step_s"] / pl["step_s"],
                               cpu_ratio=mb["cpu_step_s"] / pl["cpu_step_s"],
                               thread_cpu_ratio=mb["thread_cpu_step_s"] / pl["thread_cpu_step_s"]
                               if mb["thread_cpu_step_s"] and pl["thread_cpu_step_s"] else None)
                rounds.append(figures)
                print(f"round {round_no + 1}{' (warm-up)' if round_no == 0 else ''}, {order[0]} first: "
                      f"ModelBay {mb['step_s'] * 1000:.1f} ms/step ({mb['cpu_step_s'] * 1000:.1f} ms CPU), "
                      f"{mb['tokens_per_s']:.0f} tok/s; plain {pl['step_s'] * 1000:.1f} ms/step "
                      f"({pl['cpu_step_s'] * 1000:.1f} ms CPU), {pl['tokens_per_s']:.0f} tok/s; ratio "
                      f"{figures['ratio']:.3f} (CPU {figures['cpu_ratio']:.3f}, training thread's CPU "
                      f"{figures['thread_cpu_ratio'] or float('nan'):.3f}); {figures['events']} progress events",
                      flush=True)
            train_rows = Path(rounds[-1]["rows_file"]).read_text(encoding="utf-8").count("\n")
        finally:
            runtime.close()
    measured = rounds[1:]
    ratios = [r["ratio"] for r in measured]

    def med(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in measured)

    def variation(side: str) -> float:
        values = [r[side]["step_s"] for r in measured]
        return statistics.pstdev(values) / statistics.mean(values)

    ratio = statistics.median(ratios)
    return {
        "model": "tiny llama (hidden 128, 2 layers, vocab 1024), fp32, CPU", "threads": THREADS,
        "train_rows": train_rows, "batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "steps": STEPS,
        "window_steps": STEPS - WARMUP_STEPS, "checkpoint_every": resolve(None, _overrides()).parameters.save_steps,
        "lora": LORA, "rounds": len(measured),
        "modelbay_step_ms": round(med("modelbay", "step_s") * 1000, 1),
        "plain_step_ms": round(med("plain", "step_s") * 1000, 1),
        "modelbay_step_ms_median_step": round(med("modelbay", "step_s_median") * 1000, 1),
        "plain_step_ms_median_step": round(med("plain", "step_s_median") * 1000, 1),
        "modelbay_tokens_per_s": round(med("modelbay", "tokens_per_s")),
        "plain_tokens_per_s": round(med("plain", "tokens_per_s")),
        "window_tokens": {"modelbay": measured[-1]["modelbay"]["tokens"], "plain": measured[-1]["plain"]["tokens"]},
        "progress_events_per_job": statistics.median(r["events"] for r in measured),
        "modelbay_cpu_ms_per_step": round(med("modelbay", "cpu_step_s") * 1000, 1),
        "plain_cpu_ms_per_step": round(med("plain", "cpu_step_s") * 1000, 1),
        "ratio": round(ratio, 3), "ratio_per_round": [round(r, 3) for r in ratios],
        "cpu_ratio": round(statistics.median(r["cpu_ratio"] for r in measured), 3),
        "cpu_ratio_per_round": [round(r["cpu_ratio"], 3) for r in measured],
        "thread_cpu_ratio": round(statistics.median(r["thread_cpu_ratio"] for r in measured), 3)
        if all(r["thread_cpu_ratio"] for r in measured) else None,
        "page_faults_per_step": {side: round(med(side, "faults_per_step")) for side in ("modelbay", "plain")}
        if all(r[side]["faults_per_step"] is not None for r in measured for side in ("modelbay", "plain")) else None,
        "noise_cv": {"modelbay": round(variation("modelbay"), 3), "plain": round(variation("plain"), 3)},
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count(),
        "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO,
    }


if __name__ == "__main__":
    result = main()
    verdict = "met" if result["goal_met"] else "MISSED"
    print(f"ModelBay {result['modelbay_step_ms']} ms/step against the plain script's {result['plain_step_ms']} ms: "
          f"{result['ratio']}x (goal {GOAL_RATIO}x): {verdict}")
    print(json.dumps(result))
