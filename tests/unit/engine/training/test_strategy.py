"""DDP or FSDP, and one machine or several: `memory.strategy_for`/`sharded`, the `hardware.strategy` setting, the
rendezvous settings and the torchrun command they build, the FSDP arguments the trainer passes to transformers.

FSDP itself is not run here: accelerate 1.15 enables it on GPUs only (on the CPU it trains the ranks with DDP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbay.config.settings import Settings
from modelbay.engine.errors import TrainingConfigInvalid, TrainingMemory
from modelbay.engine.training.distributed import torchrun_command
from modelbay.engine.training.files import RunFiles
from modelbay.engine.training.memory import ModelShape, devices_to_shard, estimate, sharded, strategy_for
from modelbay.engine.training.templates import resolve
from modelbay.engine.training.trainer import fsdp_arguments

# Llama-3.1-8B's published shape (config.json of meta-llama/Llama-3.1-8B): 8.03 B parameters.
LLAMA_8B = ModelShape(parameters=8_030_261_248, hidden=4096, layers=32, intermediate=14336, vocab=128256, heads=32,
                      kv_heads=8)
GiB = 2**30


def _bf16(batch: int = 1):
    return estimate(LLAMA_8B, precision="bf16", batch=batch, seq_len=512, r=16)


def test_a_shard_holds_a_share_of_the_weights_and_adapters_and_all_of_its_own_activations() -> None:
    whole = _bf16(batch=2)
    half = sharded(whole, 2)
    assert half.weights == -(-whole.weights // 2) and half.trainable == -(-whole.trainable // 2)
    assert half.per_row == whole.per_row and half.overhead == whole.overhead and half.batch == whole.batch
    assert sharded(whole, 1) == whole
    assert whole.needed - half.needed == whole.weights + whole.trainable - half.weights - half.trainable


def test_auto_shards_only_when_one_device_cannot_hold_the_run_and_the_devices_together_can() -> None:
    found = _bf16()
    assert 16 * GiB < found.needed < 24 * GiB  # 16 GB of bf16 weights plus the rest
    assert strategy_for("auto", 1, found, 16 * GiB) == "single"
    assert strategy_for("auto", 2, found, 80 * GiB) == "ddp"  # one GPU holds it: every GPU a whole copy
    assert strategy_for("auto", 2, found, 16 * GiB) == "fsdp"  # half the weights each fits 16 GiB
    assert strategy_for("auto", 2, found, 6 * GiB) == "ddp"  # not even sharded: pre-flight refuses it
    assert strategy_for("auto", 2, found, None) == "ddp"  # room unknown (the CPU, or no reading)
    assert strategy_for("auto", 2, found, 16 * GiB, quantized=True) == "ddp"
    assert strategy_for("ddp", 2, found, 16 * GiB) == "ddp" and strategy_for("fsdp", 2, found, 80 * GiB) == "fsdp"
    assert devices_to_shard(found, 16 * GiB, 8) == 2
    assert devices_to_shard(found, 10 * GiB, 8) == 3
    assert devices_to_shard(found, 16 * GiB, 1) == 0 and devices_to_shard(found, 1 * GiB, 8) == 0


def test_the_strategy_setting_is_checked_where_it_cannot_work() -> None:
    assert resolve(None, {}).hardware.strategy == "auto"
    assert resolve(None, {"hardware": {"strategy": "fsdp"}}).needs_cuda
    assert resolve(None, {"hardware": {"strategy": "fsdp"}}).cuda_use.startswith("FSDP")
    assert not resolve(None, {"hardware": {"strategy": "ddp"}}).needs_cuda
    with pytest.raises(TrainingConfigInvalid, match="GPUs only"):
        resolve(None, {"hardware": {"strategy": "fsdp", "device": "cpu"}})
    with pytest.raises(TrainingConfigInvalid, match="4-bit"):
        resolve("qlora-4bit", {"hardware": {"strategy": "fsdp"}})
    with pytest.raises(TrainingConfigInvalid):
        resolve(None, {"hardware": {"strategy": "zero3"}})


def test_a_refusal_names_the_gpus_that_together_hold_the_run() -> None:
    found = _bf16()
    message = str(TrainingMemory("llama-8b", "bf16", 1, 512, found.needed, 16 * GiB, "the largest GPU", 0,
                                 shard=devices_to_shard(found, 16 * GiB, 4)))
    assert "Sharded across 2 GPUs it fits: add `processes:2 strategy:fsdp`." in message
    assert "Even batch 1" not in message
    plain = str(TrainingMemory("llama-8b", "bf16", 1, 512, found.needed, 16 * GiB, "the largest GPU", 0))
    assert "Even batch 1 does not fit" in plain


def test_fsdp_arguments_shard_fully_and_wrap_each_decoder_layer() -> None:
    args = fsdp_arguments(["LlamaDecoderLayer"])
    assert args["fsdp"] is True
    assert args["fsdp_config"] == {"version": 2, "reshard_after_forward": True,
                                   "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "FULL_STATE_DICT",
                                   "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}
    assert "transformer_layer_cls_to_wrap" not in fsdp_arguments(None)["fsdp_config"]


def test_one_machine_launches_standalone_and_several_meet_at_a_rendezvous_named_after_the_run(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "job-42")
    tail = ["-m", "modelbay.engine.training.distributed", str(files.root)]
    assert torchrun_command(files, 4, python="/py", nodes=1, rdzv_endpoint="node0:29400") == [
        "/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", *tail]
    assert torchrun_command(files, 4, python="/py", nodes=2, rdzv_endpoint="node0:29400") == [
        "/py", "-m", "torch.distributed.run", "--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29400",
        "--rdzv-id=job-42", "--max-restarts=0", "--nproc_per_node=4", *tail]
    ranked = torchrun_command(files, 8, python="/py", nodes=3, rdzv_endpoint="10.0.0.1:29400", node_rank=1)
    assert "--node-rank=1" in ranked and ranked.index("--node-rank=1") < ranked.index("--nproc_per_node=8")
    with pytest.raises(ValueError, match="rendezvous endpoint"):
        torchrun_command(files, 2, nodes=2)


def test_rendezvous_settings_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELBAY_TRAIN_NODES", "2")
    monkeypatch.setenv("MODELBAY_TRAIN_RDZV_ENDPOINT", "node0:29400")
    monkeypatch.setenv("MODELBAY_TRAIN_NODE_RANK", "1")
    settings = Settings()
    assert (settings.train_nodes, settings.train_rdzv_endpoint, settings.train_node_rank) == (2, "node0:29400", 1)
    assert Settings(train_nodes=1, train_rdzv_endpoint=None, train_node_rank=None).train_nodes == 1
    with pytest.raises(ValueError, match="TRAIN_RDZV_ENDPOINT"):
        Settings(train_nodes=2, train_rdzv_endpoint=None, train_node_rank=None)
    with pytest.raises(ValueError, match="TRAIN_NODE_RANK"):
        Settings(train_nodes=2, train_rdzv_endpoint="node0:29400", train_node_rank=2)
    with pytest.raises(ValueError):
        Settings(train_rdzv_endpoint="node0", train_node_rank=None)  # no port


def test_the_run_keeps_its_strategy_for_its_retries_and_resumes(tmp_path: Path) -> None:
    from modelbay.engine.training.run import strategy_of

    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    spec = {"run": "run", "base": {"folder": str(tmp_path / "none")}}
    files.spec.write_text(json.dumps(spec))
    config = resolve(None, {})
    assert strategy_of(files, spec, config, 1, None) == "single"
    assert strategy_of(files, spec, config, 2, None) == "ddp"  # no GPU room known: DDP
    assert json.loads(files.spec.read_text())["strategy"] == "ddp"
    kept = {**spec, "strategy": "fsdp"}
    assert strategy_of(files, kept, config, 2, None) == "fsdp"  # decided once: a resume trains the same way
