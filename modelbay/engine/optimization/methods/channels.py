"""Channel pruning: remove whole intermediate channels of Llama-style MLPs, so the model is smaller and faster.

A Llama-style MLP computes down(act(gate(x)) * up(x)); intermediate channel j is row j of gate_proj and up_proj
and column j of down_proj, and removing all three removes the channel exactly (no other module reads it). Every
block keeps the same number of channels (config.json has one `intermediate_size`), the ones it scores highest:

- "wanda" (default): Wanda-sp, the structured form of Wanda used as a baseline by FLAP (An et al. 2024,
  "Fluctuation-based Adaptive Structured Pruning for Large Language Models", arXiv:2312.11983): channel j scores
  ||X_j||_2 * sum_i |W_down[i, j]|, X_j being down_proj's input feature j over calibration tokens (Wanda, Sun et al.
  2023, arXiv:2306.11695, summed over the channel's weights). Blocks are pruned one after another, each measured
  on the outputs of the blocks already pruned.
- "magnitude": the group L2 norm of the channel's coupled weights, ||W_gate[j, :]||^2 + ||W_up[j, :]||^2 +
  ||W_down[:, j]||^2, as torch-pruning's GroupMagnitudeImportance does for a dependency group (DepGraph, Fang et al.
  2023, arXiv:2301.12900). It needs no data and is weaker.

No recovery fine-tune follows (LLM-Pruner, Ma et al. 2023, arXiv:2305.11627, adds a LoRA one): expect a larger
perplexity increase than unstructured pruning at the same sparsity, in exchange for real savings in size and time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from modelbay.engine.errors import OptimizationFailed
from modelbay.engine.optimization.methods.base import (
    Applied,
    Method,
    Needs,
    Work,
    calibration_settings,
    calibration_windows,
    choice,
    decoder_layers,
    fraction,
    known,
    layer_input_norms,
    load_causal_lm,
    save_model,
)

__all__ = ["Channels", "kept_channels"]

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
ROUND_TO = 8  # kept channels are a multiple of this (where the MLP has at least 8x as many), for aligned matmuls


class Channels(Method):
    """Structured pruning of MLP intermediate channels (gate/up/down of Llama, Qwen, Mistral, Gemma MLPs).

    Settings: {"sparsity": fraction of intermediate channels removed, 0 < s < 0.9 (default 0.3), "method": "wanda" |
    "magnitude" (default wanda), "samples": calibration windows (default 32), "window": tokens per window (default
    256)}; the last two only for wanda. Raises OptimizationFailed for a model without that MLP shape.
    """

    name: ClassVar[str] = "channels"
    label: ClassVar[str] = "MLP channel pruning"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return the completed settings; raise OptimizationConfigInvalid for sparsity 0.95 and the like."""
        known(params, ("sparsity", "method", "samples", "window"))
        method = choice(params, "method", ("wanda", "magnitude"), "wanda")
        checked: dict[str, Any] = {"sparsity": fraction(params, "sparsity", 0.3, high=0.9), "method": method}
        return checked | calibration_settings(params, method)

    def needs(self, params: dict[str, Any]) -> Needs:
        """Wanda-sp needs calibration windows."""
        return Needs(calibration=params["method"] == "wanda")

    def suffix(self, params: dict[str, Any]) -> str:
        """"ch30" for 30% of the channels removed."""
        return f"ch{round(params['sparsity'] * 100)}"

    def describe(self, params: dict[str, Any]) -> str:
        """"MLP channel pruning, 30% of channels (Wanda-sp)"."""
        measure = "Wanda-sp" if params["method"] == "wanda" else "group magnitude"
        return f"{self.label}, {params['sparsity']:.0%} of channels ({measure})"

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Remove channels block by block (progress per block), write the smaller config; facts: intermediate_size
        (before, after), channels_removed (fraction), parameters (before, after), parameter_ratio."""
        import torch  # extra: ml

        work.progress(0.0, "loading")
        model = load_causal_lm(source)
        if work.device == "cuda":
            model.to("cuda")
        layers = decoder_layers(model, self.name, source.name)
        before = _intermediate_size(model, layers, source.name)
        keep = kept_channels(before, params["sparsity"])
        parameters = sum(p.numel() for p in model.parameters())
        if params["method"] == "wanda":
            windows = calibration_windows(work, params["samples"], params["window"], self.name, source.name)
            work.progress(0.05, f"measuring activations on {len(windows)} calibration windows")
            scored = layer_input_norms(model, layers, windows, work.device,
                                       lambda layer: {"down_proj": layer.mlp.down_proj})
        else:
            scored = ((index, None) for index in range(len(layers)))
        for index, norms in scored:
            mlp = layers[index].mlp
            with torch.no_grad():
                gate, up, down = (getattr(mlp, name).weight.float() for name in _PROJECTIONS)
                if norms is None:
                    score = gate.pow(2).sum(1) + up.pow(2).sum(1) + down.pow(2).sum(0)
                else:
                    score = norms["down_proj"].to(down.device).sqrt() * down.abs().sum(0)
                kept = score.topk(keep).indices.sort().values
                _keep_rows(mlp.gate_proj, kept)
                _keep_rows(mlp.up_proj, kept)
                _keep_inputs(mlp.down_proj, kept)
            work.progress(0.05 + 0.85 * (index + 1) / len(layers), f"pruned block {index + 1} of {len(layers)}")
        model.config.intermediate_size = keep
        model.to("cpu")
        save_model(model, source, out)
        work.progress(1.0, "saved")
        after = sum(p.numel() for p in model.parameters())
        return Applied(out, {"intermediate_size": [before, keep], "channels_removed": round(1 - keep / before, 6),
                             "parameters": [parameters, after], "parameter_ratio": round(after / parameters, 6),
                             "method": params["method"]})


def kept_channels(intermediate: int, sparsity: float) -> int:
    """Channels each MLP keeps: (1 - sparsity) of them, rounded to a multiple of ROUND_TO where that leaves >= 8."""
    keep = max(1, round(intermediate * (1 - sparsity)))
    if intermediate >= 8 * ROUND_TO:
        keep = max(ROUND_TO, round(keep / ROUND_TO) * ROUND_TO)
    return min(keep, intermediate)


def _intermediate_size(model: Any, layers: list[Any], name: str) -> int:
    """The config's intermediate_size, checked against every block's gate/up/down Linear layers."""
    import torch  # extra: ml

    size = getattr(model.config, "intermediate_size", None)
    if not isinstance(size, int):
        raise OptimizationFailed("channels", name, "its config has no single intermediate_size to shrink")
    for index, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        modules = [getattr(mlp, projection, None) for projection in _PROJECTIONS]
        if not all(isinstance(module, torch.nn.Linear) for module in modules):
            raise OptimizationFailed("channels", name, f"block {index} has no Llama-style MLP (gate_proj, up_proj, "
                                     "down_proj); use prune or a quantization instead")
        gate, up, down = modules
        if not gate.out_features == up.out_features == down.in_features == size:
            raise OptimizationFailed("channels", name, f"block {index}'s MLP width differs from intermediate_size "
                                     f"{size}")
    return size


def _keep_rows(linear: Any, kept: Any) -> None:
    """Keep only the output rows `kept` of a Linear layer."""
    import torch  # extra: ml

    linear.weight = torch.nn.Parameter(linear.weight[kept.to(linear.weight.device)].clone())
    if linear.bias is not None:
        linear.bias = torch.nn.Parameter(linear.bias[kept.to(linear.bias.device)].clone())
    linear.out_features = len(kept)


def _keep_inputs(linear: Any, kept: Any) -> None:
    """Keep only the input columns `kept` of a Linear layer."""
    import torch  # extra: ml

    linear.weight = torch.nn.Parameter(linear.weight[:, kept.to(linear.weight.device)].clone())
    linear.in_features = len(kept)
