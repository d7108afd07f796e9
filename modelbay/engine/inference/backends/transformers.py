"""The in-process transformers backend: generate() on a thread with a token-level streamer.

Each running generation is tracked, stopped at its next token and joined when its stream closes, when the backend
closes and at interpreter exit.
"""

from __future__ import annotations

import atexit
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modelbay.logs import route_transformers_logs
from modelbay.engine.errors import BackendFailed, ModelBayError, ModelUnloadable
from modelbay.engine.inference.backends.base import Backend, Finished, Generation, InferenceUnavailable
from modelbay.engine.inference.templates import ChatTemplate, Messages

log = logging.getLogger(__name__)

__all__ = ["TransformersBackend"]


# -- in-process transformers ------------------------------------------------------------------------------
class _Loaded:
    """A model and tokenizer in this process, with a lock so one answer runs on it at a time.

    With an adapter, the model is peft's `PeftModel` over the base (the LoRA applied at every forward pass, not
    merged) and the tokenizer is the adapter folder's when it has one (a training job saves it there), else the base's.
    """

    def __init__(self, path: str, device: str, adapter: str | None = None) -> None:
        try:
            import torch  # extra: ml
            from transformers import AutoModelForCausalLM, AutoTokenizer  # extra: ml
        except ImportError:
            raise InferenceUnavailable() from None
        route_transformers_logs()  # a loading bar or warning on stderr would tear through the console's output
        self.torch = torch
        tokenizer_from = adapter if adapter is not None and _has_tokenizer(Path(adapter)) else path
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_from, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, use_safetensors=True,
                                                     dtype="auto")
        if adapter is not None:
            try:
                from peft import PeftModel  # extra: ml
            except ImportError:
                raise InferenceUnavailable() from None
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
        self.model = model.to(device).eval()
        self.device = device
        self.lock = threading.Lock()
        config = self.model.config
        self.context_length = int(getattr(config, "max_position_embeddings", None)
                                  or min(self.tokenizer.model_max_length, 4096))


def _has_tokenizer(folder: Path) -> bool:
    """Whether a folder holds a tokenizer transformers loads (a fine-tune's adapter folder usually does)."""
    return (folder / "tokenizer_config.json").is_file() and any(
        (folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "vocab.json"))


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
    in_process = True

    def __init__(self, model_path: str | Path, *, device: str | None = None, label: str | None = None,
                 adapter: str | Path | None = None) -> None:
        """Load the model folder (and a LoRA adapter folder on it, with peft) in this process.

        Raises:
            InferenceUnavailable: torch, transformers (or, for an adapter, peft) are not installed.
            ModelUnloadable: the files are there but loading them failed.
        """
        self.model_path = str(model_path)
        self.adapter = str(adapter) if adapter is not None else None
        if device is None:
            try:
                import torch  # extra: ml

                device = "cuda" if torch.cuda.is_available() else "cpu"
            except ImportError:
                raise InferenceUnavailable() from None
        try:
            self._loaded: _Loaded | None = _Loaded(self.model_path, device, self.adapter)
        except (ModelBayError, MemoryError):
            raise
        except Exception as exc:  # a corrupt weight file, a config transformers refuses, a broken tokenizer file
            if "OutOfMemory" in type(exc).__name__:  # torch's: the machine, not the files
                raise
            log.warning("loading %s (adapter %s) failed", self.model_path, self.adapter, exc_info=exc)
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
