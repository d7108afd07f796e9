"""Inference backends: one base class, an OpenAI-compatible HTTP backend (vLLM) and in-process transformers.

A backend turns chat messages into a stream of text pieces and ends it with a `Finished` carrying token
counts. Failures and timeouts raise `BackendFailed`; the caller keeps whatever text already arrived.
`Backend.prompt` builds the request in a shape the model's chat template takes (`engine/templates.py`):
turns alternate, and a system prompt goes into the first user message where the template has no system role.
Over HTTP without the template on this host, that rule is learned from the server: a request whose system
message its template refuses is sent again once with the prompt folded in, and later requests to that server and
model are folded at once; the stream says so once with an `Adjusted`.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from modelbay.engine.errors import BackendFailed, ModelBayError, ModelUnloadable, TemplateRefused, one_line
from modelbay.engine.templates import (
    ChatTemplate,
    Messages,
    alternating,
    folded,
    load_template,
    no_system_notice,
    refuses_system,
    wants_alternation,
    wants_system,
)

__all__ = [
    "Adjusted",
    "Backend",
    "Finished",
    "Generation",
    "InferenceUnavailable",
    "OpenAIBackend",
    "Prompt",
    "TransformersBackend",
    "fit_to_context",
]

log = logging.getLogger(__name__)


class InferenceUnavailable(ModelBayError):
    """In-process answers need torch and transformers, which this installation lacks."""

    def __init__(self) -> None:
        super().__init__("Answering here needs torch and transformers: install them with "
                         "`pip install torch && pip install 'modelbay[ml]'`, or have an admin `/models serve` it.")


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


@dataclass(frozen=True)
class Prompt:
    """Messages fitted to the context window, with what was cut to fit, and the newest message as fitted."""

    messages: Messages
    tokens: int
    max_tokens: int
    notices: list[str] = field(default_factory=list)
    question: str = ""  # the newest message as the model sees it (cut to fit, maybe), without a system prompt


class Backend(ABC):
    """Something that answers chat messages, streaming the answer as it is written."""

    name: str = "backend"
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


# -- in-process transformers ------------------------------------------------------------------------------
class _Loaded:
    """A model and tokenizer in this process, with a lock so one answer runs on it at a time."""

    def __init__(self, path: str, device: str) -> None:
        try:
            import torch  # extra: ml
            from transformers import AutoModelForCausalLM, AutoTokenizer  # extra: ml
            from transformers.utils import logging as hf_logging  # extra: ml
        except ImportError:
            raise InferenceUnavailable() from None
        hf_logging.disable_progress_bar()  # a loading bar on stderr would tear through the console's output
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, use_safetensors=True,
                                                          dtype="auto").to(device).eval()
        self.device = device
        self.lock = threading.Lock()
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", None)
                                  or min(self.tokenizer.model_max_length, 4096))


JOIN_TIMEOUT = 30.0  # seconds to wait for a generation to finish the token it is computing


class _Generations:
    """Generation threads that are running, so that exit (and a closed backend) stops and joins them.

    The threads are daemons: an answer nobody reads any more must not hold the interpreter open until it reaches
    its token limit. A daemon thread still inside torch when the interpreter finalizes aborts the process
    ("terminate called without an active exception"), so at exit each one is told to stop at its next token
    and joined, before finalization begins.
    """

    def __init__(self) -> None:
        self._running: dict[threading.Thread, _Stop] = {}
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    def start(self, run: Callable[[], None], stop: _Stop) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(run,), name="modelbay-generate", daemon=True)
        with self._lock:
            self._running[thread] = stop
        thread.start()
        return thread

    def _run(self, run: Callable[[], None]) -> None:
        try:
            run()
        finally:
            with self._lock:
                self._running.pop(threading.current_thread(), None)

    def stop(self, thread: threading.Thread, timeout: float = JOIN_TIMEOUT) -> None:
        """Ask one generation to stop at its next token and wait for it (seconds)."""
        with self._lock:
            stop = self._running.get(thread)
        if stop is not None:
            stop.abort = True
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("a generation did not stop within %g s", timeout)

    def stop_all(self, owner: object | None = None) -> None:
        """Stop every running generation (or those of one loaded model) and wait for each."""
        with self._lock:
            threads = [t for t, stop in self._running.items() if owner is None or stop.owner is owner]
        for thread in threads:
            self.stop(thread)


_GENERATIONS = _Generations()


class TransformersBackend(Backend):
    """Generates in this process with transformers, streaming token by token (CPU or a local GPU).

    The backend owns its loaded model: `close()` stops its generations and lets the model's memory go.
    """

    name = "transformers"

    def __init__(self, model_path: str | Path, *, device: str | None = None, label: str | None = None) -> None:
        self.model_path = str(model_path)
        if device is None:
            try:
                import torch  # extra: ml

                device = "cuda" if torch.cuda.is_available() else "cpu"
            except ImportError:
                raise InferenceUnavailable() from None
        try:
            self._loaded: _Loaded | None = _Loaded(self.model_path, device)
        except (ModelBayError, MemoryError):
            raise
        except Exception as exc:  # a corrupt weight file, a config transformers refuses, a broken tokenizer file
            if "OutOfMemory" in type(exc).__name__:  # torch's: the machine, not the files
                raise
            log.warning("loading %s failed", self.model_path, exc_info=exc)
            raise ModelUnloadable(label or Path(model_path).name, f"{type(exc).__name__}: {exc}") from exc
        self.context_length = self._loaded.context_length
        self.template = ChatTemplate(self._loaded.tokenizer, label or Path(model_path).name)

    @property
    def model(self) -> Any:
        """The loaded transformers model, or None once closed."""
        return self._loaded.model if self._loaded is not None else None

    def close(self) -> None:
        """Stop this backend's generations and release its model (GPU memory too); answering after raises."""
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        _GENERATIONS.stop_all(owner=loaded)
        on_gpu = loaded.device.startswith("cuda")
        torch = loaded.torch
        del loaded
        if on_gpu:
            gc.collect()  # the model's tensors go with its last reference; then the allocator can give memory back
            torch.cuda.empty_cache()

    def stream(self, messages: Messages, params: Generation) -> Iterator[str | Finished]:
        """Run generate() in a thread and yield text as each token is decoded."""
        loaded = self._loaded
        if loaded is None:
            raise BackendFailed("The model was unloaded; send the message again.")
        tokenizer = loaded.tokenizer
        encoded = self.template.render(messages, return_dict=True, return_tensors="pt")
        input_ids = encoded["input_ids"].to(loaded.device)
        attention = encoded.get("attention_mask")
        streamer = _TokenStreamer(tokenizer, params.stop)
        stop = _Stop(streamer, time.monotonic() + params.timeout, owner=loaded)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids, "max_new_tokens": params.max_tokens, "streamer": streamer,
            "stopping_criteria": [stop], "do_sample": params.temperature > 0,
        }
        if attention is not None:
            kwargs["attention_mask"] = attention.to(loaded.device)
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)

        def run() -> None:
            try:
                with loaded.lock, loaded.torch.inference_mode():
                    if not stop.abort:  # the reader may have left while another answer held the model
                        loaded.model.generate(**kwargs)
            except BaseException as exc:  # handed to the reading side
                streamer.fail(exc)
            finally:
                streamer.end()

        thread = _GENERATIONS.start(run, stop)
        try:
            while True:
                try:
                    item = streamer.pieces.get(timeout=params.idle_timeout)
                except queue.Empty:
                    raise BackendFailed(f"The model produced nothing for {params.idle_timeout:g} s.") from None
                if item is None:
                    break
                if isinstance(item, BaseException):
                    log.error("in-process generation failed", exc_info=item)
                    raise BackendFailed(f"The model failed while answering ({type(item).__name__}).")
                yield item
        finally:
            # The reader left (done, failed, or closed early): generate() returns at its next token; waiting for
            # it here means no generation outlives its answer.
            _GENERATIONS.stop(thread)
        if stop.timed_out:
            raise BackendFailed(f"The answer took longer than {params.timeout:g} s and was stopped.")
        reason = "stop" if streamer.stopped or streamer.count < params.max_tokens else "length"
        yield Finished(int(input_ids.shape[-1]), streamer.count, reason)


class _TokenStreamer:
    """Receives token ids from generate() and queues newly decoded text, one token at a time."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = stop
        self.pieces: queue.Queue[str | BaseException | None] = queue.Queue()
        self.ids: list[int] = []
        self.sent = ""
        self.count = 0
        self.stopped = False
        self._prompt_seen = False
        self._special = set(tokenizer.all_special_ids)

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() hands over the prompt first
            self._prompt_seen = True
            return
        if self.stopped:
            return
        for token in value.reshape(-1).tolist():
            self.count += 1
            if token not in self._special:
                self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # half of a multi-byte character: wait for the rest
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0:
                text, self.stopped = text[:at], True
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.pieces.put(text[len(self.sent):])
            self.sent = text

    def fail(self, exc: BaseException) -> None:
        self.pieces.put(exc)

    def end(self) -> None:
        self.pieces.put(None)


class _Stop:
    """A stopping criterion: a stop string was met, the reader went away, or time ran out."""

    def __init__(self, streamer: _TokenStreamer, deadline: float, owner: object = None) -> None:
        self.streamer = streamer
        self.deadline = deadline
        self.owner = owner  # the loaded model it runs on
        self.abort = False
        self.timed_out = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch  # extra: ml

        if time.monotonic() > self.deadline:
            self.timed_out = True
        done = self.abort or self.timed_out or self.streamer.stopped
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

