"""Cast: every floating-point weight to float16 or bfloat16 (half the size of float32; runs on CPU and GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from modelbay.engine.optimization.methods.base import (
    Applied,
    Method,
    Work,
    choice,
    folder_bytes,
    known,
    load_causal_lm,
    save_model,
)

__all__ = ["Cast"]

_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16"}


class Cast(Method):
    """Load the model in float16 or bfloat16 (transformers' `dtype=`) and save it as safetensors.

    Settings: {"dtype": "float16" | "bfloat16"} (default float16; "fp16" and "bf16" are read as those).
    """

    name: ClassVar[str] = "cast"
    label: ClassVar[str] = "cast to 16-bit"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return {"dtype": ...}; raise OptimizationConfigInvalid for another key or dtype."""
        known(params, ("dtype",))
        given = dict(params)
        if isinstance(given.get("dtype"), str):
            given["dtype"] = _ALIASES.get(given["dtype"].strip().lower(), given["dtype"])
        return {"dtype": choice(given, "dtype", ("float16", "bfloat16"), "float16")}

    def suffix(self, params: dict[str, Any]) -> str:
        """"fp16" or "bf16"."""
        return {"float16": "fp16", "bfloat16": "bf16"}[params["dtype"]]

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Write the model in the asked dtype; facts: dtype, parameters, weights_bytes."""
        work.progress(0.0, f"loading in {params['dtype']}")
        model = load_causal_lm(source, params["dtype"])
        work.progress(0.6, "saving")
        save_model(model, source, out)
        work.progress(1.0, "saved")
        return Applied(out, {"dtype": params["dtype"], "parameters": sum(p.numel() for p in model.parameters()),
                             "weights_bytes": folder_bytes(out)})
