"""Rows as the token ids a model trains on, with the mask of the tokens it learns to predict.

`encode` is the one definition of what trains: the dataset report shows its result and the training job feeds it
to the trainer (as `input_ids` plus `assistant_masks`, which TRL's SFT trainer takes pre-tokenised), so the report
shows exactly what will train.

- Chat rows are rendered with the tokenizer's own chat template. Every assistant turn is trained and the rest is
  masked: a turn's characters are those between the conversation before it rendered with the generation prompt
  (`add_generation_prompt=True`) and the conversation up to and including it, trailing whitespace left masked
  (the newline ChatML puts after `<|im_end|>`). The whole conversation is tokenised once and a token is trained
  when it starts inside a turn (fast tokenizers' offsets; prefix token ids otherwise). This is what TRL's
  `assistant_only_loss` computes from a template's `{% generation %}` marks, for templates that have none.
- Completion rows: the tokenizer's special prefix (a BOS) and the prompt are masked, the completion and EOS
  trained; no template. Prompt and completion are tokenised apart, so the boundary is exact (as TRL does).
- Text rows: every token trained, EOS appended (continued pre-training).

A row longer than `max_length` tokens follows the policy: `drop` leaves it out (a `too_long` Problem), `truncate`
cuts it at `max_length` (a row left with no trained token becomes a `no_trained_tokens` Problem), `fail` gives a
fatal Problem that stops training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from modelbay.logs import route_transformers_logs
from modelbay.engine.datasets.examples import Example
from modelbay.engine.datasets.problems import Problem

__all__ = [
    "POLICIES", "UNLIMITED", "Encoded", "Policy", "Segment", "encode", "fit", "load_tokenizer", "segments",
    "tokenizer_folder",
]

Policy = Literal["drop", "truncate", "fail"]
POLICIES: tuple[Policy, ...] = ("drop", "truncate", "fail")
UNLIMITED = 1 << 62  # a max_length no row reaches: `encode` then measures without cutting


@dataclass(frozen=True)
class Encoded:
    """A row as token ids and, per token, 1 when it is trained on (its loss counts) and 0 when masked."""

    input_ids: list[int]
    assistant_masks: list[int]
    length: int  # tokens before truncation (equal to len(input_ids) unless the row was cut)

    @property
    def truncated(self) -> bool:
        """Whether the row was cut at max_length."""
        return self.length > len(self.input_ids)

    @property
    def trained(self) -> int:
        """How many tokens are trained on."""
        return sum(self.assistant_masks)


@dataclass(frozen=True)
class Segment:
    """A run of a rendered row's text whose tokens are all trained on, or all masked."""

    text: str
    trained: bool


class _Refused(Exception):
    """The chat template refused the row, or renders it in a way the turns cannot be found in."""


def encode(tokenizer: Any, example: Example, *, max_length: int, policy: Policy) -> Encoded | Problem:
    """Encode one row for training with `tokenizer` (a transformers tokenizer) under the over-length policy.

    Returns the Encoded row, or the Problem that leaves it out: `template_refused` (the chat template raised, is
    missing, or renders earlier turns differently once later ones follow), `no_trained_tokens`, `too_long` (drop;
    with `fatal=True` under fail).
    """
    try:
        if example.kind == "chat":
            ids, masks = _chat(tokenizer, example)
        elif example.kind == "completion":
            prompt = _special_prefix(tokenizer) + _ids(tokenizer, example.prompt or "")
            answer = _ids(tokenizer, example.completion or "") + _eos(tokenizer)
            ids, masks = prompt + answer, [0] * len(prompt) + [1] * len(answer)
        else:
            ids = _special_prefix(tokenizer) + _ids(tokenizer, example.text or "") + _eos(tokenizer)
            masks = [1] * len(ids)
    except _Refused as exc:
        return Problem(example.line, "template_refused", str(exc))
    if not any(masks):
        return Problem(example.line, "no_trained_tokens", "no token of the row is trained on (the answer renders "
                                                          "as nothing)")
    return fit(Encoded(ids, masks, len(ids)), example.line, max_length=max_length, policy=policy)


def fit(encoded: Encoded, line: int, *, max_length: int, policy: Policy) -> Encoded | Problem:
    """Apply the over-length policy to a whole encoded row (`encode` does; the report measures before it)."""
    ids, masks, length = encoded.input_ids, encoded.assistant_masks, encoded.length
    if length <= max_length:
        return encoded
    over = f"{length:,} tokens, more than max_length {max_length:,}"
    if policy == "fail":
        return Problem(line, "too_long", f"{over}; the policy is fail, so training stops (choose drop or "
                                         "truncate, or raise max_length)", fatal=True)
    if policy == "drop":
        return Problem(line, "too_long", f"{over}; left out (policy drop)")
    if not any(masks[:max_length]):
        return Problem(line, "no_trained_tokens", f"{over}; cut there (policy truncate) it keeps no answer token: "
                                                  "raise max_length or shorten the prompt")
    return Encoded(ids[:max_length], masks[:max_length], length)


def segments(tokenizer: Any, encoded: Encoded) -> list[Segment]:
    """The row's text in runs of trained and masked tokens, each run decoded as the model sees it."""
    runs: list[Segment] = []
    start = 0
    for i in range(1, len(encoded.input_ids) + 1):
        if i == len(encoded.input_ids) or encoded.assistant_masks[i] != encoded.assistant_masks[start]:
            text = tokenizer.decode(encoded.input_ids[start:i], skip_special_tokens=False)
            runs.append(Segment(text, bool(encoded.assistant_masks[start])))
            start = i
    return runs


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def tokenizer_folder(model_folder: str | Path) -> Path:
    """Where a model version's tokenizer is: its folder, or the `adapter/` or `merged/` of a fine-tuned one."""
    root = Path(model_folder)
    for folder in (root, root / "merged", root / "adapter"):
        if any((folder / name).is_file() for name in _TOKENIZER_FILES):
            return folder
    return root


@lru_cache(maxsize=4)
def _load(folder: str) -> Any:
    from transformers import AutoTokenizer  # extra: ml

    route_transformers_logs()
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def load_tokenizer(model_folder: str | Path) -> Any:
    """The tokenizer (with its chat template) of a model folder (`tokenizer_folder`); the last few are kept.

    Raises:
        ImportError: transformers is not installed (the `ml` extra).
        OSError, ValueError: the folder has no tokenizer transformers can load.
    """
    return _load(str(tokenizer_folder(model_folder)))


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], *, prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise _Refused("the tokenizer has no chat template: chat rows need a chat model's tokenizer (or give "
                       "completion or text rows)")
    try:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=prompt)
    except Exception as exc:  # noqa: BLE001 - jinja2's TemplateError (raise_exception) or transformers' ValueError
        raise _Refused(f"the chat template says: {str(exc).strip()[:200]}") from None
    if not isinstance(text, str):
        raise _Refused("the chat template did not render text")
    return text


def _chat(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    messages = example.as_dicts()
    full = _render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], prompt=True)
        after = _render(tokenizer, messages[:i + 1])
        if not (after.startswith(before) and full.startswith(after)):
            raise _Refused("the chat template renders earlier turns differently once later ones follow, so the "
                           "answer tokens cannot be found")
        end = len(after.rstrip())
        spans.append((len(before), end if end > len(before) else len(after)))
    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoding["input_ids"])
        masks = [int(any(a <= start < b for a, b in spans)) for start, _ in encoding["offset_mapping"]]
        return ids, masks
    return _chat_by_prefixes(tokenizer, full, spans)


def _chat_by_prefixes(tokenizer: Any, full: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Masks from the token ids of each span's prefixes, for tokenizers without offsets (slow ones)."""
    ids = _ids(tokenizer, full)
    masks = [0] * len(ids)
    for a, b in spans:
        start, end = len(_ids(tokenizer, full[:a])), len(_ids(tokenizer, full[:b]))
        if ids[:end] != _ids(tokenizer, full[:b]):
            raise _Refused("the tokenizer merges tokens across the answer's edges, so the answer tokens cannot be "
                           "found")
        masks[start:end] = [1] * (end - start)
    return ids, masks


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _special_prefix(tokenizer: Any) -> list[int]:
    """The tokens the tokenizer puts before any text (a BOS for Llama's), found by tokenising a letter."""
    with_specials = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    plain = _ids(tokenizer, "a")
    cut = len(with_specials) - len(plain)
    for start in range(cut + 1):
        if with_specials[start:start + len(plain)] == plain:
            return with_specials[:start]
    return []


def _eos(tokenizer: Any) -> list[int]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else []
