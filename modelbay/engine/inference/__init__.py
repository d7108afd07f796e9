"""Inference: backends (base, OpenAI-compatible HTTP for vLLM, in-process transformers), fitting a
conversation to a model's context, chat templates, and the vLLM servers started for installed models."""

from modelbay.engine.inference.backends.base import Adjusted, Backend, Finished, Generation, InferenceUnavailable
from modelbay.engine.inference.backends.openai import OpenAIBackend
from modelbay.engine.inference.backends.transformers import TransformersBackend
from modelbay.engine.inference.context import Prompt, fit_to_context
from modelbay.engine.inference.serving import ServerRecord, Servers

__all__ = [
    "Adjusted", "Backend", "Finished", "fit_to_context", "Generation", "InferenceUnavailable", "OpenAIBackend",
    "Prompt", "ServerRecord", "Servers", "TransformersBackend",
]
