"""Measuring the tiny chat model in a child process: against itself, against perturbed and quantized copies of it.

The held-out text is chat rows like the ones the model was pre-trained on (another seed), rendered with its chat
template, so its perplexity means something. Every figure is checked for sense, never for a value or a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelbay.engine.datasets.examples import Example, Message
from modelbay.engine.datasets.tokens import load_tokenizer
from modelbay.engine.errors import OptimizationFailed
from modelbay.engine.optimization import heldout
from modelbay.engine.optimization.compare import Budget, Comparison, verdict
from modelbay.engine.optimization.measure import (
    KlStats,
    Measurement,
    folder_size,
    measure,
)
from tests.support.tinymodel import chat_corpus

LENGTH, MAX_TOKENS = 128, 1536
QUICK = {"speed_rounds": 1, "new_tokens": 8}


def _copy(source: Path, out: Path, change: Callable[[Any], None] | None = None, **load: Any) -> Path:
    """Load the model (with `load`'s from_pretrained arguments), change its weights, save it with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, **load)
    if change is not None:
        with torch.no_grad():
            change(model)
    model.save_pretrained(out)  # before any forward pass: a 4-bit model run on CPU saves other weights (NOTES-ML)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def _noise(scale: float, seed: int = 0) -> Callable[[Any], None]:
    """Gaussian noise of `scale` times each decoder weight matrix's standard deviation."""
    def change(model: Any) -> None:
        import torch

        generator = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if ".layers." in name and p.ndim == 2:
                p.add_(torch.randn(p.shape, generator=generator) * p.std() * scale)
    return change


@pytest.fixture(scope="module")
def windows(tiny_chat_model: Path) -> list[list[int]]:
    """Held-out windows of chat rows the model has not seen (another seed of its corpus)."""
    rows = [Example(i + 1, messages=tuple(Message(m["role"], m["content"]) for m in chat))
            for i, chat in enumerate(chat_corpus(seed=12345)[:200])]
    texts = heldout.dataset_texts(rows, load_tokenizer(tiny_chat_model))
    return heldout.windows(tiny_chat_model, texts, LENGTH, MAX_TOKENS)


@pytest.fixture(scope="module")
def parent(tiny_chat_model: Path, windows: list[list[int]], tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Measurement, Path]:
    """The tiny chat model measured, its log-probs saved for its variants."""
    saved = tmp_path_factory.mktemp("parent") / "logprobs.npz"
    measurement, kl = measure(tiny_chat_model, "transformers", windows, logprobs_out=saved, **QUICK)
    assert kl is None
    return measurement, saved


def _against(parent: tuple[Measurement, Path], folder: Path, windows: list[list[int]]) -> Comparison:
    return _against_format(parent, folder, "transformers", windows)


def _against_format(parent: tuple[Measurement, Path], folder: Path, fmt: str,
                    windows: list[list[int]]) -> Comparison:
    measurement, kl = measure(folder, fmt, windows, reference=parent[1], **QUICK)
    assert kl is not None
    return Comparison(parent[0], measurement, kl)


def test_the_parent_is_measured_with_every_figure(parent: tuple[Measurement, Path], tiny_chat_model: Path,
                                                  windows: list[list[int]]) -> None:
    m = parent[0]
    assert m.format == "transformers" and m.device == "cpu" and m.threads >= 1
    assert m.tokens == sum(len(w) - 1 for w in windows)
    vocab = load_tokenizer(tiny_chat_model).vocab_size
    assert 1 < m.perplexity < vocab / 4  # learned the kind of text: far better than guessing
    assert 0 < m.perplexity_se < m.perplexity / 10
    assert m.size_bytes == folder_size(tiny_chat_model)
    assert m.load_s > 0 and m.peak_load_bytes > 0
    assert m.ttft_ms is not None and m.ttft_ms > 0 and m.tokens_per_s is not None and m.tokens_per_s > 0
    assert m.sparsity is not None and 0 <= m.sparsity < 0.01
    assert m.parameters is not None and m.parameters > 0


def test_the_model_against_itself_agrees_exactly(parent: tuple[Measurement, Path], tiny_chat_model: Path,
                                                 windows: list[list[int]]) -> None:
    comparison = _against(parent, tiny_chat_model, windows)
    kl = comparison.kl
    assert kl is not None
    assert kl.kl_mean == pytest.approx(0, abs=1e-9) and kl.kl_p99 == pytest.approx(0, abs=1e-9)
    assert kl.top1_agreement == 1.0 and kl.tokens == parent[0].tokens
    assert comparison.ppl_ratio == pytest.approx(1) and comparison.size_ratio == 1
    assert verdict(comparison, Budget.of("16-bit")).label == "within budget"


@pytest.mark.slow
def test_a_noisier_copy_drifts_further_than_a_half_precision_one(parent: tuple[Measurement, Path],
                                                                 tiny_chat_model: Path, windows: list[list[int]],
                                                                 tmp_path: Path) -> None:
    import torch

    half = _against(parent, _copy(tiny_chat_model, tmp_path / "fp16", dtype=torch.float16), windows)
    noisy = _against(parent, _copy(tiny_chat_model, tmp_path / "noisy", _noise(0.3)), windows)
    assert half.kl is not None and noisy.kl is not None
    assert 0 <= half.kl.kl_mean < noisy.kl.kl_mean
    assert half.kl.top1_agreement >= noisy.kl.top1_agreement
    assert half.size_ratio is not None and half.size_ratio < 0.6  # fp32 -> fp16 weights, the same config files
    assert noisy.ppl_ratio > half.ppl_ratio
    assert noisy.kl.kl_p99 >= noisy.kl.kl_mean and noisy.kl.kl_se > 0
    # The budget verdict follows the figures: the noisy copy is far past a 16-bit budget.
    assert verdict(noisy, Budget.of("16-bit")).label == "over budget"


@pytest.mark.slow
def test_8_bit_stays_closer_to_the_parent_than_4_bit(parent: tuple[Measurement, Path], tiny_chat_model: Path,
                                                     windows: list[list[int]], tmp_path: Path) -> None:
    from transformers import BitsAndBytesConfig

    int8 = _against(parent, _copy(tiny_chat_model, tmp_path / "int8",
                                  quantization_config=BitsAndBytesConfig(load_in_8bit=True)), windows)
    nf4 = _against(parent, _copy(tiny_chat_model, tmp_path / "nf4", quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4")), windows)
    assert int8.kl is not None and nf4.kl is not None
    assert int8.kl.kl_mean < nf4.kl.kl_mean
    assert int8.variant.sparsity is None and nf4.variant.sparsity is None  # quantized: not a float zero count
    assert int8.size_ratio is not None and nf4.size_ratio is not None and nf4.size_ratio < int8.size_ratio < 1


class _Work:
    """What an optimization method gets from a job, for calling the ONNX export directly: no progress, no cancel."""

    device = "cpu"

    def __init__(self, windows: list[list[int]]) -> None:
        self.windows = windows

    def progress(self, fraction: float, message: str) -> None:
        """Nothing to report to."""

    def calibration(self, n: int, length: int) -> list[list[int]]:
        """The first held-out windows: calibration and held-out apart does not matter for dynamic int8."""
        return [w[:length] for w in self.windows[:n]]


@pytest.mark.slow
def test_an_onnx_int8_export_is_measured_against_its_parent(parent: tuple[Measurement, Path], tiny_chat_model: Path,
                                                             windows: list[list[int]], tmp_path: Path) -> None:
    from modelbay.engine.optimization.methods.onnx import export

    out = tmp_path / "onnx"
    out.mkdir()
    export(tiny_chat_model, out, int8="dynamic", work=_Work(windows))
    comparison = _against_format(parent, out, "onnx", windows)
    kl, v = comparison.kl, comparison.variant
    assert kl is not None and v.format == "onnx" and v.sparsity is None
    assert 0 < kl.kl_mean < 0.1 and kl.top1_agreement > 0.9
    assert comparison.ppl_ratio == pytest.approx(1, abs=0.05)
    assert v.tokens_per_s is not None and v.ttft_ms is not None and v.threads == parent[0].threads
    assert v.size_bytes < folder_size(out)  # the int8 graph it serves, not the fp32 one beside it


def test_a_reference_for_other_tokens_is_refused(parent: tuple[Measurement, Path], tiny_chat_model: Path,
                                                 windows: list[list[int]]) -> None:
    with pytest.raises(OptimizationFailed, match="other held-out tokens"):
        measure(tiny_chat_model, "transformers", windows[1:], reference=parent[1], speed_rounds=0)


class _Canceled(Exception):
    """Stands for JobCanceled, raised by a progress callback."""


def _measuring_children() -> list[Any]:
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "modelbay.engine.optimization.measure" in " ".join(p.cmdline())]


def test_a_progress_callback_that_raises_stops_the_measurement(tiny_chat_model: Path,
                                                                windows: list[list[int]]) -> None:
    seen: list[tuple[float, str]] = []

    def progress(fraction: float, message: str) -> None:
        seen.append((fraction, message))
        raise _Canceled

    with pytest.raises(_Canceled):
        measure(tiny_chat_model, "transformers", windows, speed_rounds=0, progress=progress)
    assert seen == [(0.0, "loading")]
    assert not _measuring_children()


def test_a_cancel_check_that_raises_stops_the_measurement_while_the_child_is_quiet(tiny_chat_model: Path,
                                                                                   windows: list[list[int]]) -> None:
    calls = []

    def cancel() -> None:
        calls.append(1)
        if len(calls) > 1:  # the child is still importing torch: no progress line has come yet
            raise _Canceled

    with pytest.raises(_Canceled):
        measure(tiny_chat_model, "transformers", windows, speed_rounds=0, cancel=cancel)
    assert not _measuring_children()


def test_kl_stats_and_measurements_read_back_from_their_dicts(parent: tuple[Measurement, Path]) -> None:
    assert Measurement.from_dict(parent[0].to_dict()) == parent[0]
    stats = KlStats(0.1, 0.01, 0.5, 0.9, 0.01, 100, 0.02, 0.003)
    assert KlStats.from_dict(stats.to_dict()) == stats
