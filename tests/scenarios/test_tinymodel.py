"""Tests for the tiny Llama chat model factory that the rest of the suite builds on."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import huggingface_hub
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BatchEncoding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tests.support import tinymodel
from tests.support.tinymodel import (  # noqa: F401  (fixtures, imported so this module runs without conftest)
    CHAT_MODEL_SPEC,
    TinyModelSpec,
    build_tiny_model,
    cached_tiny_model,
    chat_batch,
    chat_corpus,
    tiny_chat_model,
    tiny_model,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MAX_NEW_TOKENS = 64
MODEL_FILES = {
    "model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forbids Hub access for the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import, so the env change alone comes too late.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _load(path: pathlib.Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads a model folder the way production code does."""
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _heldout_conversations() -> list[list[dict[str, str]]]:
    """Returns conversations from another seed that never occur in the training corpus."""
    seen = {repr(c) for c in chat_corpus(CHAT_MODEL_SPEC.seed)}
    return [c for c in chat_corpus(CHAT_MODEL_SPEC.seed + 1) if repr(c) not in seen]


def _mean_loss(path: pathlib.Path, conversations: list[list[dict[str, str]]]) -> float:
    """Returns the model's mean next-token loss over the conversations."""
    model, tokenizer = _load(path)
    with torch.no_grad():
        return model(**chat_batch(tokenizer, conversations)).loss.item()


def test_folder_holds_only_safetensors_weights(tiny_model: pathlib.Path) -> None:
    """The folder has the expected files and no pickle-based weights."""
    names = {p.name for p in tiny_model.iterdir()}
    assert MODEL_FILES <= names
    assert not [n for n in names if n.endswith(PICKLE_SUFFIXES)]


def test_loads_offline_with_auto_classes(tiny_model: pathlib.Path, offline: None) -> None:
    """The folder loads with the Auto classes offline and fits vLLM's CPU attention."""
    model, tokenizer = _load(tiny_model)
    config = model.config
    assert config.model_type == "llama"
    assert config.hidden_size // config.num_attention_heads >= 32
    assert config.head_dim >= 32
    assert config.vocab_size == len(tokenizer)
    assert not config.tie_word_embeddings
    assert model.dtype == torch.float32
    assert tokenizer.eos_token == "<|im_end|>"
    assert config.eos_token_id == tokenizer.eos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert config.bos_token_id is not None
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id


def test_chat_template_renders_chatml(tiny_model: pathlib.Path) -> None:
    """The chat template renders ChatML and appends the assistant prompt on request."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    assert isinstance(encoded, BatchEncoding)
    assert encoded["input_ids"].shape[0] == 1
    assert tokenizer.decode(encoded["input_ids"][0]) == text


@pytest.mark.parametrize(
    "text",
    [
        "What color is the sky?",
        "  leading spaces,\ttabs\nand newlines  ",
        "naïve café — 日本語, Ελληνικά, emoji 🚀👍🏽",
        "<|im_start|>user\nhi<|im_end|>",
    ],
)
def test_tokenizer_round_trips_text(tiny_model: pathlib.Path, text: str) -> None:
    """Byte-level BPE encodes and decodes any text, unicode included, losslessly."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_forward_returns_vocab_logits(tiny_model: pathlib.Path) -> None:
    """A padded batch forward pass yields one logit per vocabulary entry per position."""
    model, tokenizer = _load(tiny_model)
    batch = tokenizer(["Hello!", "Where is the little fish?"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], model.config.vocab_size)


def test_same_spec_builds_identical_files(tmp_path: pathlib.Path) -> None:
    """Building a spec twice gives byte-identical weights and tokenizer, which the cache relies on."""
    first, second = (build_tiny_model(tmp_path / name) for name in ("a", "b"))
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


@pytest.mark.slow
def test_pretraining_lowers_heldout_loss(tiny_model: pathlib.Path, tiny_chat_model: pathlib.Path) -> None:
    """Pretraining drives held-out conversation loss far below the untrained model's."""
    heldout = _heldout_conversations()
    assert len(heldout) > 50
    untrained, trained = _mean_loss(tiny_model, heldout), _mean_loss(tiny_chat_model, heldout)
    print(f"held-out loss over {len(heldout)} conversations: untrained {untrained:.3f}, pretrained {trained:.3f}")
    assert trained < untrained / 4
    assert trained < 1.0


@pytest.mark.slow
def test_pretrained_generation_stops_at_im_end(tiny_chat_model: pathlib.Path) -> None:
    """Greedy chat generation answers and stops by itself on <|im_end|>."""
    model, tokenizer = _load(tiny_chat_model)
    messages = [{"role": "user", "content": "What color is the sky?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_tokens = output[0, prompt["input_ids"].shape[1]:]
    answer = tokenizer.decode(new_tokens, skip_special_tokens=True)
    print(f"sample generation: {tokenizer.decode(new_tokens)!r}")
    assert len(new_tokens) < MAX_NEW_TOKENS
    assert new_tokens[-1].item() == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert answer.strip()


class _CountingBuild:
    """Wraps build_tiny_model, counting calls and optionally simulating a racing process."""

    def __init__(self, race_into: pathlib.Path | None = None) -> None:
        self.calls = 0
        self.race_into = race_into

    def __call__(self, out_dir: pathlib.Path, spec: TinyModelSpec = TinyModelSpec()) -> pathlib.Path:
        """Builds into out_dir like the real builder and records the call."""
        self.calls += 1
        build_tiny_model(out_dir, spec)
        if self.race_into is not None:
            # The other process finishes first, so our rename finds the final folder already there.
            build_tiny_model(self.race_into, spec)
        return out_dir


def _use_cache_dir(monkeypatch: pytest.MonkeyPatch, cache: pathlib.Path, build: _CountingBuild) -> None:
    """Points the cache at a private folder and swaps in a counting builder."""
    monkeypatch.setenv("MODELBAY_TEST_CACHE", str(cache))
    monkeypatch.setattr(tinymodel, "build_tiny_model", build)


def test_cache_builds_once(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second lookup returns the same folder without rebuilding it."""
    build = _CountingBuild()
    _use_cache_dir(monkeypatch, tmp_path, build)
    first = cached_tiny_model(TinyModelSpec())
    built_at = (first / "model.safetensors").stat().st_mtime_ns
    second = cached_tiny_model(TinyModelSpec())
    assert second == first
    assert build.calls == 1
    assert (second / "model.safetensors").stat().st_mtime_ns == built_at
    assert first.parent == tmp_path and first.name.startswith("tinymodel-")
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_cache_keys_differ_per_spec(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Different specs get different cache folders."""
    _use_cache_dir(monkeypatch, tmp_path, _CountingBuild())
    assert cached_tiny_model(TinyModelSpec()) != cached_tiny_model(TinyModelSpec(num_kv_heads=2))


def test_cache_survives_losing_a_build_race(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When another process installs the folder first, the loser returns it and cleans up its staging copy."""
    final = tmp_path / f"tinymodel-{tinymodel._cache_key(TinyModelSpec())}"
    _use_cache_dir(monkeypatch, tmp_path, _CountingBuild(race_into=final))
    assert cached_tiny_model(TinyModelSpec()) == final
    assert (final / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_builders_at_once_build_once_and_leave_only_the_folder(tmp_path: pathlib.Path) -> None:
    """Those that want the same folder at once (pytest-xdist workers) build it once between them."""
    calls = []

    def build(staging: pathlib.Path) -> None:
        calls.append(staging)
        time.sleep(0.5)  # the others come meanwhile
        (staging / "model.safetensors").write_bytes(b"weights")

    final = tmp_path / "tinymodel-once"
    with ThreadPoolExecutor(4) as pool:  # each opens the lock file on its own, as separate processes do
        built = list(pool.map(lambda _: tinymodel._build_into(final, build), range(4)))
    assert built == [final] * 4 and len(calls) == 1
    assert (final / "model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_cli_builds_model(tmp_path: pathlib.Path) -> None:
    """The module's command line builds a loadable folder."""
    out_dir = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.tinymodel", str(out_dir), "--pretrain-steps", "2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert (out_dir / "model.safetensors").is_file()
    assert AutoTokenizer.from_pretrained(out_dir).eos_token == "<|im_end|>"
