"""Fitting a conversation into a model's context window: drop the oldest turns, then cut the newest message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from modelbay.engine.errors import BackendFailed
from modelbay.engine.inference.templates import Messages

__all__ = ["Prompt", "fit_to_context"]


@dataclass(frozen=True)
class Prompt:
    """Messages fitted to the context window, with what was cut to fit, and the newest message as fitted."""

    messages: Messages
    tokens: int
    max_tokens: int
    notices: list[str] = field(default_factory=list)
    question: str = ""  # the newest message as the model sees it (cut to fit, maybe), without a system prompt




def fit_to_context(messages: Messages, count: Callable[[Messages], int], context_length: int,
                   max_tokens: int) -> Prompt:
    """Drop the oldest turns (never the system prompt or the newest message), then cut the newest message."""
    reserve = max(1, min(max_tokens, context_length // 2))
    budget = context_length - reserve
    system = [m for m in messages[:1] if m["role"] == "system"]
    history, last = list(messages[len(system):-1]), dict(messages[-1])
    notices: list[str] = []
    tokens = count([*system, *history, last])
    dropped = 0
    while tokens > budget and history:
        # Turns go in pairs (a question and its answer) so the model never sees an answer without its question.
        cut = 2 if len(history) >= 2 and history[0]["role"] == "user" else 1
        history, dropped = history[cut:], dropped + cut
        tokens = count([*system, *history, last])
    if dropped:
        notices.append(f"The {dropped} oldest message{'s' if dropped != 1 else ''} of this chat no longer fit the "
                       f"model's {context_length}-token context and {'were' if dropped != 1 else 'was'} left out.")
    if tokens > budget:
        text = last["content"]
        low, high = 0, len(text)
        while low < high:  # the longest head of the message that fits
            mid = (low + high + 1) // 2
            if count([*system, {**last, "content": text[:mid]}]) <= budget:
                low = mid
            else:
                high = mid - 1
        if low == 0:
            raise BackendFailed(f"The system prompt alone fills the model's {context_length}-token context; "
                                "start a chat with a shorter one.")
        last["content"] = text[:low]
        tokens = count([*system, last])
        notices.append(f"Your message was cut to its first {low:,} of {len(text):,} characters to fit the model's "
                       f"{context_length}-token context.")
    return Prompt([*system, *history, last], tokens, max(1, min(max_tokens, context_length - tokens)), notices,
                  question=last["content"])
