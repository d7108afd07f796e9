"""The tiny chat model's tokenizer (ChatML template, `<|im_end|>` as EOS), loaded from its saved folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelbay.engine.datasets.tokens import load_tokenizer
from tests.support.tinymodel import GEMMA_LIKE_TEMPLATE, TinyModelSpec, cached_tiny_model, with_chat_template


@pytest.fixture(scope="session")
def tiny_folder() -> Path:
    """The untrained tiny model's folder (its tokenizer is the tiny chat model's: both are trained on one corpus).

    Built once per machine from files only (no service); `tiny_model` itself is a scenario fixture.
    """
    return cached_tiny_model(TinyModelSpec())


@pytest.fixture(scope="session")
def tokenizer(tiny_folder: Path) -> Any:
    """The tiny model's tokenizer with its ChatML chat template."""
    return load_tokenizer(tiny_folder)


@pytest.fixture(scope="session")
def gemma_tokenizer(tiny_folder: Path) -> Any:
    """The same tokenizer with a Gemma-like template: no system role, strictly alternating turns."""
    return load_tokenizer(with_chat_template(tiny_folder, GEMMA_LIKE_TEMPLATE, "tiny-gemma-tokenizer"))
