"""The built-in inference backends: vLLM's OpenAI-compatible server over HTTP, transformers in this process, and
onnxruntime in this process for ONNX variants."""

from __future__ import annotations

from collections.abc import Callable

from modelbay.engine.inference.backends.base import Backend
from modelbay.engine.inference.backends.onnx import OnnxBackend
from modelbay.engine.inference.backends.openai import OpenAIBackend
from modelbay.engine.inference.backends.transformers import TransformersBackend
from modelbay.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def register_backends(register: Callable[[type[Backend]], type[Backend]]) -> None:
    """Register OpenAIBackend ("vllm"), TransformersBackend ("transformers"; torch is imported only to load) and
    OnnxBackend ("onnx"; onnxruntime is imported only to load)."""
    register(OpenAIBackend)
    register(TransformersBackend)
    register(OnnxBackend)
