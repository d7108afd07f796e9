"""Token windows a variant is measured on (held-out) and a method calibrates on, never the same tokens.

The text is the person's own data when a dataset is given (`dataset_texts`: chat rows rendered with the model's
chat template, completion rows as prompt + completion, text rows as they are), else the shipped default,
`modelbay/config/heldout.txt`: original prose written for ModelBay (no third-party text, so it ships under
ModelBay's license and needs no network). Lines of that file starting with `#` are its header and are skipped.

The texts become one token stream: each text tokenised without special tokens, the tokenizer's EOS between texts
(as llama.cpp's perplexity tool reads one file as one stream). A tokenizer that adds a BOS of its own gets it at the
start of every window (llama.cpp puts one at the start of each chunk); the first token of a window is never scored.

The split (`split_windows`): the stream is cut at one token index, held-out before it and calibration after it. Held-out
takes windows of `length` from the start, up to `max_tokens` and never more than half the stream, so the held-out
windows depend only on the text, the tokenizer, `length` and `max_tokens` (the same for a parent and each of its
variants, whatever calibration a method asks for); calibration windows come from the rest. With a person's dataset
the job may instead take held-out windows from the validation rows and calibration windows from the training rows
(`windows` on each), which are already apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from modelbay.engine.datasets.examples import Example

__all__ = ["DEFAULT_FILE", "HELDOUT_TOKENS", "WINDOW_TOKENS", "Split", "dataset_texts", "default_texts",
           "split_windows", "stream", "windows"]

DEFAULT_FILE = "heldout.txt"  # in the modelbay.config package
WINDOW_TOKENS = 256  # tokens per window (llama.cpp's perplexity uses 512; shorter gives more windows of a short text)
HELDOUT_TOKENS = 16_384  # held-out tokens at most
MIN_WINDOW = 2  # tokens: one context token and one scored


class Split(NamedTuple):
    """Held-out windows (scored) and calibration windows (for methods), cut from disjoint parts of one stream."""

    heldout: list[list[int]]
    calibration: list[list[int]]


def default_texts() -> list[str]:
    """The shipped held-out text (config/heldout.txt) as one text, its header lines (`#`) left out."""
    raw = resources.files("modelbay.config").joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
    return ["\n".join(line for line in raw.splitlines() if not line.startswith("#")).strip()]


def dataset_texts(examples: Iterable[Example], tokenizer: Any) -> list[str]:
    """The rows of a dataset as plain texts: chat rows rendered with `tokenizer`'s chat template (no generation
    prompt), completion rows as prompt followed by completion, text rows as they are.

    `tokenizer` is a transformers tokenizer or a model folder (its tokenizer is loaded).

    A chat row the template refuses (or a tokenizer without a template) is rendered as `role: content` lines, so a
    person's data is still measured rather than dropped.
    """
    tokenizer = _tokenizer(tokenizer)
    texts = []
    for example in examples:
        if example.kind == "chat":
            texts.append(_render_chat(tokenizer, example))
        elif example.kind == "completion":
            texts.append((example.prompt or "") + (example.completion or ""))
        else:
            texts.append(example.text or "")
    return [text for text in texts if text]


def _render_chat(tokenizer: Any, example: Example) -> str:
    messages = example.as_dicts()
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            if isinstance(text, str):
                return text
        except Exception:  # noqa: BLE001, S110 - jinja2's TemplateError (raise_exception) or ValueError: plain lines
            pass
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _tokenizer(tokenizer: Any) -> Any:
    if isinstance(tokenizer, (str, Path)):
        from modelbay.engine.datasets.tokens import load_tokenizer

        return load_tokenizer(tokenizer)
    return tokenizer


def _bos(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer adds one by itself (Llama-style), else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if ids and ids[0] == bos else None


def stream(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """The texts as one token stream: each tokenised without special tokens, EOS between them.

    `tokenizer` is a transformers tokenizer or a model folder (its tokenizer is loaded).
    """
    tokenizer = _tokenizer(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    out: list[int] = []
    for i, text in enumerate(texts):
        if i and eos is not None:
            out.append(eos)
        out.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _cut(ids: Sequence[int], length: int, max_tokens: int | None, bos: int | None) -> list[list[int]]:
    """Non-overlapping windows of `length` tokens (a BOS first when given); a stream shorter than one window gives
    one shorter window; the remainder after the last full window is left out (as llama.cpp's chunks)."""
    if length < MIN_WINDOW:
        raise ValueError(f"a window needs at least {MIN_WINDOW} tokens, not {length}")
    step = length - (bos is not None)
    budget = len(ids) if max_tokens is None else max_tokens
    out = []
    for start in range(0, len(ids) - step + 1, step):
        if (len(out) + 1) * length > budget:
            break
        out.append(([bos] if bos is not None else []) + list(ids[start:start + step]))
    if not out and len(ids) + (bos is not None) >= MIN_WINDOW and budget >= MIN_WINDOW:
        out.append(([bos] if bos is not None else []) + list(ids[:max(0, min(len(ids), budget - (bos is not None)))]))
    return out


def windows(tokenizer: Any, texts: Sequence[str], length: int, max_tokens: int | None = None) -> list[list[int]]:
    """Non-overlapping token windows of `length` from the texts' stream, at most `max_tokens` tokens in all.

    `tokenizer` is a transformers tokenizer or a model folder. Raises ValueError when `length` < 2.
    """
    tokenizer = _tokenizer(tokenizer)
    return _cut(stream(tokenizer, texts), length, max_tokens, _bos(tokenizer))


def split_windows(tokenizer: Any, texts: Sequence[str], *, length: int = WINDOW_TOKENS,
                  max_tokens: int = HELDOUT_TOKENS, calibration: int | None = None,
                  calibration_length: int | None = None) -> Split:
    """Held-out windows of `length` from the start of the stream (at most `max_tokens`, at most half of it) and up
    to `calibration` windows (None: all) of `calibration_length` (default `length`) from the tokens after them.

    `tokenizer` is a transformers tokenizer or a model folder. Raises ValueError when a length is < 2.
    """
    tokenizer = _tokenizer(tokenizer)
    ids = stream(tokenizer, texts)
    bos = _bos(tokenizer)
    heldout = _cut(ids, length, min(max_tokens, max(len(ids) // 2, MIN_WINDOW)), bos)
    used = sum(len(w) - (bos is not None) for w in heldout)
    cut = _cut(ids[used:], calibration_length or length, None, bos)
    return Split(heldout=heldout, calibration=cut if calibration is None else cut[:calibration])
