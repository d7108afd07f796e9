"""Measure a model folder: size, load time and memory, speed, perplexity, and KL divergence against its parent.

`measure` runs the measurement in a child process (`python -m modelbay.engine.optimization.measure REQUEST RESULT`,
JSON in and out) so that load time and peak memory are the model's alone (torch and the libraries are imported
before the clock starts), CUDA is touched only there (RQ's worker parent never may), and memory is given back when
it exits. The child reports progress as marked lines on stdout; a `progress` or `cancel` callback that raises
(JobCanceled) kills it.

What is measured, the way llama.cpp's `perplexity` tool reports it (its `--kl-divergence` mode for the KL part):

- perplexity = exp(mean NLL) over every token after the first of each held-out window (one forward pass per window,
  no context carried between windows); its standard error by the delta method, ppl * sd(nll) / sqrt(n).
- against a parent: the parent's measurement saves its next-token log-probabilities (`logprobs_out`); the variant's
  measurement reads them (`reference`) and gives the mean KL(parent || variant) per token with its standard error
  and 99th percentile, the fraction of tokens whose most likely next token is the same ("same top"), and the paired
  mean of ln(PPL ratio), the per-token NLL differences over all scored tokens, with its standard error (a tighter
  error for the ratio than the two perplexities' own, since both models read the same tokens).
  The saved log-probs are capped at `kl_cap_bytes` (256 MiB): float32 when every scored token fits, else float16 for
  as many of the first scored tokens as fit; `KlStats.tokens` says how many were used.
- load: seconds from files to a model ready to run; peak memory growth while loading: the process's peak RSS during
  the load minus its RSS before it (ru_maxrss when the peak was set during the load, else a 2 ms RSS sampler), or
  on CUDA the growth of torch.cuda.max_memory_allocated.
- speed: a PROMPT_TOKENS prompt from the start of the held-out text; time to first token (the prefill and the
  choice of the first token) and decode tokens/s after it (greedy, KV cache reused, `new_tokens` tokens, EOS
  ignored); the first round is a warm-up, the figures are the median of `speed_rounds` more. Threads are set and
  recorded (one per physical core unless given), the same for torch and onnxruntime.
- sparsity: the zero fraction of the 2-D float weights in the decoder layers (`.layers.N.`), None for quantized
  weights; size on disk: every file in the folder (for ONNX, less the graph the manifest does not serve).

The reference file is an uncompressed NumPy .npz (read with allow_pickle=False): `logprobs` (tokens, vocab),
`nll` (scored,) float32 and `targets` (scored,) int32, which must match the variant's held-out tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from modelbay.engine.errors import OptimizationFailed

__all__ = ["FORMATS", "KL_CAP_BYTES", "PROMPT_TOKENS", "KlStats", "Measurement", "folder_size", "measure"]

FORMATS = ("transformers", "onnx")
PROMPT_TOKENS = 64  # prompt length for time to first token
KL_CAP_BYTES = 256 * 2**20  # most bytes of parent log-probs saved for KL
_MARK = "@@modelbay-measure "  # progress lines on the child's stdout start with this; other output is ignored
_SAMPLE_S = 0.002
CANCEL_POLL_S = 0.5  # seconds between calls of measure's cancel()


@dataclass(frozen=True)
class Measurement:
    """What one model folder measured on this machine and text (units in the names: bytes, seconds, ms)."""

    format: str  # "transformers" | "onnx"
    size_bytes: int  # every file in the folder
    load_s: float  # files to a model ready to run
    peak_load_bytes: int  # peak RSS growth (CPU) or peak CUDA allocated growth while loading
    ttft_ms: float | None  # time to first token of a PROMPT_TOKENS prompt (median of rounds); None: not measured
    tokens_per_s: float | None  # decode tokens/s after the first token, greedy (median)
    perplexity: float  # exp(mean NLL) over the scored held-out tokens
    perplexity_se: float  # delta method: perplexity * sd(nll) / sqrt(tokens)
    nll_mean: float  # nats per token
    tokens: int  # scored tokens
    sparsity: float | None  # zero fraction of decoder 2-D weights (None when quantized or not a transformers folder)
    parameters: int | None
    device: str  # "cpu" | "cuda:0 (NVIDIA ...)"
    threads: int
    # The parent's speed from the same child, its rounds alternating with this model's (`measure(speed_against=)`),
    # so that a load on a shared machine slows both alike; None when measured alone.
    parent_ttft_ms: float | None = None
    parent_tokens_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The measurement as a JSON-ready dict (stored in a version's lineage_params)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """Rebuild from `to_dict`'s dict (unknown keys ignored, so older rows still read)."""
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class KlStats:
    """A variant's next-token distributions against its parent's on the same tokens (llama.cpp's KL report)."""

    kl_mean: float  # mean KL(parent || variant) per token, nats
    kl_se: float  # its standard error, sd / sqrt(tokens)
    kl_p99: float  # 99th percentile of the per-token KL
    top1_agreement: float  # fraction of tokens where both pick the same most likely next token
    top1_se: float  # its binomial standard error
    tokens: int  # tokens the KL used (the parent's saved log-probs, capped by size)
    ln_ratio_mean: float  # mean per-token NLL difference (variant - parent) over all scored tokens = ln(PPL ratio)
    ln_ratio_se: float  # its standard error (paired)

    def to_dict(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KlStats:
        """Rebuild from `to_dict`'s dict."""
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


def folder_size(folder: Path, fmt: str = "transformers") -> int:
    """Bytes of every regular file under `folder`; for an ONNX folder, without the graphs its manifest does not run
    (the fp32 `onnx/model.onnx` beside the int8 one it serves), so the size is what serving it needs."""
    folder = Path(folder)
    unused: set[Path] = set()
    if fmt == "onnx":
        from modelbay.engine.installs.loadable import ONNX_DIR, ONNX_MANIFEST

        with contextlib.suppress(OSError, ValueError, KeyError):
            served = folder / json.loads((folder / ONNX_MANIFEST).read_text())["file"]
            for graph in (folder / ONNX_DIR).glob("*.onnx"):
                if graph != served:
                    unused |= {graph, *graph.parent.glob(graph.name + "_data"), *graph.parent.glob(graph.name + ".data")}
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p not in unused)


def measure(folder: Path, fmt: str, windows: Sequence[Sequence[int]], *, reference: Path | None = None,
            logprobs_out: Path | None = None, device: str = "cpu", speed_rounds: int = 3, new_tokens: int = 32,
            threads: int | None = None, kl_cap_bytes: int = KL_CAP_BYTES,
            progress: Callable[[float, str], None] | None = None, cancel: Callable[[], None] | None = None,
            timeout_s: float | None = None, speed_against: tuple[Path, str] | None = None,
            label: str | None = None) -> tuple[Measurement, KlStats | None]:
    """Measure `folder` (format "transformers" or "onnx") on the held-out `windows` in a child process.

    `logprobs_out`: where to save this model's log-probs for its variants' KL; `reference`: a parent's saved file,
    to compare against (KlStats returned, else None). `device` "cpu" or "cuda" (transformers folders; ONNX runs on
    CPU). `speed_rounds` 0 skips the speed figures. `progress(fraction, message)` is called as the child goes, and
    `cancel()` at least every CANCEL_POLL_S; what either raises (JobCanceled) kills the child and propagates.
    `speed_against` (a parent's folder and format) loads the parent too, after this model's own figures, and times
    the two in alternating rounds (`parent_ttft_ms`, `parent_tokens_per_s`): the speed ratio of a variant is then
    measured under the same load, at the cost of holding both models at once. `label` names the model in errors
    (default: the folder's name); no server path is ever part of an error's text.

    Raises:
        ValueError: an unknown format, or no window of at least 2 tokens.
        OptimizationFailed: the child failed (the folder does not load, the reference is for other tokens) or ran
            past `timeout_s`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown model format {fmt!r}: one of {', '.join(FORMATS)}")
    windows = [list(map(int, w)) for w in windows if len(w) >= 2]
    if not windows:
        raise ValueError("no held-out window of at least 2 tokens to measure on")
    request = {"folder": str(folder), "format": fmt, "windows": windows, "device": device,
               "reference": str(reference) if reference else None,
               "logprobs_out": str(logprobs_out) if logprobs_out else None, "speed_rounds": speed_rounds,
               "new_tokens": new_tokens, "threads": threads, "kl_cap_bytes": kl_cap_bytes,
               "speed_against": [str(speed_against[0]), speed_against[1]] if speed_against else None}
    with tempfile.TemporaryDirectory(prefix="modelbay-measure-") as tmp:
        req, res, err = Path(tmp) / "request.json", Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        req.write_text(json.dumps(request))
        result = _run_child(req, res, err, progress, cancel, timeout_s, name=label or Path(folder).name)
    measurement = Measurement.from_dict(result["measurement"])
    kl = KlStats.from_dict(result["kl"]) if result.get("kl") else None
    return measurement, kl


# Absolute paths in a child's error text (a transformers message quoting the folder): shown by their last part only.
_PATHS = re.compile(r"(?<![\w.])/(?:[^\s'\"/:,]+/)+[^\s'\",:)]*")


def _run_child(req: Path, res: Path, err: Path, progress: Callable[[float, str], None] | None,
               cancel: Callable[[], None] | None, timeout_s: float | None, *, name: str) -> dict[str, Any]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    timed_out = False
    with err.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "modelbay.engine.optimization.measure", str(req), str(res)],
                                 stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:  # a thread, so that cancel() is polled while the child is quiet (loading, decoding)
            assert child.stdout is not None
            for line in child.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                if cancel is not None:
                    cancel()
                if timeout_s and time.monotonic() - started > timeout_s:
                    timed_out = True
                    child.kill()
                    break
                try:
                    line = lines.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if line is None:
                    break
                if line.startswith(_MARK) and progress is not None:
                    event = json.loads(line[len(_MARK):])
                    progress(float(event["fraction"]), str(event["message"]))
            child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
    if timed_out:
        reason = f"the measurement ran past {timeout_s:g} s"
    elif res.is_file():
        result = json.loads(res.read_text())
        if "error" not in result:
            return result
        reason = result["error"]
    else:
        tail = err.read_text(errors="replace").strip().splitlines()[-3:]
        reason = f"the measuring process ended with code {child.returncode}: {' / '.join(tail) or 'no output'}"
    raise OptimizationFailed("measurement", name, _PATHS.sub(lambda m: Path(m.group(0)).name or "…", reason))


# --- the child -------------------------------------------------------------------------------------------------

def _say(fraction: float, message: str) -> None:
    print(_MARK + json.dumps({"fraction": round(min(max(fraction, 0.0), 1.0), 4), "message": message}), flush=True)


def _rss() -> int:
    import psutil  # extra: ml

    return psutil.Process().memory_info().rss


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@contextlib.contextmanager
def _peak_rss() -> Iterator[dict[str, int]]:
    """Peak RSS growth over the block: ru_maxrss when the process's peak was set inside it, else sampled."""
    box = {"bytes": 0}
    before, max_before = _rss(), _maxrss()
    sampled = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(_SAMPLE_S):
            sampled[0] = max(sampled[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield box
    finally:
        stop.set()
        sampler.join()
        peak = max(sampled[0], _rss())
        max_after = _maxrss()
        if max_after > max_before:
            peak = max(peak, max_after)
        box["bytes"] = max(0, peak - before)


def _default_threads() -> int:
    import psutil  # extra: ml

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class _Transformers:
    """A transformers folder loaded for measuring: logits and greedy decoding with the KV cache."""

    def __init__(self, folder: Path, device: str, threads: int) -> None:
        import torch  # extra: ml
        import transformers  # noqa: F401 - imported before the clock starts  # extra: ml

        from modelbay.logs import route_transformers_logs

        route_transformers_logs()
        torch.set_num_threads(threads)
        self.torch = torch
        self.device = device
        self.cuda = device.startswith("cuda")

    def prepare(self, folder: Path) -> None:
        """Import what loading this folder will import (the model's class, its quantizer's library), off the clock."""
        from transformers import AutoConfig  # extra: ml
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING  # extra: ml

        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        with contextlib.suppress(KeyError, ValueError):
            MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        quantization = getattr(config, "quantization_config", None) or {}
        method = quantization.get("quant_method") if isinstance(quantization, dict) else None
        if method == "bitsandbytes":
            import bitsandbytes  # noqa: F401  # extra: ml
        if self.cuda:
            self.torch.zeros(1, device=self.device)  # the CUDA context is not the model's memory

    def load(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM  # extra: ml

        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False,
                                                     dtype="auto", device_map=self.device)
        model.eval()
        if self.cuda:
            self.torch.cuda.synchronize()
        self.model = model

    def logits(self, ids: list[int]) -> Any:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=False)
            return out.logits[0].float().cpu().numpy()

    def greedy(self, ids: list[int], n: int) -> Iterator[int]:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=True)
            for i in range(n):
                token = int(out.logits[0, -1].argmax())
                yield token
                if i + 1 < n:
                    out = self.model(input_ids=torch.tensor([[token]], device=self.model.device),
                                     past_key_values=out.past_key_values, use_cache=True)

    def facts(self) -> dict[str, Any]:
        import re

        model, torch = self.model, self.torch
        quantized = getattr(model.config, "quantization_config", None) is not None
        decoder = [p for name, p in model.named_parameters() if re.search(r"\.layers\.\d+\.", name) and p.ndim == 2]
        sparsity = None
        if not quantized and decoder and all(p.is_floating_point() for p in decoder):
            zeros = sum(int((p == 0).sum()) for p in decoder)
            sparsity = zeros / sum(p.numel() for p in decoder)
        where = "cpu"
        if self.cuda:
            index = torch.cuda.current_device()
            where = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        return {"sparsity": sparsity, "parameters": int(model.num_parameters()), "device": where}


class _Onnx:
    """An ONNX folder loaded for measuring (onnxmodel.OnnxCausalLM, CPU)."""

    def __init__(self, folder: Path, device: str, threads: int) -> None:
        import numpy  # noqa: F401 - imported before the clock starts
        import onnxruntime  # noqa: F401  # extra: ml

        self.threads = threads
        self.cuda = False

    def prepare(self, folder: Path) -> None:
        """Import the loader off the clock."""
        from modelbay.engine.optimization.onnxmodel import OnnxCausalLM

        self.loader = OnnxCausalLM

    def load(self, folder: Path) -> None:
        self.model = self.loader(folder, threads=self.threads)

    def logits(self, ids: list[int]) -> Any:
        import numpy as np

        return np.asarray(self.model.logits(np.array([ids], dtype=np.int64))[0], dtype=np.float32)

    def greedy(self, ids: list[int], n: int) -> Iterator[int]:
        return self.model.generate(list(ids), n)

    def facts(self) -> dict[str, Any]:
        return {"sparsity": None, "parameters": None, "device": "cpu"}


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _speed(runners: Sequence[Any], prompt: list[int], rounds: int,
           new_tokens: int) -> list[tuple[float | None, float | None]]:
    """(time to first token in ms, decode tokens/s) of each runner: medians over `rounds` after one warm-up round,
    the runners taking turns within every round, so a change of load on the machine slows each alike."""
    import statistics

    if rounds <= 0 or new_tokens < 1:
        return [(None, None) for _ in runners]
    ttfts: list[list[float]] = [[] for _ in runners]
    rates: list[list[float]] = [[] for _ in runners]
    for round_ in range(rounds + 1):  # the first is a warm-up
        for i, runner in enumerate(runners):
            started = time.perf_counter()
            tokens = runner.greedy(prompt, new_tokens)
            next(tokens)
            first = time.perf_counter()
            rest = sum(1 for _ in tokens)
            ended = time.perf_counter()
            if round_:
                ttfts[i].append((first - started) * 1000)
                if rest and ended > first:
                    rates[i].append(rest / (ended - first))
    return [(statistics.median(t), statistics.median(r) if r else None) for t, r in zip(ttfts, rates, strict=True)]


def _child(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    folder = Path(request["folder"])
    windows: list[list[int]] = request["windows"]
    threads = int(request["threads"] or _default_threads())
    runner = (_Transformers if request["format"] == "transformers" else _Onnx)(folder, request["device"], threads)
    runner.prepare(folder)
    _say(0.0, "loading")
    cuda_before = runner.torch.cuda.memory_allocated() if runner.cuda else 0
    if runner.cuda:
        runner.torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with _peak_rss() as peak:
        runner.load(folder)
    load_s = time.perf_counter() - started
    peak_load = runner.torch.cuda.max_memory_allocated() - cuda_before if runner.cuda else peak["bytes"]

    targets = np.array([t for w in windows for t in w[1:]], dtype=np.int32)
    scored = len(targets)
    ref = None
    if request["reference"]:
        with np.load(request["reference"], allow_pickle=False) as data:
            ref = {key: data[key] for key in ("logprobs", "nll", "targets")}
        if ref["targets"].shape != targets.shape or not np.array_equal(ref["targets"], targets):
            raise ValueError("the parent's saved log-probs are for other held-out tokens than this measurement's")
    nll = np.empty(scored, dtype=np.float32)
    saved = None  # (tokens, vocab) log-probs to save for variants
    kl_parts, top_parts = [], []
    done = 0
    for i, window in enumerate(windows):
        logprobs = _log_softmax(runner.logits(window)[:-1])  # (len - 1, vocab): the next-token distributions
        m = len(window) - 1
        nll[done:done + m] = -logprobs[np.arange(m), window[1:]]
        if request["logprobs_out"]:
            if saved is None:
                saved = _saved_array(scored, logprobs.shape[1], int(request["kl_cap_bytes"]))
            take = min(m, saved.shape[0] - done) if done < saved.shape[0] else 0
            saved[done:done + take] = logprobs[:take]
        if ref is not None and done < ref["logprobs"].shape[0]:
            base = ref["logprobs"][done:done + m].astype(np.float32)
            if base.shape[1] != logprobs.shape[1]:
                raise ValueError(f"the parent's vocabulary has {base.shape[1]} tokens and this model's "
                                 f"{logprobs.shape[1]}")
            mine = logprobs[:len(base)].astype(ref["logprobs"].dtype).astype(np.float32)  # rounded like the parent's
            kl_parts.append(np.sum(np.exp(base) * (base - mine), axis=-1, dtype=np.float64))
            top_parts.append(base.argmax(axis=-1) == mine.argmax(axis=-1))
        done += m
        _say(0.1 + 0.7 * (i + 1) / len(windows), f"perplexity: window {i + 1} of {len(windows)}")

    if request["logprobs_out"]:
        with open(request["logprobs_out"], "wb") as out:  # a file object: np.savez adds no suffix
            np.savez(out, logprobs=saved, nll=nll, targets=targets)
    _say(0.8, "speed")
    prompt = [t for w in windows for t in w][:PROMPT_TOKENS]
    runners = [runner]
    if request.get("speed_against"):
        against, against_format = request["speed_against"]
        parent = (_Transformers if against_format == "transformers" else _Onnx)(Path(against), request["device"],
                                                                                threads)
        parent.prepare(Path(against))
        parent.load(Path(against))
        runners.append(parent)
    speeds = _speed(runners, prompt, int(request["speed_rounds"]), int(request["new_tokens"]))
    (ttft_ms, tokens_per_s), (parent_ttft_ms, parent_tokens_per_s) = speeds[0], speeds[-1] if len(speeds) > 1 \
        else (None, None)

    mean = float(nll.mean())
    sd = float(nll.std(ddof=1)) if scored > 1 else 0.0
    ppl = float(np.exp(mean))
    facts = runner.facts()
    measurement = Measurement(
        format=request["format"], size_bytes=folder_size(folder, request["format"]), load_s=load_s,
        peak_load_bytes=int(peak_load),
        ttft_ms=ttft_ms, tokens_per_s=tokens_per_s, perplexity=ppl, perplexity_se=ppl * sd / np.sqrt(scored),
        nll_mean=mean, tokens=scored, sparsity=facts["sparsity"], parameters=facts["parameters"],
        device=facts["device"], threads=threads, parent_ttft_ms=parent_ttft_ms,
        parent_tokens_per_s=parent_tokens_per_s)
    kl = _kl_stats(kl_parts, top_parts, nll - ref["nll"]) if ref is not None else None
    return {"measurement": measurement.to_dict(), "kl": kl.to_dict() if kl else None}


def _saved_array(scored: int, vocab: int, cap: int) -> Any:
    """Room for the log-probs to save: float32 when all scored tokens fit in `cap` bytes, else float16 for as many
    of the first as fit (at least one)."""
    import numpy as np

    if scored * vocab * 4 <= cap:
        return np.empty((scored, vocab), dtype=np.float32)
    return np.empty((max(1, min(scored, cap // (vocab * 2))), vocab), dtype=np.float16)


def _kl_stats(kl_parts: list[Any], top_parts: list[Any], diff: Any) -> KlStats:
    import numpy as np

    kl = np.concatenate(kl_parts)
    top = np.concatenate(top_parts).astype(np.float64)
    n, scored = len(kl), len(diff)
    agree = float(top.mean())
    return KlStats(
        kl_mean=float(kl.mean()), kl_se=float(kl.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        kl_p99=float(np.percentile(kl, 99)), top1_agreement=agree,
        top1_se=float(np.sqrt(agree * (1 - agree) / (n - 1))) if n > 1 else 0.0, tokens=n,
        ln_ratio_mean=float(diff.mean(dtype=np.float64)),
        ln_ratio_se=float(diff.std(ddof=1, dtype=np.float64) / np.sqrt(scored)) if scored > 1 else 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: measure what REQUEST (JSON) asks and write RESULT (JSON, or {"error": reason})."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m modelbay.engine.optimization.measure REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request = json.loads(Path(args[0]).read_text())
    try:
        result = _child(request)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as one line
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}".strip()[:400]}
    Path(args[1]).write_text(json.dumps(result))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
