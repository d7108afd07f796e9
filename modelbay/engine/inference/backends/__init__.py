"""Inference backends: one base class, an OpenAI-compatible HTTP backend (vLLM) and in-process transformers."""

from modelbay.engine.inference.backends.base import Adjusted, Backend, Finished, Generation, InferenceUnavailable
from modelbay.engine.inference.backends.openai import OpenAIBackend
from modelbay.engine.inference.backends.transformers import TransformersBackend

__all__ = [
    "Adjusted", "Backend", "Finished", "Generation", "InferenceUnavailable", "OpenAIBackend", "TransformersBackend",
]
