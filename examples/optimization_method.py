"""An optimization method from a plugin: drop the last decoder blocks of a model (depth pruning, as ShortGPT does).

Run it with `python examples/optimization_method.py`. A method is a `Method` subclass with a `name`, a `label`,
`check` (settings validated and completed without torch, one-line OptimizationConfigInvalid), and `apply`, which
writes the variant of a model folder into an empty folder and reports progress through `work.progress` (that call
raises JobCanceled when the job is canceled). A plugin registers the class through the
`register_optimization_methods` hook; the built-ins (cast, bnb, weight-only, prune, channels, onnx) come the same way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from modelbay import plugins
from modelbay.engine.errors import OptimizationConfigInvalid
from modelbay.engine.optimization.methods import METHODS, Applied, Method, Work
from modelbay.engine.optimization.methods.base import known, load_causal_lm, save_model, whole
from modelbay.hookspecs import hookimpl


class DropBlocks(Method):
    """Remove the last `blocks` decoder blocks and write the shallower config."""

    name = "drop-blocks"
    label = "depth pruning"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        known(params, ("blocks",))
        return {"blocks": whole(params, "blocks", 1, low=1, high=1000)}

    def suffix(self, params: dict[str, Any]) -> str:
        return f"drop{params['blocks']}"

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        model = load_causal_lm(source)
        layers = model.model.layers
        if params["blocks"] >= len(layers):
            raise OptimizationConfigInvalid("blocks", f"the model has only {len(layers)} blocks")
        for index in range(params["blocks"]):
            del layers[-1]
            work.progress((index + 1) / params["blocks"], f"dropped block {len(layers)}")
        model.config.num_hidden_layers = len(layers)
        save_model(model, source, out)
        return Applied(out, {"blocks": len(layers)})


class DropBlocksPlugin:
    """The plugin: one hook implementation."""

    @hookimpl
    def register_optimization_methods(self, register):
        register(DropBlocks)


class PrintedWork:
    """The job's side of a run: progress printed, no calibration text."""

    device = "cpu"

    def progress(self, fraction: float, message: str) -> None:
        print(f"  {fraction:.0%} {message}")

    def calibration(self, n: int, length: int) -> list[list[int]]:
        return []


def main() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    plugins.register(DropBlocksPlugin())  # an installed package would be found through its entry point instead
    print("methods:", ", ".join(METHODS))
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder, "model"), Path(folder, "variant")
        LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                                     num_key_value_heads=2, vocab_size=128)).save_pretrained(source)
        method = METHODS["drop-blocks"]()
        params = method.check({"blocks": 2})
        out.mkdir()
        applied = method.apply(source, out, params, PrintedWork())
        print(f"{source.name}-{method.suffix(params)}: {applied.facts['blocks']} blocks left")


if __name__ == "__main__":
    main()
