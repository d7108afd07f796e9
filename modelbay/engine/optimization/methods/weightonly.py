"""Weight-only int8 for CPU serving: torchao's Int8WeightOnlyConfig, saved as safetensors transformers reloads.

Chosen after measuring torchao 0.18 against optimum-quanto 0.2.7 on this project's CPU (2 cores; decode tokens/s
of the tiny model and a 28M-parameter one, docs/ARCHITECTURE.md): neither sped up decoding (at 28M, against float32:
torchao int8 weight-only 1.01x, int8 dynamic 0.42x, int4 0.50x; quanto qint8 0.56x, qint4 0.39x; torch's own
`quantize_dynamic` 2.06x, but it saves only by pickle), but only torchao saves
through transformers (`TorchAoConfig`, tensor subclasses flattened into safetensors with a JSON header, no pickle:
`AutoModelForCausalLM.from_pretrained(out)` reloads it, so "Try it" needs nothing new). quanto needs its own
`requantize` loader. So this method gives size, not speed: Linear weights in int8 with one scale per output row
(the embeddings and output head stay as they were), about 0.28x the float32 size of a Linear-heavy model, with
decoding somewhat slower than float32 on the CPU. For CPU speed use `onnx` with int8 (onnxruntime's int8 kernels),
for 4-bit use `bnb` with bits 4: torchao 0.18 has no CPU int4 layout (its int4 weights for the CPU are stored
unpacked, one per int8, no smaller than int8).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from modelbay.engine.errors import OptimizationConfigInvalid
from modelbay.engine.optimization.methods.base import (
    Applied,
    Method,
    Work,
    copy_companions,
    folder_bytes,
    known,
    load_causal_lm,
)

__all__ = ["WeightOnly"]


class WeightOnly(Method):
    """torchao int8 weight-only quantization (per-row scales) of every Linear layer but the output head.

    Settings: {"bits": 8} (the default; 4 is refused, see the module docstring).
    """

    name: ClassVar[str] = "weight-only"
    label: ClassVar[str] = "torchao int8 weight-only"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return {"bits": 8}; raise OptimizationConfigInvalid for 4 bits (naming what to use) or another setting."""
        known(params, ("bits",))
        bits = params.get("bits", 8)
        if str(bits).strip() == "4":
            raise OptimizationConfigInvalid("bits", "torchao has no int4 layout for the CPU here (stored as int8, no "
                                            "smaller); use method bnb with bits 4 for nf4")
        if str(bits).strip() != "8":
            raise OptimizationConfigInvalid("bits", f"{bits!r} is not 8; weight-only quantization is int8")
        return {"bits": 8}

    def suffix(self, params: dict[str, Any]) -> str:
        """"w8"."""
        return "w8"

    def describe(self, params: dict[str, Any]) -> str:
        """"torchao int8 weight-only (smaller, not faster on the CPU)"."""
        return f"{self.label} (smaller, not faster on the CPU)"

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Load quantized through transformers' TorchAoConfig and save as safetensors; facts: bits, weights_bytes."""
        from torchao.quantization import Int8WeightOnlyConfig  # extra: ml
        from transformers import TorchAoConfig  # extra: ml

        work.progress(0.0, "quantizing to int8 with torchao")
        model = load_causal_lm(source, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()),
                               device_map={"": "cuda:0" if work.device == "cuda" else "cpu"})
        work.progress(0.7, "saving")
        copy_companions(source, out)
        model.save_pretrained(out, safe_serialization=True)
        work.progress(1.0, "saved")
        return Applied(out, {"bits": 8, "library": "torchao", "weights_bytes": folder_bytes(out)})
