"""The inference backend base class and the shapes a stream yields (`openai.py` and `transformers.py` implement it).

A backend turns chat messages into a stream of text pieces and ends it with a `Finished` carrying token
counts. Failures and timeouts raise `BackendFailed`; the caller keeps whatever text already arrived.
`Backend.prompt` builds the request in a shape the model's chat template takes (`inference/templates.py`):
turns alternate, and a system prompt goes into the first user message where the template has no system role.
Over HTTP without the template on this host, that rule is learned from the server: a request whose system
message its template refuses is sent again once with the prompt folded in, and later requests to that server and
model are folded at once; the stream says so once with an `Adjusted`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import ClassVar

from modelbay.engine.errors import InferenceUnavailable, TemplateRefused
from modelbay.engine.extensions import Extensions
from modelbay.engine.inference.context import Prompt, fit_to_context
from modelbay.engine.inference.templates import ChatTemplate, Messages, alternating, folded

__all__ = ["BACKENDS", "Adjusted", "Backend", "Finished", "Generation", "InferenceUnavailable", "register_backend"]


@dataclass(frozen=True)
class Generation:
    """How to generate one answer."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    timeout: float = 180.0  # seconds for the whole answer
    idle_timeout: float = 30.0  # seconds without a new piece of text


@dataclass(frozen=True)
class Finished:
    """The end of a stream: token counts and why it stopped ("stop" or "length")."""

    input_tokens: int | None
    output_tokens: int | None
    reason: str = "stop"


@dataclass(frozen=True)
class Adjusted:
    """A change to the request that the asker should know, streamed before any text of the answer."""

    text: str




class Backend(ABC):
    """Something that answers chat messages, streaming the answer as it is written.

    A new backend is a class with a `name` and `stream` (and a `template`, for `prompt` to count tokens with),
    registered through the `register_backends` plugin hook; `examples/backend.py` shows one.

    Chats answer with the backend registered as "vllm" where a version's server runs, built as
    `cls(endpoint, served_name, model_path=, api_key=, label=, context_length=)` (for a LoRA fine-tune on its base's
    server, served_name is the adapter's), and else with the one registered as "transformers", built as
    `cls(model_folder, label=)`, or `cls(base_folder, label=, adapter=adapter_folder)` for a LoRA fine-tune without
    merged weights (`engine/chat/chats.py`, SERVED_BY and IN_PROCESS); a plugin that registers a class with one of
    those names and that constructor replaces the built-in.
    """

    name: ClassVar[str] = "backend"  # what it registers under in BACKENDS, and what analytics records per answer
    in_process: ClassVar[bool] = False  # loads the model into this process (counted against keep_in_process)
    context_length: int = 2048
    template: ChatTemplate  # the model's chat template (its tokenizer's, or read from its files on this host)
    _template_cost: tuple[int, int] | None = None  # (fixed tokens, tokens per message) the template adds

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds (connections, a loaded model); nothing by default."""

    @abstractmethod
    def stream(self, messages: Messages, params: Generation) -> Iterator[str | Finished]:
        """Yield pieces of the answer (any Adjusted first), then one Finished; raise BackendFailed on failure or
        timeout."""

    def count_tokens(self, messages: Messages) -> int:
        """Return the prompt length in tokens, with the chat template applied; raise TemplateRefused."""
        return self.template.count(messages)

    @property
    def takes_system(self) -> bool:
        """Whether the model's chat template takes a system message (else a system prompt is folded in)."""
        return self.template.takes_system

    def request(self, messages: Messages) -> Messages:
        """The messages in a shape the template takes: turns alternate, a system prompt it refuses is folded in."""
        shaped = alternating(messages)
        return shaped if self.takes_system else folded(shaped)

    def prompt(self, messages: Messages, params: Generation) -> Prompt:
        """Fit messages into the context window, leaving room for the answer, in a shape the template takes.

        Raises TemplateRefused when the template refuses even that shape, BackendFailed when nothing fits.
        """
        newest = messages[-1]["content"]
        messages = alternating(messages)  # whatever the stored history holds, never two turns of one role
        before = len(messages[-1]["content"]) - len(newest)  # what a merge put ahead of the newest message
        request = self.request(messages)
        reserve = max(1, min(params.max_tokens, self.context_length // 2))
        try:
            bound: int | None = self.token_bound(request)
        except TemplateRefused:  # a template that refuses a measuring shape: count this conversation's own shape
            bound = None
        if bound is not None and bound <= self.context_length - reserve:
            # Clearly fits: skip the exact count (a template render per message) on the way to the first token.
            return Prompt(request, bound, min(params.max_tokens, self.context_length - bound), question=newest)
        fitted = fit_to_context(messages, lambda part: self.count_tokens(self.request(part)), self.context_length,
                                params.max_tokens)
        return replace(fitted, messages=self.request(fitted.messages), question=fitted.question[before:])

    def token_bound(self, messages: Messages) -> int:
        """An upper bound of the prompt's tokens: every token covers at least one byte (byte-level BPE,
        SentencePiece with byte fallback), plus what the chat template adds, measured once on shapes the
        conversation can have (a system message only where the template takes one)."""
        if self._template_cost is None:
            question, answer = {"role": "user", "content": ""}, {"role": "assistant", "content": ""}
            one = self.count_tokens([question])
            three = self.count_tokens([question, answer, question])
            fixed, per_message = one, max(1, (three - one + 1) // 2)
            if self.takes_system:
                system = self.count_tokens([{"role": "system", "content": ""}, question])
                fixed, per_message = max(fixed, system), max(per_message, system - one)
            self._template_cost = (fixed, per_message)
        fixed, per_message = self._template_cost
        return fixed + sum(len(m["content"].encode()) + per_message + 1 for m in messages)


# Backend classes by name, filled through the `register_backends` hook the first time it is read. Chats answer
# with BACKENDS["vllm"] where a server runs, else with BACKENDS["transformers"] in this process.
BACKENDS: Extensions[type[Backend]] = Extensions("register_backends", lambda cls: cls.name)


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make a backend available by its name (replacing one of the same name); plugins use the hook instead."""
    return BACKENDS.register(cls)
