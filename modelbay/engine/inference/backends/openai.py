"""The OpenAI-compatible HTTP backend: streams /v1/chat/completions from vLLM over one pooled httpx client."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from modelbay.engine.errors import BackendFailed, TemplateRefused, one_line
from modelbay.engine.inference.backends.base import Adjusted, Backend, Finished, Generation
from modelbay.engine.inference.templates import (
    Messages,
    folded,
    load_template,
    no_system_notice,
    refuses_system,
    wants_alternation,
    wants_system,
)

log = logging.getLogger(__name__)

__all__ = ["OpenAIBackend"]


# -- OpenAI-compatible HTTP (vLLM) --------------------------------------------------------------------------
class OpenAIBackend(Backend):
    """Streams from an OpenAI-compatible /v1/chat/completions endpoint, such as vLLM's server."""

    name = "vllm"

    def __init__(self, base_url: str, model: str, *, context_length: int = 2048, model_path: str | None = None,
                 api_key: str | None = None, client: httpx.Client | None = None, label: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model  # the served name, or a LoRA adapter's name
        self.context_length = context_length
        # The template the server applies, read from the model's files on this host (else token counts are
        # estimated; label: the model's name).
        self.template = load_template(model_path, label or model)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(headers=headers, limits=httpx.Limits(max_keepalive_connections=8))

    @property
    def takes_system(self) -> bool:
        """Whether the model's template takes a system message (its files on this host, or learned from the server)."""
        return (self.base_url, self.model) not in _SYSTEMLESS and super().takes_system

    def stream(self, messages: Messages, params: Generation) -> Iterator[str | Adjusted | Finished]:
        """POST the chat with stream=true and yield each delta; usage arrives in the last chunk.

        A system message the server's template refuses is folded into the first user message and sent once more.
        """
        try:
            yield from self._post(messages, params)
        except _Refused as refused:  # raised at the status line, before any piece
            # Mistral v0.1-style templates count a leading system message as a turn out of order.
            about_system = refuses_system(refused.reason) or wants_alternation(refused.reason)
            if not (messages and messages[0]["role"] == "system" and about_system):
                raise self._refusal(refused.reason) from None
            yield from self._folded(messages, params, refused.reason)

    def _folded(self, messages: Messages, params: Generation, reason: str) -> Iterator[str | Adjusted | Finished]:
        """Send the messages again with the system prompt folded in; on success remember that server and model."""
        log.info("the chat template of %s at %s refused a system message (%s); sending it folded into the first "
                 "user message from now on", self.template.model, self.base_url, reason)
        retry = self._post(folded(messages), params)
        try:
            try:
                first = next(retry)
            except _Refused as refused:
                raise self._refusal(refused.reason) from None
            with _SYSTEMLESS_LOCK:
                _SYSTEMLESS.add((self.base_url, self.model))
            yield Adjusted(no_system_notice(self.template.model))
            yield first
            yield from retry
        finally:
            retry.close()

    def _refusal(self, reason: str) -> BackendFailed:
        """A 400 as one line: a template's refusal (recognised by its words) names the model, else the server's."""
        if refuses_system(reason) or wants_system(reason) or wants_alternation(reason):
            log.warning("the chat template of %s at %s refused the request: %s", self.template.model, self.base_url,
                        reason)
            return TemplateRefused(self.template.model, reason, needs_system=wants_system(reason))
        return BackendFailed(f"The model server refused the request: HTTP 400: {_one_line(reason)}")

    def _post(self, messages: Messages, params: Generation) -> Iterator[str | Finished]:
        """One request; a 400 raises _Refused before anything is yielded."""
        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "stream": True, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        timeout = httpx.Timeout(connect=5.0, read=params.idle_timeout, write=10.0, pool=5.0)
        deadline = time.monotonic() + params.timeout
        usage: dict[str, Any] = {}
        reason = "stop"
        done = False
        try:
            with self._client.stream("POST", f"{self.base_url}/chat/completions", json=body, timeout=timeout) as resp:
                if resp.status_code != 200:
                    said = _server_message(resp)
                    if resp.status_code == 400:
                        self.template.check(messages)  # the server's template refused it: say so, naming the model
                        raise _Refused(said)
                    raise BackendFailed(f"The model server refused the request: HTTP {resp.status_code}: "
                                        f"{_one_line(said)}")
                for line in resp.iter_lines():
                    if time.monotonic() > deadline:
                        raise BackendFailed(f"The answer took longer than {params.timeout:g} s and was stopped.")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = _chunk(data)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
                        reason = choice.get("finish_reason") or reason
        except httpx.TimeoutException:
            raise BackendFailed(f"The model server sent nothing for {params.idle_timeout:g} s.") from None
        except (httpx.HTTPError, httpx.StreamError) as exc:
            # Every transport, decoding or stream-state failure, before or after the first piece.
            raise BackendFailed(f"The model server connection failed ({type(exc).__name__}).") from None
        if not done:  # the server closed a close-delimited stream early: the answer is incomplete
            raise BackendFailed("The model server connection failed (it closed before the answer was complete).")
        yield Finished(_count(usage, "prompt_tokens"), _count(usage, "completion_tokens"), reason)

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()


# (server URL, served name) whose chat template refused a system message: requests to them are folded at once.
_SYSTEMLESS: set[tuple[str, str]] = set()
_SYSTEMLESS_LOCK = threading.Lock()


class _Refused(Exception):
    """The server answered 400 (in vLLM, what a chat template's raise_exception becomes), with its message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _chunk(data: str) -> dict[str, Any]:
    """One streamed chunk, checked for the shape read from it; anything else fails the answer in one line."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise BackendFailed(f"The model server sent a chunk that is not JSON: {_one_line(data)}") from None
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    well_formed = (isinstance(chunk, dict) and isinstance(choices or [], list)
                   and isinstance(chunk.get("usage") or {}, dict)
                   and all(isinstance(c, dict) and isinstance(c.get("delta") or {}, dict)
                           and isinstance((c.get("delta") or {}).get("content") or "", str)
                           and isinstance(c.get("finish_reason") or "", str) for c in choices or []))
    if not well_formed:
        raise BackendFailed(f"The model server sent a chunk of an unknown shape: {_one_line(data)}")
    return chunk


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _server_message(resp: httpx.Response) -> str:
    """Why the server refused: its error message whatever the body's shape, else its text."""
    resp.read()
    try:
        body = resp.json()
    except ValueError:  # not JSON, or not text at all
        body = None
    message: Any = body if isinstance(body, str) else None
    if isinstance(body, dict):
        error = body.get("error")
        message = (error.get("message") if isinstance(error, dict) else error) or body.get("message") \
            or body.get("detail")
    return str(message or resp.text or resp.reason_phrase)


def _one_line(text: str, limit: int = 300) -> str:
    """Text as one line: whitespace runs become one space, other control characters are escaped, cut to limit."""
    return one_line(" ".join(text.split()), limit)
