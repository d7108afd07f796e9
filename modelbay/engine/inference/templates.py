"""Chat templates and the conversation shapes they take.

Real templates refuse shapes: Gemma's raises on a `system` message, Mistral's unless user and assistant turns
alternate. ModelBay sends only shapes a conversation has and a template takes: `alternating` merges runs of one
role into one turn (and drops answers before the first question), and a system prompt for a template that has no
system role goes at the start of the first user message (`folded`). Whether a template takes a system message is
found by rendering it once with one (`ChatTemplate.takes_system`), not by reading its Jinja. A refusal that still
happens is a one-line `TemplateRefused` naming the model; its traceback goes to the log.

Without the template at hand (a vLLM server on another host) the rules are learned from the server's refusals:
vLLM answers a template's `raise_exception` with HTTP 400 carrying the exception's message, which
`refuses_system`, `wants_system` and `wants_alternation` read.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from modelbay.engine.errors import TemplateRefused

__all__ = [
    "ChatTemplate",
    "Messages",
    "alternating",
    "folded",
    "load_template",
    "no_system_notice",
    "refuses_system",
    "wants_alternation",
    "wants_system",
]

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]

KEEP_TEMPLATES = 8  # templates (each holding a tokenizer) kept per process; the least recently used goes first
_PROBE = "probe"  # the text of the messages that find out which shapes a template takes


# The words real templates raise with (Gemma "System role not supported", Mistral v0.1 "Only user and assistant
# roles are supported!", Llama 2 / Mistral "Conversation roles must alternate user/assistant/..."), matched loosely.
_REFUSES_SYSTEM = re.compile(r"\bsystem\b[^.!]*\b(not|unsupported|cannot|can't)\b"
                             r"|\bonly\b[^.!]*\buser\b[^.!]*\bassistant\b", re.IGNORECASE)
_WANTS_SYSTEM = re.compile(r"\bsystem\b[^.!]*\b(required|missing|needed)\b"
                           r"|\b(requires?|needs?|must (start|begin) with)\b[^.!]*\bsystem\b", re.IGNORECASE)
_WANTS_ALTERNATION = re.compile(r"\balternat", re.IGNORECASE)


def refuses_system(reason: str) -> bool:
    """Whether a template's refusal says it takes no system message."""
    return bool(_REFUSES_SYSTEM.search(reason)) and not wants_system(reason)


def wants_system(reason: str) -> bool:
    """Whether a template's refusal says it demands a system message."""
    return bool(_WANTS_SYSTEM.search(reason))


def wants_alternation(reason: str) -> bool:
    """Whether a template's refusal says user and assistant turns must alternate."""
    return bool(_WANTS_ALTERNATION.search(reason))


def no_system_notice(model: str) -> str:
    """What a person with a system prompt is told once when the model's template has no system role."""
    # Every request puts it into the oldest question still sent (older turns may have been left out to fit).
    return (f"{model}'s chat template has no system role, so your system prompt is sent at the start of the "
            "conversation's first kept message instead.")


def _joined(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if first and second else first or second


def alternating(messages: Messages) -> Messages:
    """Return the messages with each run of one role merged into one turn and answers before any question dropped."""
    shaped: Messages = []
    asked = False
    for message in messages:
        role = message["role"]
        if role == "assistant" and not asked:
            continue  # an answer to a question no longer there: strict templates start with the user
        asked = asked or role == "user"
        if shaped and shaped[-1]["role"] == role:
            shaped[-1] = {**shaped[-1], "content": _joined(shaped[-1]["content"], message["content"])}
        else:
            shaped.append(dict(message))
    return shaped


def folded(messages: Messages) -> Messages:
    """Return the messages with a leading system message put at the start of the first user message."""
    if not messages or messages[0]["role"] != "system":
        return list(messages)
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for message in rest:
        if message["role"] == "user":
            message["content"] = _joined(system, message["content"])
            return rest
    return [{"role": "user", "content": system}, *rest]


def _estimate(messages: Messages) -> int:
    # Without the model's tokenizer: about 3 characters a token errs on the long side for most languages.
    return sum(len(m["content"]) // 3 + 4 for m in messages) + 2


class ChatTemplate:
    """A model's chat template (or an estimate without its tokenizer): renders and counts prompts, knows its shapes."""

    def __init__(self, tokenizer: Any | None, model: str) -> None:
        self.tokenizer = tokenizer
        self.model = model  # the model's name, for messages
        self._takes_system: bool | None = None

    @property
    def rendered(self) -> bool:
        """Whether prompts are rendered with the model's own template (else token counts are estimated)."""
        return self.tokenizer is not None and bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: Messages, *, quiet: bool = False, **kwargs: Any) -> Any:
        """Apply the template with the generation prompt (apply_chat_template's kwargs); raise TemplateRefused."""
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)
        except Exception as exc:  # raise_exception's TemplateError, and anything else a template or tokenizer raises
            if not quiet:
                log.warning("the chat template of %s refused the roles %s", self.model,
                            [m["role"] for m in messages], exc_info=True)
            reason = str(exc) or type(exc).__name__
            raise TemplateRefused(self.model, reason, needs_system=wants_system(reason)) from exc

    def count(self, messages: Messages) -> int:
        """Return the prompt length in tokens with the template applied; raise TemplateRefused."""
        if self.tokenizer is None:
            return _estimate(messages)
        if not self.rendered:
            return len(self.tokenizer("\n".join(m["content"] for m in messages))["input_ids"])
        ids = self.render(messages, tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def check(self, messages: Messages, *, quiet: bool = False) -> None:
        """Raise TemplateRefused if the template refuses these messages (nothing to check without it)."""
        if self.rendered:
            self.render(messages, quiet=quiet, tokenize=False)

    @property
    def takes_system(self) -> bool:
        """Whether the template takes a system message: rendered once with one, then remembered."""
        if self._takes_system is None:
            try:
                self.check([{"role": "system", "content": _PROBE}, {"role": "user", "content": _PROBE}], quiet=True)
                self._takes_system = True
            except TemplateRefused:
                self._takes_system = False
        return self._takes_system


_TEMPLATES: OrderedDict[tuple[str, str], ChatTemplate] = OrderedDict()
_TEMPLATES_LOCK = threading.Lock()


def load_template(model_path: str | Path | None, model: str) -> ChatTemplate:
    """Return the chat template in a model folder (its tokenizer's), or an estimating stand-in without one."""
    key = (str(model_path or ""), model)
    with _TEMPLATES_LOCK:
        if key in _TEMPLATES:
            _TEMPLATES.move_to_end(key)
            return _TEMPLATES[key]
    tokenizer = None
    if model_path and Path(model_path, "tokenizer_config.json").is_file():
        try:
            from transformers import AutoTokenizer  # extra: ml

            tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=False)
        except ImportError:
            pass
        except Exception:  # a tokenizer that does not load: estimate rather than refuse to chat
            log.warning("could not load the tokenizer at %s; estimating token counts", model_path, exc_info=True)
    template = ChatTemplate(tokenizer, model)
    with _TEMPLATES_LOCK:
        _TEMPLATES[key] = template
        while len(_TEMPLATES) > KEEP_TEMPLATES:
            _TEMPLATES.popitem(last=False)
    return template
