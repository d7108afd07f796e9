"""The built-in optimization methods: cast, bitsandbytes, weight-only, pruning, MLP channels, ONNX export."""

from __future__ import annotations

from collections.abc import Callable

from modelbay.engine.optimization.methods.base import Method
from modelbay.engine.optimization.methods.bnb import BitsAndBytes
from modelbay.engine.optimization.methods.cast import Cast
from modelbay.engine.optimization.methods.channels import Channels
from modelbay.engine.optimization.methods.onnx import OnnxExport
from modelbay.engine.optimization.methods.prune import Prune
from modelbay.engine.optimization.methods.weightonly import WeightOnly
from modelbay.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def register_optimization_methods(register: Callable[[type[Method]], type[Method]]) -> None:
    """Register Cast, BitsAndBytes, WeightOnly, Prune, Channels and OnnxExport (torch is imported only to apply)."""
    for method in (Cast, BitsAndBytes, WeightOnly, Prune, Channels, OnnxExport):
        register(method)
