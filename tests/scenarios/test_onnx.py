"""ONNX export of the tiny chat model with its KV cache: the layout, logits against torch (fp32 and int8), greedy
generation against torch's, external data, a refused model, a canceled export, and the onnx backend answering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelbay.engine.errors import (
    IncompleteModel,
    JobCanceled,
    OptimizationConfigInvalid,
    OptimizationFailed,
)
from modelbay.engine.inference.backends.base import BACKENDS, Finished, Generation
from modelbay.engine.inference.backends.onnx import OnnxBackend
from modelbay.engine.installs.loadable import (
    ONNX_MANIFEST,
    ONNX_MODEL,
    ONNX_QUANTIZED,
    check_onnx,
)
from modelbay.engine.optimization.heldout import default_texts, windows
from modelbay.engine.optimization.methods.onnx import (
    FP32_TOLERANCE,
    INT8_TOLERANCE,
    OnnxExport,
    export,
)
from modelbay.engine.optimization.onnxmodel import OnnxCausalLM

INT8_TOP1 = 0.8  # next-token agreement of int8 with fp32 on the pretrained tiny model, at least
QUESTION = [{"role": "user", "content": "What color is the sky?"}]


class _Work:
    """What a job hands a method: progress (canceled at `cancel_at`, like a cancel seen by the job) and calibration
    windows of the shipped held-out text."""

    device = "cpu"

    def __init__(self, model: Path, cancel_at: float | None = None) -> None:
        self.model = model
        self.cancel_at = cancel_at
        self.seen: list[tuple[float, str]] = []

    def progress(self, fraction: float, message: str) -> None:
        self.seen.append((fraction, message))
        if self.cancel_at is not None and fraction >= self.cancel_at:
            raise JobCanceled()

    def calibration(self, n: int, length: int) -> list[list[int]]:
        return windows(self.model, default_texts(), length, n * length)


@pytest.fixture(scope="module")
def exported(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The tiny chat model exported with dynamic int8 (both graphs), and the export's facts."""
    out = tmp_path_factory.mktemp("onnx")
    applied = OnnxExport().apply(tiny_chat_model, out, OnnxExport().check({"int8": True}), _Work(tiny_chat_model))
    return out, applied.facts


def _prompt(folder: Path) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return list(tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)["input_ids"])


def test_settings_are_checked_in_one_line() -> None:
    method = OnnxExport()
    assert method.check({}) == {"int8": False, "opset": 18}
    assert method.check({"int8": "true"})["int8"] == "dynamic"
    assert method.suffix(method.check({"int8": True})) == "onnx-int8"
    assert method.needs(method.check({"int8": "static"})).calibration
    assert method.needs({}).output == "onnx"
    for bad in ({"int8": "int4"}, {"opset": 9}, {"bits": 8}):
        with pytest.raises(OptimizationConfigInvalid) as refused:
            method.check(bad)
        assert "\n" not in str(refused.value)


def test_the_export_writes_the_web_and_transformers_js_layout(exported: tuple[Path, dict]) -> None:
    out, facts = exported
    manifest = check_onnx(out, "tiny-onnx")
    assert manifest["file"] == ONNX_QUANTIZED
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", ONNX_MODEL,
                 ONNX_QUANTIZED, "index.html", "modelbay-onnx.js"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.safetensors"))
    model = OnnxCausalLM(out, file=ONNX_MODEL)
    inputs = {i.name: i.shape for i in model.session.get_inputs()}
    outputs = {o.name: o.shape for o in model.session.get_outputs()}
    assert list(inputs) == manifest["inputs"] and list(outputs) == manifest["outputs"]
    assert inputs["past_key_values.0.key"] == ["batch_size", manifest["num_kv_heads"], "past_sequence_length",
                                               manifest["head_dim"]]
    assert inputs["input_ids"] == ["batch_size", "sequence_length"]
    assert facts["int8_bytes"] < facts["onnx_bytes"] / 2
    assert facts["logits_max_abs_diff"] == manifest["check"][ONNX_MODEL]["max_abs_diff"]


def test_fp32_logits_match_torch_with_and_without_the_cache(exported: tuple[Path, dict], tiny_chat_model: Path) -> None:
    out, facts = exported
    prompt = _prompt(tiny_chat_model)
    reference = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    with torch.inference_mode():
        expected = reference(torch.tensor([prompt])).logits.numpy()
    model = OnnxCausalLM(out, file=ONNX_MODEL, threads=2)
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(model.logits(np.asarray([prompt])) - expected).max() <= FP32_TOLERANCE * scale
    first, past = model.forward(np.asarray([prompt[:5]]))
    rest, _ = model.forward(np.asarray([prompt[5:]]), past)
    assert np.abs(np.concatenate([first, rest], axis=1) - expected).max() <= FP32_TOLERANCE * scale
    assert facts["logits_max_abs_diff"] <= FP32_TOLERANCE * scale and facts["top1_agreement"] == 1.0


def test_int8_logits_are_close_to_fp32(exported: tuple[Path, dict], tiny_chat_model: Path) -> None:
    out, facts = exported
    prompt = np.asarray([_prompt(tiny_chat_model)])
    fp32 = OnnxCausalLM(out, file=ONNX_MODEL).logits(prompt)
    int8 = OnnxCausalLM(out).logits(prompt)
    assert np.abs(int8 - fp32).mean() <= INT8_TOLERANCE * fp32.std()
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= INT8_TOP1
    assert 0 < facts["int8_logits_max_abs_diff"] and facts["int8_top1_agreement"] >= INT8_TOP1
    assert facts["logits_max_abs_diff"] < facts["int8_logits_mean_abs_diff"]


def test_greedy_generation_with_the_cache_matches_torch(exported: tuple[Path, dict], tiny_chat_model: Path) -> None:
    out, _ = exported
    prompt = _prompt(tiny_chat_model)
    reference = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    with torch.inference_mode():
        expected = reference.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt):]
    eos = set(json.loads((out / ONNX_MANIFEST).read_text())["eos_token_ids"])
    assert list(OnnxCausalLM(out, file=ONNX_MODEL).generate(prompt, 24, eos=eos)) == expected.tolist()


def test_weights_go_to_external_data_past_the_threshold(tiny_chat_model: Path, tmp_path: Path) -> None:
    applied = export(tiny_chat_model, tmp_path, work=_Work(tiny_chat_model), external_data_bytes=1024)
    manifest = check_onnx(tmp_path, "tiny-onnx")
    assert applied.facts["external_data"] and manifest["external_data"] == ["onnx/model.onnx_data"]
    assert (tmp_path / "onnx/model.onnx").stat().st_size < (tmp_path / "onnx/model.onnx_data").stat().st_size
    (tmp_path / "onnx/model.onnx_data").unlink()
    with pytest.raises(IncompleteModel, match="model.onnx_data"):
        check_onnx(tmp_path, "tiny-onnx")


@pytest.mark.slow
def test_static_int8_calibrates_on_the_windows(tiny_chat_model: Path, tmp_path: Path) -> None:
    applied = OnnxExport().apply(tiny_chat_model, tmp_path, OnnxExport().check({"int8": "static"}),
                                 _Work(tiny_chat_model))
    assert applied.facts["int8"] == "static" and applied.facts["int8_top1_agreement"] >= INT8_TOP1
    prompt = _prompt(tiny_chat_model)
    assert list(OnnxCausalLM(tmp_path).generate(prompt, 1)) == list(
        OnnxCausalLM(tmp_path, file=ONNX_MODEL).generate(prompt, 1))


def test_a_model_the_export_cannot_take_is_refused_and_nothing_is_kept(tiny_chat_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "sliding"
    shutil.copytree(tiny_chat_model, source)
    config = json.loads((source / "config.json").read_text())
    config.update(layer_types=["sliding_attention", "full_attention"], sliding_window=16)
    (source / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OptimizationFailed, match="sliding-window"):
        export(source, out, work=_Work(source))
    assert not list(out.iterdir())


def test_a_canceled_export_keeps_nothing(tiny_chat_model: Path, tmp_path: Path) -> None:
    with pytest.raises(JobCanceled):
        export(tiny_chat_model, tmp_path, int8="dynamic", work=_Work(tiny_chat_model, cancel_at=0.5))
    assert not list(tmp_path.iterdir())


def test_the_onnx_backend_streams_an_answer(exported: tuple[Path, dict], tiny_chat_model: Path) -> None:
    out, _ = exported
    assert BACKENDS["onnx"] is OnnxBackend
    backend = OnnxBackend(out, label="tiny-chat-onnx-int8")
    tokenizer = AutoTokenizer.from_pretrained(out)
    eos = set(json.loads((out / ONNX_MANIFEST).read_text())["eos_token_ids"])
    tokens = list(OnnxCausalLM(out).generate(_prompt(tiny_chat_model), 40, eos=eos))
    *pieces, finished = backend.stream(QUESTION, Generation(max_tokens=40, temperature=0.0))
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == tokenizer.decode(tokens, skip_special_tokens=True)
    assert finished == Finished(len(_prompt(tiny_chat_model)), len(tokens), "stop")
    *_cut, finished = backend.stream(QUESTION, Generation(max_tokens=2, temperature=0.0))
    assert finished.reason == "length" and finished.output_tokens == 2
    stop = pieces[-1].strip() or pieces[0].strip()
    *stopped, _ = backend.stream(QUESTION, Generation(max_tokens=40, temperature=0.0, stop=(stop,)))
    assert stop not in "".join(stopped)
    sampled = [p for p in backend.stream(QUESTION, Generation(max_tokens=8, temperature=0.9, top_p=0.9))
               if isinstance(p, str)]
    assert all(isinstance(p, str) for p in sampled)
    backend.close()
