"""The in-process onnxruntime backend: an ONNX variant's graph run token by token with its KV cache.

The loop runs in the reading thread (`OnnxCausalLM.generate`), one onnxruntime call per token, so closing the
stream stops it at once and no thread outlives an answer. The idle timeout is measured between tokens: a single
step cannot be interrupted, and one step of a model that fits this machine takes far less than it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelbay.engine.errors import BackendFailed, ModelBayError, ModelUnloadable
from modelbay.engine.inference.backends.base import (
    Backend,
    Finished,
    Generation,
    InferenceUnavailable,
)
from modelbay.engine.inference.templates import ChatTemplate, Messages
from modelbay.logs import route_transformers_logs

log = logging.getLogger(__name__)

__all__ = ["OnnxBackend"]

_DEFAULT_CONTEXT = 2048  # tokens, when the config names no maximum position


class OnnxBackend(Backend):
    """Answers with an exported ONNX variant in this process (onnxruntime on the CPU), streaming token by token.

    Built as `OnnxBackend(folder, label=)`; `threads` sets onnxruntime's intra-op threads (None: its default).
    """

    name = "onnx"
    in_process = True

    def __init__(self, model_path: str | Path, *, label: str | None = None, threads: int | None = None) -> None:
        """Load the variant's graph (the one its manifest names) and its tokenizer.

        Raises:
            InferenceUnavailable: onnxruntime or transformers are not installed.
            IncompleteModel: the folder lacks what an ONNX variant needs (`check_onnx`).
            ModelUnloadable: the files are there but loading them failed.
        """
        from modelbay.engine.installs.loadable import check_onnx

        self.model_path = str(model_path)
        folder = Path(model_path)
        name = label or folder.name
        check_onnx(folder, name)
        try:
            from transformers import AutoTokenizer  # extra: ml

            from modelbay.engine.optimization.onnxmodel import OnnxCausalLM
        except ImportError:
            raise InferenceUnavailable() from None
        route_transformers_logs()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            self._model: OnnxCausalLM | None = OnnxCausalLM(folder, threads=threads)
        except ImportError:
            raise InferenceUnavailable() from None
        except (ModelBayError, MemoryError):
            raise
        except Exception as exc:  # a corrupt graph onnxruntime refuses, a broken tokenizer file
            log.warning("loading the ONNX variant %s failed", folder, exc_info=exc)
            raise ModelUnloadable(name, f"{type(exc).__name__}: {exc}") from exc
        self.context_length = _context_length(folder, self.tokenizer)
        self.template = ChatTemplate(self.tokenizer, name)
        self._eos = set(self._model.manifest.get("eos_token_ids") or []) | (
            {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())
        self._special = set(self.tokenizer.all_special_ids)

    def close(self) -> None:
        """Release the onnxruntime session; answering after raises."""
        self._model = None

    def stream(self, messages: Messages, params: Generation) -> Iterator[str | Finished]:
        """Generate token by token and yield text as each token is decoded (never half of a multi-byte character)."""
        model = self._model
        if model is None:
            raise BackendFailed("The model was unloaded; send the message again.")
        encoded = self.template.render(messages, tokenize=True)
        prompt = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
        start = time.monotonic()
        deadline = start + params.timeout
        last = start
        ids: list[int] = []
        sent, count, stopped = "", 0, False
        tokens = model.generate(prompt, params.max_tokens, eos=self._eos, temperature=params.temperature,
                                top_p=params.top_p)
        try:
            for token in tokens:
                now = time.monotonic()
                if now - last > params.idle_timeout:
                    raise BackendFailed(f"The model produced nothing for {params.idle_timeout:g} s.")
                if now > deadline:
                    raise BackendFailed(f"The answer took longer than {params.timeout:g} s and was stopped.")
                last = now
                count += 1
                if token in self._eos:
                    stopped = True
                    break
                if token in self._special:
                    continue
                ids.append(token)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    continue  # half of a multi-byte character: wait for the rest
                for stop in params.stop:
                    at = text.find(stop)
                    if at >= 0:
                        text, stopped = text[:at], True
                if len(text) > len(sent) and text.startswith(sent):
                    yield text[len(sent):]
                    sent = text
                if stopped:
                    break
        except BackendFailed:
            raise
        except Exception as exc:  # onnxruntime's errors have no common base
            log.error("onnxruntime generation failed", exc_info=exc)
            raise BackendFailed(f"The model failed while answering ({type(exc).__name__}).") from exc
        finally:
            tokens.close()
        reason = "stop" if stopped or count < params.max_tokens else "length"
        yield Finished(len(prompt), count, reason)


def _context_length(folder: Path, tokenizer: Any) -> int:
    """The model's context: max_position_embeddings from its config, else the tokenizer's (at most the default)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    found = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if isinstance(found, int) and found > 0:
        return found
    return int(min(getattr(tokenizer, "model_max_length", _DEFAULT_CONTEXT) or _DEFAULT_CONTEXT, _DEFAULT_CONTEXT))
