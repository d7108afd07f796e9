"""ONNX export of a decoder with its KV cache, optional onnxruntime int8 quantization, and a page that runs it.

The export traces the transformers model with `torch.onnx.export(..., dynamo=True)` (torch.export, translated by
onnxscript) around a thin wrapper that turns flat cache tensors into transformers' DynamicCache and back, so the
graph takes and returns the cache by the names optimum and transformers.js use (`engine/optimization/onnxmodel.py`
describes them). Batch, sequence and past lengths are dynamic; the example past is 3 tokens long (torch.export
specializes lengths 0 and 1), and an empty past (length 0) runs at inference.

Weights go to external data (`onnx/model.onnx_data`) when the model is over EXTERNAL_DATA_BYTES, far below
protobuf's 2 GB limit on one file. int8 "dynamic" is onnxruntime's `quantize_dynamic` (int8 weights, activations
quantized per call: MatMulInteger); "static" is `quantize_static` in QDQ format with activation ranges calibrated
(MinMax) on the job's calibration windows. Both write `onnx/model_quantized.onnx` beside the fp32 graph.

Every export ends with a logits check: the same token ids through torch (no cache) and through each written graph
(a prefill, then a chunk and a single token through the cache). fp32 must match to FP32_TOLERANCE of the logits'
scale; int8 to INT8_TOLERANCE (mean absolute difference over the logits' standard deviation; the share of next-token
choices that agree is reported, not judged, since near-ties of an untrained model flip under any rounding). A failed
check raises OptimizationFailed and the folder is emptied.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from modelbay.engine.errors import OptimizationConfigInvalid, OptimizationFailed
from modelbay.engine.installs.loadable import (
    ONNX_DIR,
    ONNX_MANIFEST,
    ONNX_MODEL,
    ONNX_QUANTIZED,
)
from modelbay.engine.optimization.methods.base import (
    Applied,
    Method,
    Needs,
    Work,
    copy_companions,
    known,
    whole,
)

__all__ = ["EXTERNAL_DATA_BYTES", "WEB_FILES", "OnnxExport", "export"]

EXTERNAL_DATA_BYTES = 1536 * 2**20  # fp32 weights above 1.5 GiB go to external data (protobuf's limit is 2 GB)
OPSETS = (18, 23)  # the ONNX opsets the dynamo exporter writes and onnxruntime (Python and web) runs
FP32_TOLERANCE = 1e-3  # max |onnx - torch| / max(1, max |torch logits|)
INT8_TOLERANCE = 0.15  # mean |int8 - torch| / std(torch logits)
CALIBRATION_WINDOWS = (32, 64)  # (windows, tokens each) for static int8
WEB_FILES = ("index.html", "modelbay-onnx.js")  # copied from engine/optimization/web/ into every export
_CHECK_TOKENS = (8, 4, 1)  # the logits check: a prefill, a chunk through the cache, one token through the cache
_INT8 = {False: False, "false": False, "no": False, "off": False, True: "dynamic", "true": "dynamic",
         "yes": "dynamic", "dynamic": "dynamic", "static": "static"}


class OnnxExport(Method):
    """Export to ONNX with a KV cache for onnxruntime (Python, and the browser through onnxruntime-web).

    Settings: {"int8": false | "dynamic" | "static" (true means "dynamic"), "opset": 18..23 (default 18)}.
    """

    name: ClassVar[str] = "onnx"
    label: ClassVar[str] = "ONNX export"

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return {"int8": ..., "opset": ...}; raise OptimizationConfigInvalid for another key or value."""
        known(params, ("int8", "opset"))
        value = params.get("int8", False)
        int8 = _INT8.get(value.strip().lower() if isinstance(value, str) else value, None)
        if int8 is None:
            raise OptimizationConfigInvalid("int8", f"{value!r} is not false, dynamic or static (true means dynamic)")
        return {"int8": int8, "opset": whole(params, "opset", OPSETS[0], low=OPSETS[0], high=OPSETS[1])}

    def needs(self, params: dict[str, Any]) -> Needs:
        """CPU; calibration windows for static int8; an ONNX folder."""
        return Needs(calibration=params.get("int8") == "static", output="onnx")

    def suffix(self, params: dict[str, Any]) -> str:
        """"onnx", "onnx-int8" (dynamic) or "onnx-int8s" (static)."""
        return {False: "onnx", "dynamic": "onnx-int8", "static": "onnx-int8s"}[params.get("int8", False)]

    def describe(self, params: dict[str, Any]) -> str:
        """"ONNX export (fp32, opset 18)", "ONNX export (int8 dynamic, opset 18)" or "(int8 static, ...)"."""
        value = params.get("int8", False)
        int8 = _INT8.get(value.strip().lower() if isinstance(value, str) else value, value)
        return f"{self.label} ({f'int8 {int8}' if int8 else 'fp32'}, opset {params.get('opset', OPSETS[0])})"

    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Export `source` into `out` (the ONNX variant layout); facts: the logits check's figures and sizes."""
        return export(source, out, int8=params.get("int8", False), opset=params.get("opset", OPSETS[0]), work=work)


def export(source: Path, out: Path, *, int8: str | bool = False, opset: int = OPSETS[0], work: Work,
           external_data_bytes: int = EXTERNAL_DATA_BYTES) -> Applied:
    """Write the ONNX variant of the causal LM folder `source` into the empty folder `out` and check its logits.

    Raises:
        OptimizationFailed: transformers cannot load it, the exporter refuses it, or a logits check fails
            (`out` is emptied).
        JobCanceled: from work.progress; `out` is emptied.
    """
    int8 = _INT8.get(int8.strip().lower() if isinstance(int8, str) else int8, int8)  # true means "dynamic"
    try:
        return _export(source, out, int8, opset, work, external_data_bytes)
    except BaseException:
        _empty(out)
        raise


def _export(source: Path, out: Path, int8: str | bool, opset: int, work: Work, external_data_bytes: int) -> Applied:
    import torch  # extra: ml

    from modelbay.engine.optimization.methods.base import load_causal_lm

    work.progress(0.0, "loading the model")
    model = load_causal_lm(source, "float32", attn_implementation="sdpa")
    shape = _cache_shape(model, source.name)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weights > external_data_bytes
    (out / ONNX_DIR).mkdir(parents=True, exist_ok=True)
    work.progress(0.1, "exporting with torch.onnx (dynamo)")
    _trace(model, shape, out / ONNX_MODEL, opset, external, source.name)
    graphs = [ONNX_MODEL]
    if int8:
        work.progress(0.5, f"quantizing to int8 ({int8})")
        windows = work.calibration(*CALIBRATION_WINDOWS) if int8 == "static" else []
        _quantize(out / ONNX_MODEL, out / ONNX_QUANTIZED, int8, windows, shape, external, source.name)
        graphs.append(ONNX_QUANTIZED)
    work.progress(0.7, "checking logits against torch")
    ids = _check_ids(shape["vocab_size"])
    with torch.inference_mode():
        reference = model(input_ids=torch.tensor(ids), use_cache=False).logits.float().numpy()
    del model
    checks = {graph: _check(out, graph, ids, reference, shape, source.name) for graph in graphs}
    work.progress(0.9, "writing the web page and the manifest")
    copy_companions(source, out)
    for name in WEB_FILES:
        (out / name).write_bytes(resources.files("modelbay.engine.optimization.web").joinpath(name).read_bytes())
    files = {graph: _external_files(out / graph) for graph in graphs}
    manifest = {
        "format": 1, "file": graphs[-1], "external_data": files[graphs[-1]], **shape,
        "dtype": "float32", "opset": opset, "int8": int8, "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
        "inputs": _names("past_key_values", shape["num_layers"], ["input_ids", "attention_mask", "position_ids"]),
        "outputs": _names("present", shape["num_layers"], ["logits"]),
        "eos_token_ids": _eos(source), "graphs": {graph: {"external_data": files[graph]} for graph in graphs},
        "check": checks,
    }
    (out / ONNX_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    work.progress(1.0, "exported")
    facts: dict[str, Any] = {
        "format": "onnx", "opset": opset, "int8": int8, "external_data": external,
        "logits_max_abs_diff": checks[ONNX_MODEL]["max_abs_diff"], "top1_agreement": checks[ONNX_MODEL]["top1"],
        "onnx_bytes": _bytes(out, ONNX_MODEL, files[ONNX_MODEL]),
    }
    if int8:
        facts.update(int8_logits_max_abs_diff=checks[ONNX_QUANTIZED]["max_abs_diff"],
                     int8_logits_mean_abs_diff=checks[ONNX_QUANTIZED]["mean_abs_diff"],
                     int8_top1_agreement=checks[ONNX_QUANTIZED]["top1"],
                     int8_bytes=_bytes(out, ONNX_QUANTIZED, files[ONNX_QUANTIZED]))
    return Applied(out, facts)


def _cache_shape(model: Any, name: str) -> dict[str, int]:
    """num_layers, num_kv_heads, head_dim and vocab_size of a decoder's config (OptimizationFailed without them)."""
    config = model.config.get_text_config(decoder=True)
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    if not (layers and kv_heads and head_dim and getattr(config, "vocab_size", None)):
        raise OptimizationFailed("ONNX export", name, "its config names no layer count, attention heads or vocabulary, "
                                 "so the KV cache's shape is unknown")
    if set(getattr(config, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        raise OptimizationFailed("ONNX export", name, "it has sliding-window or linear attention layers, whose cache "
                                 "this export does not write")
    return {"num_layers": int(layers), "num_kv_heads": int(kv_heads), "head_dim": int(head_dim),
            "vocab_size": int(config.vocab_size)}


def _names(prefix: str, layers: int, first: list[str]) -> list[str]:
    """Graph input or output names: `first`, then {prefix}.{i}.key and .value for each layer."""
    return first + [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def _trace(model: Any, shape: dict[str, int], path: Path, opset: int, external: bool, name: str) -> None:
    """Export the model with its cache through torch.onnx's dynamo exporter and save it (weights external if asked)."""
    import torch  # extra: ml
    from onnxscript import ir  # extra: ml (onnx_ir, shipped with onnxscript as onnxscript.ir)
    from transformers.cache_utils import DynamicCache  # extra: ml

    layers = shape["num_layers"]

    class WithCache(torch.nn.Module):
        """Flat cache tensors in and out, as ONNX graphs take them."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            result = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                past_key_values=cache, use_cache=True)
            present = [t for layer in result.past_key_values.layers for t in (layer.keys, layer.values)]
            return (result.logits, *present)

    batch, seq, done = 2, 4, 3  # example lengths; 0 and 1 would be specialized by torch.export
    example = (torch.zeros(batch, seq, dtype=torch.long), torch.ones(batch, done + seq, dtype=torch.long),
               torch.arange(done, done + seq).expand(batch, seq).contiguous(),
               *(torch.zeros(batch, shape["num_kv_heads"], done, shape["head_dim"]) for _ in range(2 * layers)))
    tokens = {0: "batch_size", 1: "sequence_length"}
    dynamic = {"input_ids": tokens, "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
               "position_ids": tokens, "past": tuple({0: "batch_size", 2: "past_sequence_length"}
                                                     for _ in range(2 * layers))}
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    with warnings.catch_warnings():
        # torch.export's notes on axis names it merged and on pytree internals, and the exporter's "torchvision is
        # not installed" (deliberately: NOTES-ML): nothing a person acts on.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        registration.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                WithCache(model).eval(), example, None, dynamo=True, opset_version=opset, dynamic_shapes=dynamic,
                input_names=_names("past_key_values", layers, ["input_ids", "attention_mask", "position_ids"]),
                output_names=_names("present", layers, ["logits"]), optimize=True, verbose=False, report=False)
        except Exception as error:  # torch.export's and onnxscript's errors have no common base
            raise OptimizationFailed("ONNX export", name, f"torch.onnx (dynamo) could not export it: "
                                     f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") \
                from error
        finally:
            registration.setLevel(level)
    ir.save(program.model, path, external_data=f"{path.name}_data" if external else None)


def _quantize(fp32: Path, target: Path, int8: str | bool, windows: list[list[int]], shape: dict[str, int],
              external: bool, name: str) -> None:
    """Write the int8 graph: dynamic (weights int8, activations per call) or static QDQ calibrated on `windows`."""
    from onnxruntime.quantization import (  # extra: ml
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if int8 == "dynamic":
        quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True,
                         use_external_data_format=external)
        return
    windows = [w for w in windows if w]
    if not windows:
        raise OptimizationFailed("ONNX static int8", name, "there was no calibration text to measure activations on")
    quantize_static(fp32, target, _Calibration(windows, shape), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                    use_external_data_format=external, extra_options={"ActivationSymmetric": True})


class _Calibration:
    """onnxruntime's CalibrationDataReader over token windows: each window as one prefill with an empty cache."""

    def __init__(self, windows: list[list[int]], shape: dict[str, int]) -> None:
        self._windows = iter(windows)
        self._shape = shape

    def get_next(self) -> dict[str, Any] | None:
        import numpy as np

        window = next(self._windows, None)
        if window is None:
            return None
        ids = np.asarray([window], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]}
        empty = np.zeros((1, self._shape["num_kv_heads"], 0, self._shape["head_dim"]), np.float32)
        feed.update({name: empty for name in _names("past_key_values", self._shape["num_layers"], [])})
        return feed


def _check_ids(vocab: int) -> list[list[int]]:
    """Two rows of fixed pseudo-random token ids, sum(_CHECK_TOKENS) long, the same for every export."""
    import numpy as np

    return np.random.default_rng(15).integers(0, vocab, size=(2, sum(_CHECK_TOKENS))).tolist()


def _check(out: Path, graph: str, ids: list[list[int]], reference: Any, shape: dict[str, int], name: str) \
        -> dict[str, float]:
    """Compare a graph's logits through its cache with torch's; raise OptimizationFailed past the tolerance."""
    import numpy as np

    from modelbay.engine.optimization.onnxmodel import OnnxCausalLM

    (out / ONNX_MANIFEST).write_text(json.dumps({"file": graph, **shape}))  # what OnnxCausalLM reads; rewritten
    model = OnnxCausalLM(out, file=graph)
    tokens = np.asarray(ids, dtype=np.int64)
    parts, past, at = [], None, 0
    for length in _CHECK_TOKENS:
        logits, past = model.forward(tokens[:, at:at + length], past)
        parts.append(logits)
        at += length
    got = np.concatenate(parts, axis=1)
    diff = np.abs(got - reference)
    scale = float(reference.std())
    figures = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
               "top1": float((got.argmax(-1) == reference.argmax(-1)).mean()), "logits_std": scale,
               "tokens": int(tokens.size)}
    if graph == ONNX_MODEL:
        bound = FP32_TOLERANCE * max(1.0, float(np.abs(reference).max()))
        failed = figures["max_abs_diff"] > bound and f"max |difference| {figures['max_abs_diff']:.3g} > {bound:.3g}"
    else:
        ratio = figures["mean_abs_diff"] / max(scale, 1e-12)
        failed = ratio > INT8_TOLERANCE and (f"mean |difference| is {ratio:.2f} of the logits' deviation, over "
                                             f"{INT8_TOLERANCE:g}")
    if failed:
        raise OptimizationFailed("ONNX export", name, f"the logits check of {graph} against torch failed: {failed}")
    return figures


def _external_files(graph: Path) -> list[str]:
    """The external data files a graph refers to, relative to the variant folder."""
    import onnx  # extra: ml

    model = onnx.load(str(graph), load_external_data=False)
    found = {entry.value for tensor in model.graph.initializer for entry in tensor.external_data
             if entry.key == "location"}
    return sorted(f"{ONNX_DIR}/{location}" for location in found)


def _bytes(out: Path, graph: str, external: list[str]) -> int:
    """Bytes on disk of a graph and its external data."""
    return sum((out / path).stat().st_size for path in (graph, *external))


def _eos(source: Path) -> list[int]:
    """The end-of-sequence ids of the model's generation config (else its config), for the web page."""
    for name in ("generation_config.json", "config.json"):
        try:
            eos = json.loads((source / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if eos is not None:
            return [eos] if isinstance(eos, int) else [e for e in eos if isinstance(e, int)]
    return []


def _empty(out: Path) -> None:
    """Remove everything inside `out` (a failed or canceled export keeps nothing)."""
    if out.is_dir():
        for path in out.iterdir():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
