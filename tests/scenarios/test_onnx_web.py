"""The ONNX export runs in a web page: headless Chromium with npm's onnxruntime-web (wasm) chooses the same next
tokens as onnxruntime in Python on the same prompt, for the fp32 and the int8 graph (weights in external data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from modelbay.engine.installs.loadable import ONNX_MANIFEST, ONNX_MODEL, ONNX_QUANTIZED
from modelbay.engine.optimization.methods.onnx import export
from modelbay.engine.optimization.onnxmodel import OnnxCausalLM
from tests.support.browser import PageServer, open_page, ort_web_dist

NEW_TOKENS = 24


class _Work:
    device = "cpu"

    def progress(self, fraction: float, message: str) -> None:
        pass

    def calibration(self, n: int, length: int) -> list[list[int]]:
        return []


@pytest.fixture(scope="module")
def exported(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat model exported with dynamic int8, its weights in external data (a forced threshold), as a
    model over the protobuf limit has them."""
    out = tmp_path_factory.mktemp("onnx-web")
    export(tiny_chat_model, out, int8="dynamic", work=_Work(), external_data_bytes=1024)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("graph", [ONNX_MODEL, ONNX_QUANTIZED])
def test_the_browser_chooses_the_same_tokens_as_onnxruntime(graph: str, exported: Path) -> None:
    tmp_path = exported
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    prompt = list(tokenizer.apply_chat_template([{"role": "user", "content": "Tell me about water."}],
                                                add_generation_prompt=True, tokenize=True)["input_ids"])
    eos = set(json.loads((tmp_path / ONNX_MANIFEST).read_text())["eos_token_ids"])
    expected = list(OnnxCausalLM(tmp_path, file=graph).generate(prompt, NEW_TOKENS, eos=eos))
    with PageServer(tmp_path, ort_web_dist()) as server:
        result = open_page(server, f"ids={','.join(map(str, prompt))}&n={NEW_TOKENS}&graph={graph}&post=/result")
    assert result["error"] is None, result["error"]
    assert result["tokens"] == expected
    assert len(expected) > 3
