"""Optimization methods: the base class, the registry, and the built-ins (one module each, torch imported only
inside `apply`): cast, bnb, weight-only, prune, channels, onnx."""

from modelbay.engine.optimization.methods.base import (
    METHODS,
    Applied,
    Method,
    Needs,
    Work,
    register_method,
)

__all__ = ["METHODS", "Applied", "Method", "Needs", "Work", "register_method"]
