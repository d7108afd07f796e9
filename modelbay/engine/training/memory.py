"""How much memory a LoRA fine-tune needs, and the largest batch that fits a given amount.

The estimate is the sum of (sources in each line):

- the frozen weights at the precision they load in: 4 bytes a parameter in fp32, 2 in bf16/fp16, and for QLoRA's
  4-bit NF4 half a byte plus the quantization constants (one fp32 absmax per 64 weights, 8-bit with double
  quantization: Dettmers et al. 2023, section 3), with the embeddings and output head kept in 16 bits;
- the LoRA adapters, trained in fp32: 16 bytes a trainable parameter (weight 4, gradient 4, AdamW's two moments 8);
  an adapter on a d_in x d_out layer has r x (d_in + d_out) parameters (Hu et al. 2021);
- activations per row of `seq_len` tokens: per layer 34 x seq_len x hidden bytes at 16 bits with attention by SDPA
  or FlashAttention (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  eq. 1 without the 5as^2/h term those kernels do not store), twice that in fp32; with gradient checkpointing only
  each layer's input (2 x seq_len x hidden at 16 bits) plus one layer's full activations;
- the logits and their gradient in fp32: seq_len x vocab x 8 bytes a row (the loss is computed in fp32);
- a fixed runtime cost (`engine/hardware.RUNTIME_OVERHEAD`: CUDA context, kernels, allocator slack).

Only the activations and logits grow with the batch, so the largest batch that fits is one division.

Sharded across N processes (FSDP FULL_SHARD: parameters, gradients and optimizer state split evenly; Zhao et al.
2023, "PyTorch FSDP", section 3) each device holds 1/N of the weights and of the adapters' training state, and its
own activations and logits in full (`sharded`). `strategy_for` picks DDP or FSDP from these two estimates.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import floor
from pathlib import Path
from typing import Literal

from modelbay.engine.hardware import RUNTIME_OVERHEAD

__all__ = ["Estimate", "ModelShape", "Precision", "Strategy", "devices_to_shard", "estimate", "largest_batch",
           "lora_parameters", "sharded", "strategy_for"]

Precision = Literal["fp32", "bf16", "fp16", "4bit"]
Strategy = Literal["single", "ddp", "fsdp"]
_WEIGHT_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "4bit": 0.5 + 0.127 / 8}
_TRAINABLE_BYTES = 16  # fp32 weight, gradient and AdamW's two moments
_ACTIVATION_FACTOR = 34  # bytes per token per hidden unit per layer at 16 bits (Korthikanti et al. 2022)
_CHECKPOINTED_FACTOR = 2  # only each layer's input is kept
_LOGIT_BYTES = 8  # fp32 logits and their gradient, per token per vocabulary entry
_HEADER_LIMIT = 100 << 20  # a safetensors header is JSON of at most this many bytes


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder model: its size and the dimensions of its layers."""

    parameters: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = False  # the output head shares the input embeddings' weights


    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden // max(1, self.heads)

    @property
    def embedding_parameters(self) -> int:
        """Parameters of the input embeddings and the output head (kept in 16 bits by 4-bit loading)."""
        return (1 if self.tied else 2) * self.vocab * self.hidden

    @classmethod
    def of_folder(cls, folder: Path) -> ModelShape:
        """Read a model folder's shape: dimensions from config.json, the parameter count from the safetensors headers
        (exact, without loading a weight), else from the dimensions.

        Raises:
            ValueError: config.json is missing, not JSON, or lacks the hidden size or layer count.
        """
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {folder / 'config.json'}: {exc}") from exc
        config = config.get("text_config", config) if isinstance(config, dict) else {}
        hidden = _int(config, "hidden_size", "n_embd", "d_model")
        layers = _int(config, "num_hidden_layers", "n_layer", "num_layers")
        if not hidden or not layers:
            raise ValueError(f"{folder / 'config.json'} names no hidden size or layer count")
        heads = _int(config, "num_attention_heads", "n_head") or 1
        shape = cls(parameters=0, hidden=hidden, layers=layers,
                    intermediate=_int(config, "intermediate_size", "n_inner") or 4 * hidden,
                    vocab=_int(config, "vocab_size") or 32000, heads=heads,
                    kv_heads=_int(config, "num_key_value_heads") or heads,
                    tied=bool(config.get("tie_word_embeddings", False)))
        counted = safetensors_parameters(folder)
        return cls(**{**shape.__dict__, "parameters": counted or shape.approximate_parameters()})

    def approximate_parameters(self) -> int:
        """Parameters of a Llama-shaped decoder with these dimensions (attention, gated MLP, embeddings, head)."""
        kv = self.kv_heads * self.head_dim
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate
        return self.layers * per_layer + self.embedding_parameters


def _int(config: dict, *names: str) -> int:
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def safetensors_parameters(folder: Path) -> int:
    """Count the parameters in a folder's safetensors files from their headers alone (0 when there are none)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with path.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > _HEADER_LIMIT:
                    continue
                header = json.loads(handle.read(size))
        except (OSError, ValueError, struct.error):
            continue
        for name, tensor in header.items():
            if name != "__metadata__" and isinstance(tensor, dict):
                count = 1
                for dim in tensor.get("shape", []):
                    count *= int(dim)
                total += count
    return total


def lora_parameters(shape: ModelShape, r: int, target_modules: str | list[str] = "all-linear") -> int:
    """Trainable parameters of rank-r adapters on a Llama-shaped decoder's linear layers (all, or those named)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    # r x (d_in + d_out) for each projection of a layer.
    layer = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h,
             "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
    if target_modules == "all-linear":
        chosen = sum(layer.values())
    else:
        names = [target_modules] if isinstance(target_modules, str) else target_modules
        chosen = sum(layer.get(name, 2 * h) for name in names)
    return r * chosen * shape.layers


@dataclass(frozen=True)
class Estimate:
    """Memory a fine-tune needs, in bytes, by part; `needed` = fixed + batch x per_row."""

    weights: int
    trainable: int
    per_row: int  # activations and logits of one row of seq_len tokens
    overhead: int
    batch: int

    @property
    def fixed(self) -> int:
        """What does not grow with the batch."""
        return self.weights + self.trainable + self.overhead

    @property
    def needed(self) -> int:
        """The whole estimate at this batch size."""
        return self.fixed + self.batch * self.per_row


def estimate(shape: ModelShape, *, precision: Precision, batch: int, seq_len: int, r: int,
             target_modules: str | list[str] = "all-linear", gradient_checkpointing: bool = False) -> Estimate:
    """Estimate the memory one training process needs (the module docstring gives the parts and their sources)."""
    if precision == "4bit":
        body = max(0, shape.parameters - shape.embedding_parameters)
        weights = body * _WEIGHT_BYTES["4bit"] + shape.embedding_parameters * 2
    else:
        weights = shape.parameters * _WEIGHT_BYTES[precision]
    trainable = lora_parameters(shape, r, target_modules) * _TRAINABLE_BYTES
    scale = 2 if precision == "fp32" else 1  # activations of fp32 compute are twice those of 16-bit
    per_layer = _CHECKPOINTED_FACTOR if gradient_checkpointing else _ACTIVATION_FACTOR
    layers = shape.layers * per_layer + (_ACTIVATION_FACTOR if gradient_checkpointing else 0)
    per_row = seq_len * shape.hidden * layers * scale + seq_len * shape.vocab * _LOGIT_BYTES
    return Estimate(weights=int(weights), trainable=trainable, per_row=int(per_row), overhead=RUNTIME_OVERHEAD,
                    batch=batch)


def largest_batch(found: Estimate, room: int) -> int:
    """The largest batch whose estimate fits `room` bytes (0 when not even one row does)."""
    if found.per_row <= 0:
        return found.batch
    return max(0, floor((room - found.fixed) / found.per_row))


def sharded(found: Estimate, processes: int) -> Estimate:
    """What one of `processes` FSDP (FULL_SHARD) processes needs: 1/N of the weights and of the adapters' training
    state, its own activations, logits and runtime in full (ceil: a shard is never smaller than its share)."""
    n = max(1, processes)
    return Estimate(weights=-(-found.weights // n), trainable=-(-found.trainable // n), per_row=found.per_row,
                    overhead=found.overhead, batch=found.batch)


def devices_to_shard(found: Estimate, room: int, available: int) -> int:
    """The fewest devices (2 to `available`) of `room` bytes each that hold this run sharded; 0 when none do."""
    for n in range(2, available + 1):
        if sharded(found, n).needed <= room:
            return n
    return 0


def strategy_for(asked: str, processes: int, found: Estimate | None, room: int | None, *,
                 quantized: bool = False) -> Strategy:
    """How `processes` processes train: "single" (one process), or "ddp" / "fsdp" as asked; "auto" picks FSDP when
    one device of `room` bytes cannot hold the run at this precision but `processes` of them sharded can, else DDP
    (also when the room is not known, and for 4-bit weights, which ModelBay does not shard)."""
    if processes <= 1:
        return "single"
    if asked in ("ddp", "fsdp"):
        return asked  # type: ignore[return-value]
    if quantized or found is None or room is None or found.needed <= room:
        return "ddp"
    return "fsdp" if sharded(found, processes).needed <= room else "ddp"
