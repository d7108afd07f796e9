"""An inference backend from a plugin: it answers by echoing the question back, word by word.

Run it with `python examples/backend.py`. A backend is a `Backend` subclass with a `name` and `stream`, which
yields pieces of text and ends with one `Finished` carrying token counts (raise `BackendFailed` on failure).
Its `template` counts tokens; without a model's tokenizer, `ChatTemplate(None, ...)` estimates them, and the base
class's `prompt` fits a conversation into `context_length` with it. A plugin registers the class through the
`register_backends` hook. Chats answer with the backend named "vllm" where a server runs and with the one named
"transformers" in this process; a plugin that registers its class under one of those names replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from modelbay import plugins
from modelbay.engine.inference.backends.base import BACKENDS, Backend, Finished, Generation
from modelbay.engine.inference.templates import ChatTemplate, Messages
from modelbay.hookspecs import hookimpl


class EchoBackend(Backend):
    """Answers with the last question, one word at a time (built like the in-process backend: a folder, a label)."""

    name = "echo"
    context_length = 256

    def __init__(self, model_path: str | Path, *, label: str | None = None) -> None:
        self.template = ChatTemplate(None, label or Path(model_path).name)  # no tokenizer: token counts estimated

    def stream(self, messages: Messages, params: Generation) -> Iterator[str | Finished]:
        """Yield the question's words back, at most max_tokens of them, then the token counts."""
        words = messages[-1]["content"].split()[:params.max_tokens]
        for i, word in enumerate(words):
            time.sleep(0.01)  # as a model would, a piece at a time
            yield word if i == 0 else " " + word
        yield Finished(self.count_tokens(messages), len(words), "stop" if len(words) < params.max_tokens else "length")


class EchoPlugin:
    """The plugin: one hook implementation."""

    @hookimpl
    def register_backends(self, register):  # noqa: ANN001, ANN201 - the hook's signature is in modelbay.hookspecs
        register(EchoBackend)


def main() -> None:
    plugins.register(EchoPlugin())  # an installed package would be found through its entry point instead
    print("backends:", ", ".join(BACKENDS))
    backend = BACKENDS["echo"]("models/echo-1", label="echo-1")
    history = [{"role": "system", "content": "Repeat after me."},
               {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hello there"},
               {"role": "user", "content": "ModelBay streams answers piece by piece"}]
    prompt = backend.prompt(history, Generation(max_tokens=16))  # fitted to the context, in the template's shape
    for piece in backend.stream(prompt.messages, Generation(max_tokens=prompt.max_tokens)):
        if isinstance(piece, Finished):
            print(f"\n[{piece.input_tokens} tokens in, {piece.output_tokens} out, {piece.reason}]")
        else:
            print(piece, end="", flush=True)
    backend.close()


if __name__ == "__main__":
    main()
