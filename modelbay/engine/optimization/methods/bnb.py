"""bitsandbytes: 8-bit (LLM.int8) and 4-bit (nf4 / fp4, double quantization) checkpoints transformers reloads.

Dettmers et al. 2022, "LLM.int8()" (arXiv:2208.07339) and 2023, "QLoRA" (arXiv:2305.14314: nf4 and double
quantization). The model is loaded with transformers' `BitsAndBytesConfig` and saved at once: the folder's
config.json carries the `quantization_config`, so `AutoModelForCausalLM.from_pretrained(out)` (and vLLM's
bitsandbytes loader on a GPU worker) reloads it quantized. bitsandbytes 0.50.2 quantizes and runs on the CPU too.
A 4-bit model is saved before any forward pass: on the CPU one changes the weights saved (NOTES-ML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from modelbay.engine.errors import OptimizationConfigInvalid
from modelbay.engine.optimization.methods.base import (
    Applied,
    Method,
    Work,
    choice,
    copy_companions,
    flag,
    folder_bytes,
    known,
    load_causal_lm,
)

__all__ = ["BitsAndBytes"]

_COMPUTE = ("float32", "bfloat16", "float16")


class BitsAndBytes(Method):
    """Quantize every Linear layer but the output head with bitsandbytes and save the checkpoint.

    Settings: {"bits": 8} or {"bits": 4, "quant_type": "nf4" | "fp4" (default nf4), "double_quant": bool (default
    true), "compute_dtype": "float32" | "bfloat16" | "float16" (default float32)}. `quant_type` "int8" is read as 8-bit
    and refused with 4 bits.
    """

    name: ClassVar[str] = "bnb"
    label: ClassVar[str] = "bitsandbytes"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return the completed settings; raise OptimizationConfigInvalid for 4-bit int8, 8-bit nf4 and the like."""
        known(params, ("bits", "quant_type", "double_quant", "compute_dtype"))
        bits = choice(params, "bits", (8, 4), 8 if params.get("quant_type", "int8") == "int8" else 4)
        if bits == 8:
            for key in ("double_quant", "compute_dtype"):
                if key in params:
                    raise OptimizationConfigInvalid(key, "only 4-bit bitsandbytes takes it; 8-bit has no setting")
            if params.get("quant_type", "int8") != "int8":
                raise OptimizationConfigInvalid("quant_type", f"8-bit bitsandbytes is int8, not "
                                                f"{params['quant_type']}; use bits 4 for nf4 or fp4")
            return {"bits": 8}
        if params.get("quant_type") == "int8":
            raise OptimizationConfigInvalid("quant_type", "4-bit bitsandbytes is nf4 or fp4, not int8; use bits 8 for int8")
        return {"bits": 4, "quant_type": choice(params, "quant_type", ("nf4", "fp4"), "nf4"),
                "double_quant": flag(params, "double_quant", True),
                "compute_dtype": choice(params, "compute_dtype", _COMPUTE, "float32")}

    def suffix(self, params: dict[str, Any]) -> str:
        """"int8", "nf4" or "fp4"."""
        return "int8" if params["bits"] == 8 else params["quant_type"]

    def describe(self, params: dict[str, Any]) -> str:
        """"bitsandbytes 8-bit", or "bitsandbytes 4-bit nf4 (double quantization)"."""
        if params["bits"] == 8:
            return "bitsandbytes 8-bit (LLM.int8)"
        double = ", double quantization" if params["double_quant"] else ""
        return f"bitsandbytes 4-bit {params['quant_type']}{double}"

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Load quantized, save at once; facts: bits, quant_type, double_quant, weights_bytes, memory_bytes."""
        import torch  # extra: ml
        from transformers import BitsAndBytesConfig  # extra: ml

        if params["bits"] == 8:
            config = BitsAndBytesConfig(load_in_8bit=True)
        else:
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=params["quant_type"],
                                        bnb_4bit_use_double_quant=params["double_quant"],
                                        bnb_4bit_compute_dtype=getattr(torch, params["compute_dtype"]))
        work.progress(0.0, f"quantizing to {self.suffix(params)} with bitsandbytes")
        device_map = {"": 0} if work.device == "cuda" else {"": "cpu"}
        model = load_causal_lm(source, "float32" if work.device == "cpu" else "float16",
                               quantization_config=config, device_map=device_map)
        work.progress(0.7, "saving")
        copy_companions(source, out)
        model.save_pretrained(out, safe_serialization=True)  # before any forward pass (see the module docstring)
        work.progress(1.0, "saved")
        facts: dict[str, Any] = {"bits": params["bits"], "weights_bytes": folder_bytes(out),
                                 "memory_bytes": int(model.get_memory_footprint())}
        if params["bits"] == 4:
            facts |= {"quant_type": params["quant_type"], "double_quant": params["double_quant"]}
        return Applied(out, facts)
