"""engine/training/memory.py: the fine-tuning memory estimate and the largest batch that fits, on made-up shapes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from modelbay.engine.hardware import RUNTIME_OVERHEAD
from modelbay.engine.training.memory import ModelShape, estimate, largest_batch, lora_parameters, \
    safetensors_parameters

# Llama-3.2-1B's published shape (config.json of meta-llama/Llama-3.2-1B): 1.24 B parameters.
LLAMA_1B = ModelShape(parameters=1_235_814_400, hidden=2048, layers=16, intermediate=8192, vocab=128256, heads=32,
                      kv_heads=8, tied=True)
GiB = 2**30


def test_lora_on_every_linear_layer_counts_r_times_in_plus_out_per_projection() -> None:
    # Llama-3.2-1B, rank 16, all seven projections: peft reports 11,272,192 trainable parameters.
    assert lora_parameters(LLAMA_1B, 16) == 11_272_192
    assert lora_parameters(LLAMA_1B, 16, ["q_proj", "v_proj"]) == 16 * (4096 + 2048 + 512) * 16


def test_weights_shrink_with_precision_and_4bit_keeps_the_embeddings_in_16_bits() -> None:
    found = {p: estimate(LLAMA_1B, precision=p, batch=1, seq_len=512, r=16) for p in ("fp32", "bf16", "4bit")}
    assert found["fp32"].weights == 2 * found["bf16"].weights
    assert found["4bit"].weights < found["bf16"].weights / 2
    assert found["4bit"].weights > LLAMA_1B.embedding_parameters * 2  # the embeddings alone, in 16 bits
    assert all(f.overhead == RUNTIME_OVERHEAD for f in found.values())


def test_activations_grow_with_batch_and_length_and_checkpointing_cuts_them() -> None:
    small = estimate(LLAMA_1B, precision="bf16", batch=1, seq_len=512, r=16)
    assert estimate(LLAMA_1B, precision="bf16", batch=4, seq_len=512, r=16).needed == small.fixed + 4 * small.per_row
    assert estimate(LLAMA_1B, precision="bf16", batch=1, seq_len=1024, r=16).per_row == 2 * small.per_row
    checkpointed = estimate(LLAMA_1B, precision="bf16", batch=1, seq_len=512, r=16, gradient_checkpointing=True)
    # Only each layer's input (2 bytes a unit) plus one layer's activations are kept; the fp32 logits remain.
    assert small.per_row - checkpointed.per_row == 512 * 2048 * (16 * (34 - 2) - 34)


def test_a_bf16_lora_of_a_1b_model_needs_a_few_gigabytes() -> None:
    # torchtune and TRL report 4-8 GiB peaks for 1B LoRA at batch 4 x 512 tokens in bf16.
    needed = estimate(LLAMA_1B, precision="bf16", batch=4, seq_len=512, r=16).needed
    assert 4 * GiB < needed < 10 * GiB


@pytest.mark.parametrize("room", [8 * GiB, 24 * GiB, 80 * GiB, 141 * GiB])
def test_the_largest_batch_fits_and_one_more_does_not(room: int) -> None:
    found = estimate(LLAMA_1B, precision="bf16", batch=64, seq_len=2048, r=16)
    batch = largest_batch(found, room)
    assert batch >= 1
    assert found.fixed + batch * found.per_row <= room < found.fixed + (batch + 1) * found.per_row


def test_no_batch_fits_when_the_weights_alone_do_not() -> None:
    assert largest_batch(estimate(LLAMA_1B, precision="fp32", batch=1, seq_len=512, r=16), 2 * GiB) == 0


def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()}
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_a_folder_s_shape_comes_from_its_config_and_its_safetensors_headers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100,
        "num_attention_heads": 4, "num_key_value_heads": 2}))
    _safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": [64, 100], "b": [64]})
    _safetensors(tmp_path / "model-00002-of-00002.safetensors", {"c": [3, 4, 5]})
    shape = ModelShape.of_folder(tmp_path)
    assert shape.parameters == 64 * 100 + 64 + 60 == safetensors_parameters(tmp_path)
    assert (shape.hidden, shape.layers, shape.intermediate, shape.vocab, shape.kv_heads) == (64, 2, 128, 100, 2)


def test_without_weights_the_count_comes_from_the_dimensions(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 2048, "num_hidden_layers": 16, "intermediate_size": 8192, "vocab_size": 128256,
        "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True}))
    # Llama-3.2-1B's published count, less its 33 RMSNorm weight vectors (not estimated: 0.005%).
    assert ModelShape.of_folder(tmp_path).parameters == 1_235_814_400 - 33 * 2048


def test_a_folder_without_a_usable_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        ModelShape.of_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="hidden size"):
        ModelShape.of_folder(tmp_path)
