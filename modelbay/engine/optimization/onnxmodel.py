"""An exported ONNX decoder run with onnxruntime: forward passes with a KV cache, and token-by-token generation.

The folder is an ONNX variant (`engine/installs/loadable.py`, `check_onnx`): its manifest names the graph and the
cache shape. The graph takes `input_ids`, `attention_mask`, `position_ids` and `past_key_values.{i}.key|value`
(batch, kv_heads, past, head_dim) and returns `logits` (batch, seq, vocab) and `present.{i}.key|value` (the past
with this call's tokens appended), as optimum and transformers.js name them. The first call passes an empty past
(length 0). onnxruntime and numpy are imported when a model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from modelbay.engine.installs.loadable import ONNX_MANIFEST

__all__ = ["OnnxCausalLM", "sample"]

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


class OnnxCausalLM:
    """A causal LM exported to ONNX, loaded in an onnxruntime CPU session.

    `threads` sets onnxruntime's intra-op threads (None: its default, one per physical core); `file` picks another
    graph of the folder than the manifest's (e.g. "onnx/model.onnx" beside a quantized one).
    """

    def __init__(self, folder: Path, *, threads: int | None = None, file: str | None = None) -> None:
        import numpy as np
        import onnxruntime as ort  # extra: ml

        self.folder = Path(folder)
        self.manifest: dict[str, Any] = json.loads((self.folder / ONNX_MANIFEST).read_text())
        self.file = file or self.manifest["file"]
        self.num_layers = int(self.manifest["num_layers"])
        self.num_kv_heads = int(self.manifest["num_kv_heads"])
        self.head_dim = int(self.manifest["head_dim"])
        self.vocab_size = int(self.manifest["vocab_size"])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initializers and the like are not ours to act on
        self.session = ort.InferenceSession(str(self.folder / self.file), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}
        past = next((i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")), None)
        self._np = np
        self._dtype = np.dtype(_DTYPES.get(past.type, "float32") if past is not None else "float32")
        self._outputs = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int = 1) -> list[Any]:
        """An empty cache: 2 * num_layers arrays of shape (batch, kv_heads, 0, head_dim), keys and values by layer."""
        shape = (batch, self.num_kv_heads, 0, self.head_dim)
        return [self._np.zeros(shape, self._dtype) for _ in range(2 * self.num_layers)]

    def forward(self, input_ids: Any, past: list[Any] | None = None, attention_mask: Any | None = None,
                position_ids: Any | None = None) -> tuple[Any, list[Any]]:
        """Run the graph once: input_ids (batch, seq) int64 after `past` (None: empty) -> (logits (batch, seq,
        vocab) float32, the cache with these tokens appended).

        attention_mask (batch, past + seq) defaults to all ones; position_ids (batch, seq) to past..past + seq - 1
        (left-padded rows need both given).
        """
        np = self._np
        input_ids = np.asarray(input_ids, dtype=np.int64)
        batch, seq = input_ids.shape
        past = past if past is not None else self.empty_past(batch)
        done = past[0].shape[2]
        if attention_mask is None:
            attention_mask = np.ones((batch, done + seq), dtype=np.int64)
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(done, done + seq, dtype=np.int64), (batch, seq))
        feed: dict[str, Any] = {"input_ids": input_ids, "attention_mask": np.asarray(attention_mask, np.int64),
                                "position_ids": np.ascontiguousarray(position_ids, dtype=np.int64)}
        for layer in range(self.num_layers):
            feed[f"past_key_values.{layer}.key"] = past[2 * layer]
            feed[f"past_key_values.{layer}.value"] = past[2 * layer + 1]
        feed = {name: value for name, value in feed.items() if name in self._inputs}
        logits, *present = self.session.run(self._outputs, feed)
        return logits.astype(np.float32, copy=False), present

    def logits(self, input_ids: Any) -> Any:
        """Logits (batch, seq, vocab) float32 of input_ids (batch, seq) int64, from an empty cache."""
        return self.forward(input_ids)[0]

    def generate(self, input_ids: list[int], max_new_tokens: int, *, eos: Collection[int] = frozenset(),
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[int]:
        """Yield each new token id as soon as it is chosen (an eos id is yielded, then it stops), reusing the cache.

        Greedy (the highest logit, first on ties as numpy's argmax) when temperature is 0, else sampled from the
        softmax at that temperature within the top_p nucleus (`sample`).
        """
        np = self._np
        rng = np.random.default_rng(seed)
        ids = np.asarray([input_ids], dtype=np.int64)
        past = None
        for _ in range(max_new_tokens):
            logits, past = self.forward(ids, past)
            token = sample(logits[0, -1], temperature, top_p, rng)
            yield token
            if token in eos:
                return
            ids = np.asarray([[token]], dtype=np.int64)


def sample(logits: Any, temperature: float, top_p: float, rng: Any) -> int:
    """One token id from a (vocab,) logits row: argmax at temperature 0, else softmax(logits / temperature) cut to
    the smallest set of tokens whose probability reaches top_p (nucleus sampling, Holtzman et al. 2019)."""
    import numpy as np

    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(len(probs), p=probs))

