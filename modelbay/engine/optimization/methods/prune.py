"""Pruning: zero weights of the decoder blocks' Linear layers by magnitude or by Wanda, unstructured or 2:4.

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models", arXiv:2306.11695)
scores each weight by |W_ij| * ||X_j||_2, X_j being input feature j of the layer over calibration tokens, and
compares weights within each output row; blocks are pruned one after another, each measured on the outputs of
the blocks already pruned. Magnitude pruning scores |W_ij| over the whole layer (`prune.l1_unstructured`).
2:4 semi-structured sparsity (NVIDIA Ampere's sparse tensor cores) zeroes the 2 lowest-scored of every 4
consecutive input weights of a row. Masks are applied with torch.nn.utils.prune and made permanent with
`prune.remove`, so the saved weights are really zero. The embeddings and the output head are not pruned.
Unstructured sparsity saves nothing on disk or in time by itself (dense safetensors); 2:4 needs a sparse kernel
(GPU) to run faster. The `channels` method is the one that makes a model smaller and faster on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from modelbay.engine.errors import OptimizationConfigInvalid, OptimizationFailed
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
    linears,
    load_causal_lm,
    save_model,
)

__all__ = ["Prune"]

_SHORT = {"magnitude": "mag", "wanda": "wanda"}


class Prune(Method):
    """Unstructured or 2:4 pruning of the decoder blocks' Linear layers.

    Settings: {"method": "wanda" | "magnitude" (default wanda), "sparsity": fraction zeroed, 0 < s < 1 (default
    0.5; 2:4 implies 0.5 and refuses another), "structure": "unstructured" | "2:4" (default unstructured),
    "samples": calibration windows (default 32), "window": tokens per window (default 256)}; the last two only
    for wanda.
    """

    name: ClassVar[str] = "prune"
    label: ClassVar[str] = "pruning"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return the completed settings; raise OptimizationConfigInvalid for sparsity 1.5, 2:4 with 0.3 and the like."""
        known(params, ("method", "sparsity", "structure", "samples", "window"))
        method = choice(params, "method", ("wanda", "magnitude"), "wanda")
        structure = choice(params, "structure", ("unstructured", "2:4"), "unstructured")
        sparsity = fraction(params, "sparsity", 0.5)
        if structure == "2:4" and abs(sparsity - 0.5) > 1e-9:
            raise OptimizationConfigInvalid("sparsity", f"2:4 sparsity zeroes exactly half the weights, not {sparsity:g}; "
                                            "leave sparsity out or use structure unstructured")
        checked: dict[str, Any] = {"method": method, "sparsity": sparsity, "structure": structure}
        return checked | calibration_settings(params, method)

    def needs(self, params: dict[str, Any]) -> Needs:
        """Wanda needs calibration windows."""
        return Needs(calibration=params["method"] == "wanda")

    def suffix(self, params: dict[str, Any]) -> str:
        """"wanda50", "mag30", "wanda-2of4", "mag-2of4"."""
        short = _SHORT[params["method"]]
        return f"{short}-2of4" if params["structure"] == "2:4" else f"{short}{round(params['sparsity'] * 100)}"

    def describe(self, params: dict[str, Any]) -> str:
        """"Wanda pruning, 50% unstructured", "magnitude pruning, 2:4"."""
        method = "Wanda" if params["method"] == "wanda" else "magnitude"
        shape = "2:4" if params["structure"] == "2:4" else f"{params['sparsity']:.0%} unstructured"
        return f"{method} pruning, {shape}"

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Prune block by block (progress per block), save; facts: sparsity (measured zero fraction of the pruned
        layers), pruned_parameters, parameters, method, structure."""
        from torch.nn.utils import prune  # extra: ml

        work.progress(0.0, "loading")
        model = load_causal_lm(source)
        if work.device == "cuda":
            model.to("cuda")
        layers = decoder_layers(model, self.name, source.name)
        two_four = params["structure"] == "2:4"
        if two_four:
            for layer in layers:
                for name, module in linears(layer).items():
                    if module.in_features % 4:
                        raise OptimizationFailed(self.name, source.name, f"{name} has {module.in_features} inputs, "
                                                 "not a multiple of 4, so 2:4 sparsity cannot apply")
        if params["method"] == "wanda":
            windows = calibration_windows(work, params["samples"], params["window"], self.name, source.name)
            work.progress(0.05, f"measuring activations on {len(windows)} calibration windows")
            scored = layer_input_norms(model, layers, windows, work.device, linears)
        else:
            scored = ((index, None) for index in range(len(layers)))
        zeros = total = 0
        for index, norms in scored:
            for name, module in linears(layers[index]).items():
                if norms is None and not two_four:
                    prune.l1_unstructured(module, "weight", amount=params["sparsity"])
                else:
                    prune.custom_from_mask(module, "weight", _mask(module.weight.detach(), norms and norms[name],
                                                                   params["sparsity"], two_four))
                prune.remove(module, "weight")
                zeros += int((module.weight == 0).sum())
                total += module.weight.numel()
            work.progress(0.05 + 0.85 * (index + 1) / len(layers), f"pruned block {index + 1} of {len(layers)}")
        model.to("cpu")
        save_model(model, source, out)
        work.progress(1.0, "saved")
        return Applied(out, {"sparsity": round(zeros / total, 6), "pruned_parameters": total,
                             "parameters": sum(p.numel() for p in model.parameters()),
                             "method": params["method"], "structure": params["structure"]})


def _mask(weight: Any, norms: Any, sparsity: float, two_four: bool) -> Any:
    """Keep-mask (1 keep, 0 prune) of a (out, in) weight: Wanda's |W| * ||X_j|| per row (or |W| without norms),
    the lowest `sparsity` of each row zeroed, or the 2 lowest of every 4 consecutive inputs for 2:4."""
    import torch  # extra: ml

    score = weight.abs().float()
    if norms is not None:
        score = score * norms.to(score.device).sqrt().unsqueeze(0)
    mask = torch.ones_like(score)
    if two_four:
        rows, cols = score.shape
        lowest = score.reshape(rows, cols // 4, 4).topk(2, dim=-1, largest=False).indices
        mask.reshape(rows, cols // 4, 4).scatter_(-1, lowest, 0.0)
        return mask
    drop = round(score.shape[1] * sparsity)
    if drop:
        lowest = score.topk(drop, dim=1, largest=False).indices
        mask.scatter_(1, lowest, 0.0)
    return mask
