"""A prepared GPU check: ModelBay's bitsandbytes method (8-bit LLM.int8 and 4-bit nf4) on a Llama-3.2-1B-shaped model.

For a session that is lent a GPU (the `device` tool); CI never runs it, and without CUDA it exits at once with one
line saying so. A model of Llama-3.2-1B's shape (1.24B parameters: 16 layers, hidden 2048, MLP 8192, 32 heads with 8
key/value heads, vocabulary 128,256, tied embeddings) is built with random weights from a `LlamaConfig` (nothing is
downloaded, no tokenizer: the inputs are random token ids), in bf16 on CUDA, and saved. ModelBay's `bnb` method
(`engine/optimization/methods/bnb.py`, as a job on the gpu queue applies it: `BitsAndBytesConfig`, loaded on the GPU,
saved at once) makes the 8-bit and the nf4 (double quantization, bf16 compute) checkpoints; each is then loaded from
its folder as a person's `Try it` would, and measured beside the bf16 parent:

- memory: `model.get_memory_footprint()` (parameters and buffers) and the peak of `torch.cuda.max_memory_allocated`
  while loading and while decoding (reset before each model; the CUDA context is not counted);
- logit error against bf16 on the same random tokens (BATCH x SEQ): mean absolute difference of the logits (and over
  the bf16 logits' standard deviation), mean KL(bf16 || variant) of the next-token distributions, and top-1
  agreement. With random weights the logits are nearly flat, so these say how much the quantization moves the
  outputs, not what it would cost a trained model in perplexity (bench/optimize.py measures that on a trained one);
- decode tokens/s: greedy, batch 1, a PROMPT-token prompt, NEW_TOKENS tokens with the KV cache (CUDA synchronised at
  the marks); the first round warms up, the median of ROUNDS more; and the time to first token.

Prints a line per model, then a final JSON line: {"gpu", "torch", "transformers", "bitsandbytes", "model",
"parameters", "models": {"bf16" | "int8" | "nf4": {"footprint_gib", "peak_load_gib", "peak_decode_gib", "load_s",
"tokens_per_s", "ttft_ms", "make_s", "logits_mean_abs", "logits_rel", "kl_mean", "top1_agreement"}}, "ratios":
{"int8" | "nf4": {"footprint", "tokens_per_s"}}}. A variant that fails is reported with its error and the check goes
on.

On the lent H200 (its image has torch, transformers, accelerate, safetensors; see /work/.library/device/KINDS.md),
bitsandbytes travels as a wheel (the device README's `pip download` line, `--python-version 3.12`); then
`python3 -m pip install --target /tmp/site .whl/bitsandbytes-*.whl && PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 bench/optimize_gpu.py` (about 2-3 minutes).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LLAMA_3_2_1B = {
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True, "bos_token_id": 128000,
    "eos_token_id": 128001,
}
VARIANTS = {  # name: the bnb method's settings
    "int8": {"bits": 8},
    "nf4": {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
}
SEED = 0
BATCH, SEQ = 4, 256  # random tokens the logits are compared on
PROMPT, NEW_TOKENS = 64, 128
ROUNDS = 3  # decode rounds after a warm-up
GIB = 2**30


def _refusal() -> str | None:
    """Why this check cannot run here (no torch, no CUDA, no bitsandbytes), or None."""
    if importlib.util.find_spec("torch") is None:
        return "needs CUDA: torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return (f"needs CUDA: no CUDA device here (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda or 'none'}); run it on a machine with an NVIDIA GPU, such as the device tool's")
    if importlib.util.find_spec("bitsandbytes") is None:
        return "needs bitsandbytes: carry its wheel to the GPU machine (this script's docstring says how)"
    return None


class _GpuWork:
    """The `Work` the bnb method gets from a job on the gpu queue: CUDA, progress printed, no calibration."""

    device = "cuda"

    def progress(self, fraction: float, message: str) -> None:
        print(f"  {fraction:4.0%} {message}", flush=True)

    def calibration(self, n: int, length: int) -> list[list[int]]:
        return []


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def _gib(n: float) -> float:
    return round(n / GIB, 3)


def _build(folder: Path) -> int:
    """Write the Llama-3.2-1B-shaped model with random bf16 weights into folder; its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    with torch.device("cuda"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_3_2_1B, dtype="bfloat16"))
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    _free()
    return parameters


def _load(folder: Path) -> tuple[Any, dict[str, float]]:
    """Load a folder onto the GPU as `Try it` would: the model and its load figures."""
    import torch
    from transformers import AutoModelForCausalLM

    _free()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", device_map={"": 0}).eval()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - started
    return model, {"load_s": round(load_s, 2), "footprint_gib": _gib(model.get_memory_footprint()),
                   "peak_load_gib": _gib(torch.cuda.max_memory_allocated() - before)}


def _decode(model: Any, prompt: Any) -> dict[str, float]:
    """Greedy decoding with the KV cache, batch 1: median tokens/s after the first token and time to first token."""
    import torch

    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    rates, ttfts = [], []
    with torch.inference_mode():
        for _ in range(ROUNDS + 1):
            torch.cuda.synchronize()
            started = time.perf_counter()
            out = model(input_ids=prompt, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            first = time.perf_counter()
            for _ in range(NEW_TOKENS - 1):
                out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            ended = time.perf_counter()
            ttfts.append((first - started) * 1000)
            rates.append((NEW_TOKENS - 1) / (ended - first))
    return {"tokens_per_s": round(statistics.median(rates[1:]), 1), "ttft_ms": round(statistics.median(ttfts[1:]), 2),
            "peak_decode_gib": _gib(torch.cuda.max_memory_allocated() - before)}


def _logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits.float()


def _error(reference: Any, logits: Any) -> dict[str, float]:
    """Logit error of a variant against the bf16 reference, both (batch, seq, vocab) float32 on the GPU."""
    import torch

    diff = (logits - reference).abs().mean().item()
    ref_log, var_log = torch.log_softmax(reference, -1), torch.log_softmax(logits, -1)
    kl = (ref_log.exp() * (ref_log - var_log)).sum(-1)  # per position, nats
    top1 = (reference.argmax(-1) == logits.argmax(-1)).float().mean().item()
    return {"logits_mean_abs": round(diff, 6), "logits_rel": round(diff / reference.std().item(), 5),
            "kl_mean": float(f"{kl.mean().item():.4g}"), "kl_p99": float(f"{kl.flatten().quantile(0.99).item():.4g}"),
            "top1_agreement": round(top1, 4)}


def _measure(folder: Path, ids: Any, prompt: Any, reference: Any | None) -> tuple[dict[str, Any], Any]:
    """Load one folder and measure it; (figures, its logits when it is the reference)."""
    model, figures = _load(folder)
    logits = _logits(model, ids)
    if reference is not None:
        figures |= _error(reference, logits)
        logits = None
    figures |= _decode(model, prompt)
    del model
    _free()
    return figures, logits


def main() -> dict[str, Any]:
    """Build the model, make the bnb variants with ModelBay's method, and measure each beside bf16."""
    import bitsandbytes
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    from modelbay.engine.optimization.methods.bnb import BitsAndBytes

    hf_logging.disable_progress_bar()
    models: dict[str, dict[str, Any]] = {}
    generator = torch.Generator(device="cuda").manual_seed(SEED)
    ids = torch.randint(0, LLAMA_3_2_1B["vocab_size"], (BATCH, SEQ), device="cuda", generator=generator)
    prompt = ids[:1, :PROMPT]
    with tempfile.TemporaryDirectory(prefix="modelbay-bench-optimize-gpu-") as tmp:
        parent = Path(tmp) / "bf16"
        started = time.perf_counter()
        parameters = _build(parent)
        print(f"built {parameters / 1e9:.2f}B parameters in {time.perf_counter() - started:.1f} s", flush=True)
        models["bf16"], reference = _measure(parent, ids, prompt, None)
        print(f"bf16: {json.dumps(models['bf16'])}", flush=True)
        method = BitsAndBytes()
        for name, settings in VARIANTS.items():
            out = Path(tmp) / name
            out.mkdir()
            try:
                started = time.perf_counter()
                applied = method.apply(parent, out, method.check(settings), _GpuWork())
                make_s = time.perf_counter() - started
                _free()
                figures, _ = _measure(out, ids, prompt, reference)
                models[name] = {"make_s": round(make_s, 1), "weights_gib": _gib(applied.facts["weights_bytes"]),
                                **figures}
            except Exception as exc:  # noqa: BLE001 - one failed variant says why and the check goes on
                models[name] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
                _free()
            print(f"{name}: {json.dumps(models[name])}", flush=True)
    base = models["bf16"]
    ratios = {name: {"footprint": round(models[name]["footprint_gib"] / base["footprint_gib"], 3),
                     "tokens_per_s": round(models[name]["tokens_per_s"] / base["tokens_per_s"], 3)}
              for name in VARIANTS if "failed" not in models[name]}
    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "transformers": transformers.__version__,
            "bitsandbytes": bitsandbytes.__version__, "model": "Llama-3.2-1B shape, random weights",
            "parameters": parameters, "tokens": [BATCH, SEQ], "decode": {"prompt": PROMPT, "new_tokens": NEW_TOKENS},
            "models": models, "ratios": ratios}


if __name__ == "__main__":
    refusal = _refusal()
    if refusal:
        sys.exit(f"bench/optimize_gpu.py: {refusal}.")
    print(json.dumps(main()))
