"""Fine-tuning jobs end to end: real TRL/peft training of the tiny chat model on real RQ workers, on the made-up task
of tests/support/training.py; cancel and resume; a work horse killed mid-training; two processes through torchrun;
pre-flight refusals."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from modelbay.config import Settings
from modelbay.engine.db.database import Database
from modelbay.engine.errors import (
    CheckpointMissing,
    CudaRequired,
    DatasetInvalid,
    ModelNameTaken,
    NeedsInstall,
    NotResumable,
    ResumeNameTaken,
    TemplateNotFound,
    TrainingConfigInvalid,
    TrainingMemory,
)
from modelbay.engine.hardware import CACHE_KEY, Gpu, Hardware
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.records import JobRecord
from modelbay.engine.training.files import RunFiles, read_jsonl
from modelbay.engine.training.memory import ModelShape, estimate
from modelbay.engine.training.progress import TrainingDetail
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, gone, wait_for
from tests.support.chat import installed
from tests.support.training import dataset_bytes, exact_matches, held_out_rows, training_rows

OWNER = "console:ann"
# The made-up task learns in a few dozen steps at a high rate; one LoRA dropout-free for determinism.
TASK = {"parameters": {"batch_size": 8, "learning_rate": 2e-3, "lora": {"dropout": 0.0}, "max_length": 256},
        "evaluation": {"eval_steps": 20, "prompts": 8, "max_new_tokens": 12}}
JOB_TIMEOUT = 240  # seconds: a work horse imports torch, transformers and TRL, then trains (a loaded machine)


def _merge(*parts: dict) -> dict:
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
                else value
    return merged


@pytest.fixture
def runtime(settings: Settings, database: Database, redis: Redis, tiny_chat_model: Path) -> Iterator[Runtime]:
    """A runtime on the test's database and Redis, the tiny chat model installed, the task's two datasets added."""
    settings.database_url, settings.redis_url = database.url, REDIS_URL
    runtime = Runtime(settings)
    installed(runtime.registry, tiny_chat_model)
    runtime.datasets.add(OWNER, "colors.jsonl", [dataset_bytes(training_rows())], source="console")
    runtime.datasets.add(OWNER, "colors-held-out.jsonl", [dataset_bytes(held_out_rows())], source="console")
    yield runtime
    runtime.close()


def _worker(start_worker, runtime: Runtime):  # noqa: ANN001, ANN202
    """A real gpu-queue worker sharing the runtime's home (datasets, runs, the model store)."""
    return start_worker(queues="gpu", MODELBAY_HOME=str(runtime.settings.home), OMP_NUM_THREADS="1")


def _start(runtime: Runtime, name: str, *more: dict) -> JobRecord:
    overrides = _merge(TASK, {"evaluation": {"validation_dataset": "colors-held-out"}}, *more)
    started = runtime.training.start("tiny-chat", "colors", requester=OWNER, owner=OWNER, name=name,
                                     overrides=overrides, hardware_wait=60)
    assert started.created and started.job.queue == "gpu" and started.job.kind == "train"
    return started.job


def _files(runtime: Runtime, job: JobRecord) -> RunFiles:
    return RunFiles.of(runtime.settings.home, job.params.get("run") or job.id)


def _logged_steps(files: RunFiles) -> list[int]:
    return [row["step"] for row in read_jsonl(files.steps) if "loss" in row]


def _collect(runtime: Runtime, job_id: str) -> tuple[list[ProgressEvent], threading.Thread]:
    events: list[ProgressEvent] = []
    thread = threading.Thread(target=lambda: events.extend(runtime.jobs.events(job_id, poll=0.5)), daemon=True)
    thread.start()
    return events, thread


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_job_learns_the_task_in_one_process_and_in_two_alike(runtime: Runtime, start_worker) -> None:
    _worker(start_worker, runtime)
    one = _start(runtime, "tiny-colors", {"parameters": {"max_steps": 60}})
    events, watcher = _collect(runtime, one.id)
    done = runtime.jobs.wait(one.id, JOB_TIMEOUT)
    watcher.join(30)
    assert done.status == "finished", done.error
    result = done.result

    # Held-out loss (a phrasing the training never shows) falls by far more than 30%.
    before, after = result["eval_loss_before"], result["eval_loss_after"]
    assert after <= 0.7 * before, (before, after)
    assert result["perplexity_after"] < result["perplexity_before"]
    # The tuned model answers the held-out prompts better than the base by a clear, measured margin.
    tuned, base = exact_matches(result["answers"], "tuned"), exact_matches(result["answers"], "base")
    assert len(result["answers"]) == 8 and tuned >= base + 3, result["answers"]

    # Progress came every step, typed, with what a live card shows.
    training = [TrainingDetail.of(e.detail) for e in events if e.detail.get("phase") == "training"]
    steps = [d.step for d in training if d.step]
    assert len(set(steps)) >= 10 and steps == sorted(steps) and max(steps) == 60
    last = training[-1]
    assert last.total_steps == 60 and last.loss is not None and last.learning_rate is not None
    assert last.tokens and last.tokens_per_s and last.peak_memory_bytes and last.eta is not None
    assert last.eval_loss_before == pytest.approx(before) and len(last.recent_losses) >= 10
    assert {"loading", "evaluating", "training", "testing", "saving"} <= {e.detail.get("phase") for e in events}

    # The run's files: every step logged once, held-out losses, the chart.
    files = _files(runtime, done)
    assert _logged_steps(files) == list(range(1, 61))
    assert [row["step"] for row in read_jsonl(files.steps) if "eval_loss" in row] == [20, 40, 60]
    assert files.chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["chart"] == str(files.chart)

    # The result is a new model whose version adapts the base and says how it was made.
    model = runtime.registry.get("tiny-colors")
    version = model.versions[0]
    base_version = runtime.registry.get("tiny-chat").versions[0]
    assert version.id == result["version_id"] and version.parent_version_id == base_version.id
    assert version.lineage == "finetune" and version.install_state == "installed"
    lineage = version.lineage_params
    assert lineage["dataset"]["name"] == "colors" and lineage["config"]["parameters"]["max_steps"] == 60
    assert lineage["metrics"]["eval_loss_after"] == pytest.approx(after)
    adapter = Path(version.local_path) / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer_config.json").is_file()
    assert not files.checkpoints.exists()  # a finished run resumes no more

    # The same run in two processes (torchrun, gloo), half the batch each, learns alike.
    two = _start(runtime, "tiny-colors-ddp", {"parameters": {"max_steps": 60, "batch_size": 4},
                                              "hardware": {"processes": 2}})
    ddp = runtime.jobs.wait(two.id, JOB_TIMEOUT)
    assert ddp.status == "finished", ddp.error
    assert ddp.result["processes"] == 2 and ddp.result["step"] == 60
    assert ddp.result["eval_loss_before"] == pytest.approx(before, rel=1e-4)
    assert ddp.result["eval_loss_after"] <= 0.7 * before
    assert ddp.result["eval_loss_after"] == pytest.approx(after, rel=0.5), (after, ddp.result["eval_loss_after"])
    assert exact_matches(ddp.result["answers"], "tuned") >= base + 2
    assert _logged_steps(_files(runtime, ddp)) == list(range(1, 61))  # rank 0 alone logs


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_canceled_job_stops_with_a_checkpoint_and_resumes_where_it_stopped(runtime: Runtime, start_worker) -> None:
    _worker(start_worker, runtime)
    first = _start(runtime, "tiny-resumed", {"parameters": {"max_steps": 40, "save_steps": 1000, "merge": True},
                                             "evaluation": {"eval_steps": 1000, "prompts": 1}})
    files = _files(runtime, first)
    wait_for(lambda: len(_logged_steps(files)) >= 5, timeout=JOB_TIMEOUT, interval=0.1)
    runtime.jobs.cancel(first.id)
    canceled = runtime.jobs.wait(first.id, 60)
    assert canceled.status == "canceled"
    checkpoint = files.last_checkpoint()
    assert checkpoint is not None  # the cancel saved one (the config saves every 1000 steps)
    stopped_at = int(checkpoint.name.rpartition("-")[2])
    assert 5 <= stopped_at < 40 and max(_logged_steps(files)) == stopped_at

    resumed = runtime.training.resume(first.id, requester=OWNER)
    assert resumed.id != first.id and resumed.params["run"] == first.id and resumed.params["resume"] is True
    done = runtime.jobs.wait(resumed.id, JOB_TIMEOUT)
    assert done.status == "finished", done.error
    assert done.result["resumed_from"] == stopped_at and done.result["step"] == 40
    assert _logged_steps(files) == list(range(1, 41))  # the count went on: no step twice, none missing
    assert runtime.training.status(resumed.id).run == first.id
    version = runtime.registry.get("tiny-resumed").versions[0]
    assert version.install_state == "installed" and version.lineage_params["merged"] is True
    merged = Path(version.local_path) / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer_config.json").is_file()

    with pytest.raises(NotResumable, match="finished"):
        runtime.training.resume(resumed.id, requester=OWNER)
    with pytest.raises(ResumeNameTaken, match="was resumed already and its run finished as `tiny-resumed`"):
        runtime.training.resume(first.id, requester=OWNER)  # still canceled, but its run is done


@pytest.mark.slow
def test_a_work_horse_killed_mid_training_is_retried_and_goes_on_from_its_checkpoint(runtime: Runtime,
                                                                                     start_worker) -> None:
    worker = _worker(start_worker, runtime)
    job = _start(runtime, "tiny-killed", {"parameters": {"max_steps": 40, "save_steps": 4},
                                          "evaluation": {"eval_steps": 1000, "prompts": 1}})
    files = _files(runtime, job)

    def mid_training() -> bool:
        checkpoint = files.last_checkpoint()
        return checkpoint is not None and checkpoint.name != "checkpoint-4" and len(_logged_steps(files)) < 30

    wait_for(mid_training, timeout=JOB_TIMEOUT, interval=0.05)
    # The work horse is the worker's one descendant that has loaded torch (the worker parent never does).
    horses = [p for p in worker.descendants() if any("libtorch" in m.path for m in p.memory_maps())]
    assert len(horses) == 1
    saved = int(files.last_checkpoint().name.rpartition("-")[2])
    horses[0].send_signal(signal.SIGKILL)
    wait_for(lambda: gone(horses[0]), timeout=10)

    done = runtime.jobs.wait(job.id, JOB_TIMEOUT)
    assert done.status == "finished", done.error
    assert done.attempts == 2  # the run after the kill counts as the second attempt
    assert done.result["resumed_from"] is not None and done.result["resumed_from"] >= saved
    assert done.result["step"] == 40
    assert _logged_steps(files) == list(range(1, 41))  # the retry went on from the checkpoint, counting on
    assert runtime.registry.get("tiny-killed").versions[0].install_state == "installed"


# -- refusals -------------------------------------------------------------------------------------------------------

@pytest.fixture
def embedded(settings: Settings, tiny_chat_model: Path) -> Iterator[Runtime]:
    """An embedded runtime (SQLite, in-process Redis) with the tiny chat model installed and the task's datasets."""
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    runtime.datasets.add(OWNER, "colors.jsonl", [dataset_bytes(training_rows())], source="console")
    yield runtime
    runtime.close()


def _hardware(runtime: Runtime, gpus: tuple[Gpu, ...]) -> None:
    """Say what the gpu workers' probe found (its cached answer), as a worker on that machine would."""
    hardware = Hardware(host="gpu-box", ram_total=64 << 30, ram_available=48 << 30, disk_free=1 << 40,
                        disk_path="/models", gpus=gpus, probed_at=0.0, gpu_known=True)
    runtime.redis.set(CACHE_KEY, hardware.to_json())


def test_preflight_refuses_in_one_line_what_cannot_work(embedded: Runtime, tiny_chat_model: Path) -> None:
    training = embedded.training
    _hardware(embedded, ())

    def refused(error: type[Exception], *args: object, **kwargs: object) -> str:
        with pytest.raises(error) as caught:
            training.preflight(*args, **kwargs)
        text = str(caught.value)
        assert "\n" not in text and len(text) < 400
        return text

    embedded.registry.upsert({"name": "not-here", "display_name": "Not here", "category": "chat"}, source="local")
    assert "/models install not-here" in refused(NeedsInstall, "not-here", "colors")
    assert "Templates: chat-lora" in refused(TemplateNotFound, "tiny-chat", "colors", template="nope")
    assert "`parameters.epochs`" in refused(TrainingConfigInvalid, "tiny-chat", "colors",
                                            overrides={"parameters": {"epochs": -1}})
    embedded.datasets.add(OWNER, "three.jsonl", [dataset_bytes(training_rows()[:3])], source="console")
    assert "fewer than the 8" in refused(DatasetInvalid, "tiny-chat", "three", owner=OWNER)
    long_rows = training_rows()[:12]
    long_rows[4]["messages"][1]["content"] = "It is blue. " * 200
    embedded.datasets.add(OWNER, "long.jsonl", [dataset_bytes(long_rows)], source="console")
    text = refused(DatasetInvalid, "tiny-chat", "long", owner=OWNER,
                   overrides={"parameters": {"max_length": 128, "overlong": "fail"}})
    assert "at line 5" in text and "policy is fail" in text
    # Too few rows because the model's policy left most out: the refusal says which rows and why.
    mostly_long = training_rows()[:12]
    for row in mostly_long[:6]:
        row["messages"][1]["content"] = "It is blue. " * 200
    embedded.datasets.add(OWNER, "mostly-long.jsonl", [dataset_bytes(mostly_long)], source="console")
    text = refused(DatasetInvalid, "tiny-chat", "mostly-long", owner=OWNER,
                   overrides={"parameters": {"max_length": 128}})
    assert "fewer than the 8" in text and "most left out: longer than max_length: 6 rows, first line 1: " in text
    embedded.registry.upsert({"name": "tiny-colors", "display_name": "Taken", "category": "chat"}, source="local")
    assert "tiny-colors" in refused(ModelNameTaken, "tiny-chat", "colors", name="tiny-colors")
    # QLoRA where the gpu workers have no GPU: refused before anything is queued.
    assert "QLoRA" in refused(CudaRequired, "tiny-chat", "colors", template="qlora-4bit")
    assert embedded.jobs.list() == []  # nothing reached the queue (no probe either: the cache answered)


def test_preflight_refuses_a_run_that_does_not_fit_and_names_the_batch_that_does(embedded: Runtime,
                                                                                  tiny_chat_model: Path) -> None:
    _hardware(embedded, (Gpu(0, "Big GPU", 80 << 30, 80 << 30),))
    longest = embedded.training.preflight("tiny-chat", "colors").report.histogram.maximum
    one = estimate(ModelShape.of_folder(tiny_chat_model), precision="bf16", batch=1, seq_len=longest, r=16)
    # A GPU with room for the weights and five rows of the dataset's longest length, but not sixty-four.
    room = one.fixed + 5 * one.per_row + one.per_row // 2
    _hardware(embedded, (Gpu(0, "Small GPU", room, room),))
    overrides = {"parameters": {"batch_size": 64}}
    with pytest.raises(TrainingMemory) as refused:
        embedded.training.preflight("tiny-chat", "colors", overrides=overrides)
    assert refused.value.fits == 5 and "`batch:5`" in str(refused.value) and "\n" not in str(refused.value)
    ok = embedded.training.preflight("tiny-chat", "colors",
                                     overrides={"parameters": {**overrides["parameters"], "batch_size": 5}})
    assert ok.where == "gpu" and ok.precision == "bf16" and ok.estimate.needed <= room and ok.processes == 1
    assert ok.report.train_rows + ok.report.validation_rows == 32 and ok.total_steps > 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_resume_refuses_an_active_job_and_a_run_with_no_checkpoint(runtime: Runtime, start_worker) -> None:
    _hardware(runtime, ())  # no worker yet: the probe's answer is there already
    queued = _start(runtime, "tiny-never")
    with pytest.raises(NotResumable, match="queued"):
        runtime.training.resume(queued.id, requester=OWNER)
    assert runtime.jobs.cancel(queued.id).status == "canceled"  # canceled before it ever ran: no checkpoint
    again = runtime.training.resume(queued.id, requester=OWNER)
    _worker(start_worker, runtime)
    failed = runtime.jobs.wait(again.id, 120)
    assert failed.status == "failed" and failed.attempts == 1  # not retried: it would fail the same way
    assert failed.error == str(CheckpointMissing(queued.id, str(_files(runtime, queued).checkpoints)))
    assert [job.id for job in runtime.training.list()] == [again.id, queued.id]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_resume_refuses_a_run_whose_model_name_was_taken_since(runtime: Runtime, start_worker) -> None:
    # A resume used to train the whole rest of the run and only then fail to register its model.
    _hardware(runtime, ())
    first = _start(runtime, "tiny-later")
    assert runtime.jobs.cancel(first.id).status == "canceled"
    again = runtime.training.resume(first.id, requester=OWNER)
    # Taken between the resume and its run: the job refuses before it prepares or trains anything.
    runtime.registry.upsert({"name": "tiny-later", "display_name": "Taken", "category": "chat"}, source="local")
    _worker(start_worker, runtime)
    failed = runtime.jobs.wait(again.id, 120)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error == str(ResumeNameTaken(first.id, "tiny-later", finished=False))
    assert not _files(runtime, first).train_rows.exists()
    # Taken before the resume: refused at once, in one line.
    with pytest.raises(ResumeNameTaken, match="would make `tiny-later`, a name another model has taken"):
        runtime.training.resume(first.id, requester=OWNER)
