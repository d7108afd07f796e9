"""Held-out and calibration windows with the tiny chat model's tokenizer: non-overlapping, capped, apart."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from modelbay.engine.datasets.examples import Example, Message
from modelbay.engine.datasets.tokens import load_tokenizer
from modelbay.engine.optimization import heldout
from tests.support.tinymodel import TinyModelSpec, cached_tiny_model


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The tiny model's tokenizer (ChatML template, `<|im_end|>` as EOS, no BOS)."""
    return load_tokenizer(cached_tiny_model(TinyModelSpec()))


def _positions(windows: list[list[int]], stream: list[int]) -> list[tuple[int, int]]:
    """Where each window lies in the stream (start, end), found by matching in order."""
    spans, start = [], 0
    for window in windows:
        while stream[start:start + len(window)] != window:
            start += 1
            assert start < len(stream), "a window is not a slice of the stream"
        spans.append((start, start + len(window)))
        start += len(window)
    return spans


def test_the_default_text_is_shipped_without_its_header() -> None:
    texts = heldout.default_texts()
    assert len(texts) == 1 and 6_000 < len(texts[0]) < 12_000
    assert not any(line.startswith("#") for line in texts[0].splitlines())
    assert "kettle" in texts[0]


def test_windows_are_non_overlapping_slices_of_the_stream_capped_at_max_tokens(tokenizer: Any) -> None:
    texts = heldout.default_texts()
    stream = heldout.stream(tokenizer, texts)
    windows = heldout.windows(tokenizer, texts, 64, max_tokens=1000)
    assert len(windows) == 1000 // 64
    assert all(len(w) == 64 for w in windows)
    spans = _positions(windows, stream)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert spans[0][0] == 0


def test_a_text_shorter_than_a_window_gives_one_short_window(tokenizer: Any) -> None:
    windows = heldout.windows(tokenizer, ["The sky is blue."], 128)
    assert len(windows) == 1 and 2 <= len(windows[0]) < 128
    with pytest.raises(ValueError, match="at least 2"):
        heldout.windows(tokenizer, ["x"], 1)


def test_texts_are_joined_with_the_end_of_text_token(tokenizer: Any) -> None:
    ids = heldout.stream(tokenizer, ["Hello.", "Goodbye."])
    assert ids.count(tokenizer.eos_token_id) == 1


def test_calibration_never_overlaps_held_out_and_held_out_does_not_depend_on_calibration(tokenizer: Any) -> None:
    texts = heldout.default_texts()
    stream = heldout.stream(tokenizer, texts)
    a = heldout.split_windows(tokenizer, texts, length=128, max_tokens=1024, calibration=4, calibration_length=64)
    held, calibration = heldout.split_windows(tokenizer, texts, length=128, max_tokens=1024, calibration_length=256)
    assert a.heldout == held and len(held) == 8
    assert len(a.calibration) == 4 and all(len(w) == 64 for w in a.calibration)
    end_of_heldout = _positions(held, stream)[-1][1]
    assert _positions(calibration, stream[end_of_heldout:])  # calibration lies after the held-out part


def test_held_out_takes_at_most_half_of_a_short_text(tokenizer: Any) -> None:
    texts = heldout.default_texts()
    split = heldout.split_windows(tokenizer, texts, length=64, max_tokens=10**9)
    held = sum(len(w) for w in split.heldout)
    assert held <= len(heldout.stream(tokenizer, texts)) // 2 and split.calibration


def test_dataset_rows_are_rendered_with_the_chat_template(tokenizer: Any) -> None:
    chat = Example(1, messages=(Message("user", "What color is the sky?"), Message("assistant", "Blue.")))
    completion = Example(2, prompt="Two and two make ", completion="four.")
    text = Example(3, text="Plain text row.")
    rendered = heldout.dataset_texts([chat, completion, text], tokenizer)
    assert heldout.dataset_texts([chat], cached_tiny_model(TinyModelSpec())) == rendered[:1]  # or the folder
    assert rendered[0] == "<|im_start|>user\nWhat color is the sky?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
    assert rendered[1:] == ["Two and two make four.", "Plain text row."]
    ids = heldout.stream(tokenizer, rendered[:1])
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids  # the markers are special tokens, not text
