"""Optimization jobs end to end: the tiny chat model quantized, pruned and exported by real RQ workers, each variant
measured against its parent on held-out conversations, registered with its report, and answered in a chat; cancel
leaves nothing behind; pre-flight refuses impossible requests in one line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from modelbay.config import Settings
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.errors import (
    ModelNameTaken,
    ModelNotFound,
    NeedsInstall,
    OptimizationConfigInvalid,
    TrainingNameBusy,
)
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.optimization.config import OptimizationConfig, parse_config
from modelbay.engine.optimization.run import job_folder
from modelbay.engine.records import JobRecord
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, wait_for
from tests.support.chat import installed
from tests.support.tinymodel import chat_corpus
from tests.support.training import dataset_bytes, training_rows

OWNER = "console:ann"
JOB_TIMEOUT = 300  # seconds: a work horse imports torch, applies the step, then measures two models in child processes


@pytest.fixture
def runtime(settings: Settings, database: Database, redis: Redis, tiny_chat_model: Path) -> Iterator[Runtime]:
    """A runtime on the test's database and Redis, the tiny chat model installed, held-out conversations added."""
    settings.database_url, settings.redis_url = database.url, REDIS_URL
    runtime = Runtime(settings)
    installed(runtime.registry, tiny_chat_model)
    # Conversations the tiny model never saw (another seed of its corpus): perplexity on them means something.
    rows = "".join(json.dumps({"messages": c}) + "\n" for c in chat_corpus(seed=7)[:120])
    runtime.datasets.add(OWNER, "held-out.jsonl", [rows.encode()], source="console")
    yield runtime
    runtime.close()


def _worker(start_worker, runtime: Runtime):
    return start_worker(queues="cpu,gpu", MODELBAY_HOME=str(runtime.settings.home), OMP_NUM_THREADS="1")


def _start(runtime: Runtime, body: dict, name: str, *, dataset: str | None = "held-out") -> JobRecord:
    started = runtime.optimization.start("tiny-chat", parse_config(body), requester=OWNER, owner=OWNER, name=name,
                                         dataset=dataset)
    assert started.created and started.job.kind in ("optimize", "optimize.cpu")
    return started.job


def _finished(runtime: Runtime, job: JobRecord) -> dict:
    done = runtime.jobs.wait(job.id, JOB_TIMEOUT)
    assert done.status == "finished", done.error
    return done.result


def _answer(runtime: Runtime, model: str, question: str) -> str:
    from modelbay.engine.chat.records import Answered

    session = runtime.chats.open(Place("slack", f"C-{model}", model), "slack:U1", model)
    events = list(runtime.chats.answer(session, "slack:U1", question))
    answer = [e for e in events if isinstance(e, Answered)][-1].answer
    assert answer.status == "ok", answer
    return answer.text


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_8_bit_and_4_bit_variants_are_measured_against_their_parent_and_answer(runtime: Runtime,
                                                                               start_worker) -> None:
    _worker(start_worker, runtime)
    eight = _finished(runtime, _start(runtime, {"type": "quantization", "quantization": {"bits": 8}}, "tiny-int8"))
    four = _finished(runtime, _start(runtime, {"type": "quantization", "quantization": {"bits": 4}}, "tiny-nf4"))

    for result in (eight, four):
        report = result["report"]
        parent, variant, versus = report["parent"], report["variant"], report["versus"]
        # The same held-out text, the same scored tokens, on this machine, for parent and variant.
        assert parent["tokens"] == variant["tokens"] > 1000
        assert report["heldout"]["source"] == "dataset held-out"
        assert variant["size_bytes"] < parent["size_bytes"]
        assert parent["perplexity"] > 1 and parent["perplexity_se"] > 0
        assert 0 < versus["top1_agreement"] <= 1 and versus["kl_mean"] >= 0
        assert result["verdict"] in ("within budget", "over budget")
        version = runtime.registry.get(result["name"]).versions[0]
        assert version.parent_version_id == runtime.registry.get("tiny-chat").versions[0].id
        assert version.lineage == "optimize" and version.lineage_params["report"]["verdict"] == result["verdict"]
        assert Path(result["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 8-bit weights change the next-token distributions less than 4-bit ones, and keep a smaller share of bits less.
    assert eight["report"]["versus"]["kl_mean"] < four["report"]["versus"]["kl_mean"]
    assert four["report"]["variant"]["size_bytes"] < eight["report"]["variant"]["size_bytes"]
    # Try it: each variant answers in a chat (bitsandbytes through transformers, in this process).
    assert _answer(runtime, "tiny-int8", "What color is the sky?").strip()
    assert _answer(runtime, "tiny-nf4", "What color is the sky?").strip()
    # Compare lays them side by side: the parent once, then both variants, with a chart and its text.
    table = runtime.optimization.compare(["tiny-int8", "tiny-nf4"])
    assert [r.name for r in table.rows] == ["tiny-chat", "tiny-int8", "tiny-nf4"]
    assert table.chart[:4] == b"\x89PNG" and "tiny-nf4" in table.text


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_onnx_int8_export_answers_with_onnxruntime_and_a_tight_budget_marks_a_pruned_variant(
        runtime: Runtime, start_worker) -> None:
    _worker(start_worker, runtime)
    exported = _finished(runtime, _start(runtime, {"type": "export", "export": {"int8": True}}, "tiny-onnx-int8"))
    assert exported["report"]["format"] == "onnx"
    version = runtime.registry.get("tiny-onnx-int8").versions[0]
    assert version.format == "onnx" and (Path(version.local_path) / "onnx" / "model_quantized.onnx").is_file()
    assert exported["report"]["versus"]["kl_mean"] < 0.5  # int8 weights stay close to fp32's distributions
    assert _answer(runtime, "tiny-onnx-int8", "What color is the sky?").strip()

    # A recipe: half the MLP channels removed (Wanda-sp), then ONNX int8. A budget of 0.01% perplexity, which no such
    # pruning meets: kept, marked over budget, with its figures; a smaller model than its parent.
    slim = _finished(runtime, _start(runtime, {"type": "recipe", "recipe": "slim-cpu", "preserveAccuracy": 0.01},
                                     "tiny-slim"))
    assert slim["verdict"] == "over budget", slim["reason"]
    assert "%" in slim["reason"]
    channels = slim["report"]["facts"][0]
    assert channels["step"] == "channels" and channels["parameters"][1] < channels["parameters"][0]
    model = runtime.registry.get("tiny-slim")
    assert model.tags[:2] == ["optimized", "over-budget"]  # shown as not a drop-in
    assert model.parameter_count == channels["parameters"][1] and model.versions[0].format == "onnx"
    assert "over-budget" not in runtime.registry.get("tiny-onnx-int8").tags


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_canceled_job_leaves_no_files_and_no_model(runtime: Runtime, start_worker) -> None:
    _worker(start_worker, runtime)
    job = _start(runtime, {"type": "pruning", "pruning": {"method": "wanda", "sparsity": 0.5}}, "tiny-canceled")
    events: list[ProgressEvent] = []
    watcher = threading.Thread(target=lambda: events.extend(runtime.jobs.events(job.id, poll=0.2)), daemon=True)
    watcher.start()
    wait_for(lambda: any((e.detail or {}).get("phase") in ("applying", "measuring-parent") for e in events), 120)
    runtime.jobs.cancel(job.id)
    done = runtime.jobs.wait(job.id, JOB_TIMEOUT)
    assert done.status == "canceled"
    assert not job_folder(runtime.settings.home, job.id).exists()
    with pytest.raises(ModelNotFound):
        runtime.registry.get("tiny-canceled")

    # Two conversations are too few held-out tokens to judge a variant by: refused in one line, before any step.
    rows = "".join(json.dumps({"messages": c}) + "\n" for c in chat_corpus(seed=9)[:2])
    runtime.datasets.add(OWNER, "two.jsonl", [rows.encode()], source="console")
    few = runtime.jobs.wait(_start(runtime, {"quantization": {"bits": 16}}, "tiny-few", dataset="two").id,
                            JOB_TIMEOUT)
    assert few.status == "failed" and "held-out tokens to measure on, fewer than 512" in few.error
    assert "\n" not in few.error and not job_folder(runtime.settings.home, few.id).exists()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_preflight_refuses_impossible_requests_in_one_line(runtime: Runtime) -> None:
    refusals = [
        {"type": "quantization", "quantization": {"bits": 4, "dataType": "int8"}},
        {"type": "pruning", "pruning": {"sparsity": 1.5}},
        {"type": "quantization", "quantization": {"method": "static", "bits": 8}},
        {"type": "quantization", "quantization": {"method": "qat", "bits": 8}},
        {"type": "distillation"},
        {"type": "quantization", "targetReduction": 95},
        {"type": "quantization", "quantization": {"bits": 8}, "colour": "red"},
        {"type": "export", "quantization": {"bits": 4}},  # a section the type would ignore
        {"type": "quantization", "quantization": {"bits": 8}, "preserveAccuracy": float("nan")},
        {"type": "quantization", "quantization": {"bits": 8}, "preserveAccuracy": -5},
        {"type": "pruning", "pruning": {"sparsity": 0.5}, "targetReduction": 50},
    ]
    for body in refusals:
        with pytest.raises(OptimizationConfigInvalid) as caught:
            runtime.optimization.preflight("tiny-chat", parse_config(body))
        assert "\n" not in str(caught.value) and "`" in str(caught.value), body
    with pytest.raises(NeedsInstall):
        runtime.registry.add_version(runtime.registry.upsert({"name": "absent", "repo_id": "local/absent",
                                                              "category": "chat"}, source="local").id, "main")
        runtime.optimization.preflight("absent", OptimizationConfig(quantization={"bits": 8}))
    plan = runtime.optimization.preflight("tiny-chat", OptimizationConfig(targetReduction=75))
    assert [s.method for s in plan.steps] == ["bnb"] and plan.steps[0].params["bits"] == 8
    assert plan.name == "tiny-chat-int8" and plan.queue == "gpu"
    installed(runtime.registry, Path(runtime.registry.get("tiny-chat").versions[0].local_path), "tiny-chat-int8")
    assert runtime.optimization.preflight("tiny-chat", OptimizationConfig(targetReduction=75)).name == \
        "tiny-chat-int8-2"
    with pytest.raises(ModelNameTaken):
        runtime.optimization.preflight("tiny-chat", OptimizationConfig(targetReduction=75), name="tiny-chat-int8")
    # A size target for pruning removes whole channels: unstructured zeros would leave the size as it was.
    plan = runtime.optimization.preflight("tiny-chat", parse_config({"type": "pruning", "targetReduction": 30}))
    assert [s.method for s in plan.steps] == ["channels"] and plan.steps[0].params["sparsity"] == 0.3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_training_run_and_an_optimization_cannot_make_the_same_name(runtime: Runtime) -> None:
    runtime.datasets.add(OWNER, "pairs.jsonl", [dataset_bytes(training_rows())], source="console")
    trained = runtime.training.start("tiny-chat", "pairs", requester=OWNER, owner=OWNER, name="tiny-same",
                                     hardware_wait=0)
    with pytest.raises(TrainingNameBusy) as caught:
        _start(runtime, {"quantization": {"bits": 16}}, "tiny-same")
    assert trained.job.id in str(caught.value) and "/train status" in str(caught.value)
    runtime.jobs.cancel(trained.job.id)
    optimizing = _start(runtime, {"quantization": {"bits": 16}}, "tiny-other")
    with pytest.raises(TrainingNameBusy) as caught:
        runtime.training.start("tiny-chat", "pairs", requester=OWNER, owner=OWNER, name="tiny-other",
                               hardware_wait=0)
    assert optimizing.id in str(caught.value) and "/optimize status" in str(caught.value)
