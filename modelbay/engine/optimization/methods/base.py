"""The optimization method base class, what a method needs and returns, and the registry of methods.

A method turns one complete model folder (transformers layout) into one variant folder. Its `check` validates and
completes the settings without importing torch (the bot and the API call it before a job is queued); `apply`
runs in the job, imports what it needs, reports progress through `Work.progress` (which raises JobCanceled when
a cancel was asked: it is let through) and raises OptimizationFailed for a model it cannot handle.

The helpers below the registry are shared by the built-in methods: settings checks that raise one-line
OptimizationConfigInvalid errors, loading and saving a causal LM with its tokenizer files, the Linear layers of the
decoder blocks, and the input norms of those layers on calibration windows, layer by layer (as Wanda does).
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from modelbay.engine.errors import OptimizationConfigInvalid, OptimizationFailed
from modelbay.engine.extensions import Extensions

__all__ = ["METHODS", "Applied", "Method", "Needs", "Work", "register_method"]

# Files of a model folder that hold weights (written anew by every method) rather than config or tokenizer.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".onnx_data")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
CALIBRATION_BATCH = 8  # calibration windows run through the model at once


@dataclass(frozen=True)
class Needs:
    """What a method needs to run, from its settings."""

    cuda: bool = False  # runs only on a CUDA GPU
    calibration: bool = False  # needs calibration token windows (Work.calibration)
    output: Literal["transformers", "onnx"] = "transformers"  # the kind of folder it writes


@dataclass(frozen=True)
class Applied:
    """The folder a method wrote and the facts it reports (JSON values: sparsity, dtype, bits, parameters...)."""

    folder: Path
    facts: dict[str, Any]


class Work(Protocol):
    """What a method gets from the job that runs it."""

    device: str  # "cpu" or "cuda"

    def progress(self, fraction: float, message: str) -> None:
        """Report the fraction (0..1) of this step done; raises JobCanceled when a cancel was asked."""

    def calibration(self, n: int, length: int) -> list[list[int]]:
        """Return up to n windows of `length` token ids (the person's data or the shipped text), apart from held-out."""


class Method(ABC):
    """One way to make a variant of a model: a name, a label, settings checked without torch, and `apply`.

    A new method is a subclass registered through the `register_optimization_methods` plugin hook; the built-ins
    are registered the same way (`modelbay/default_plugins/methods.py`).
    """

    name: ClassVar[str] = "method"  # registry key ("cast", "bnb", "weight-only", "prune", "channels", "onnx")
    label: ClassVar[str] = "method"  # what people read ("bitsandbytes 8-bit")

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return the settings completed with defaults; raise OptimizationConfigInvalid for an unknown key, a bad
        value or an impossible combination. Pure and cheap: no torch import."""
        known(params, ())
        return {}

    def needs(self, params: dict[str, Any]) -> Needs:
        """What this method needs with these (checked) settings."""
        return Needs()

    def suffix(self, params: dict[str, Any]) -> str:
        """The part a variant's default name gets from this method ("int8", "nf4", "fp16", "wanda50", "ch30")."""
        return self.name

    def describe(self, params: dict[str, Any]) -> str:
        """One line for people: the label and the settings."""
        shown = ", ".join(f"{key} {value}" for key, value in params.items())
        return f"{self.label} ({shown})" if shown else self.label

    @abstractmethod
    def apply(self, source: Path, out: Path, params: dict[str, Any], work: Work) -> Applied:
        """Write the variant of the model folder `source` into the empty folder `out` (safetensors only, tokenizer
        and generation config copied); raise OptimizationFailed for a model this method cannot handle."""


def _check_method(cls: type[Method]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"{cls!r} is not a Method subclass")  # noqa: TRY004 - Extensions' check contract


# name -> Method subclass; the built-ins come from modelbay/default_plugins/methods.py.
METHODS: Extensions[type[Method]] = Extensions("register_optimization_methods", lambda cls: cls.name, _check_method)


def register_method(cls: type[Method]) -> type[Method]:
    """Make a method available by its name (replacing one of the same name); plugins use the hook instead."""
    return METHODS.register(cls)


# Settings checks: each raises OptimizationConfigInvalid(setting, problem) with a one-line problem.


def known(params: dict[str, Any], keys: Sequence[str]) -> None:
    """Refuse a key this method does not take."""
    for key in params:
        if key not in keys:
            takes = f"it takes {', '.join(keys)}" if keys else "it takes no settings"
            raise OptimizationConfigInvalid(str(key), f"not a setting of this method; {takes}")


def choice(params: dict[str, Any], key: str, options: Sequence[Any], default: Any) -> Any:
    """The value of `key`, one of `options` (strings compared without case)."""
    value = params.get(key, default)
    if isinstance(value, str):
        value = value.strip().lower()
        if value.isdigit() and any(isinstance(option, int) for option in options):
            value = int(value)
    for option in options:
        if value == option and type(value) is type(option):
            return option
    listed = " or ".join(str(option) for option in options)
    raise OptimizationConfigInvalid(key, f"{value!r} is not one of {listed}")


def fraction(params: dict[str, Any], key: str, default: float, *, low: float = 0.0, high: float = 1.0) -> float:
    """The value of `key`, a number strictly between `low` and `high`."""
    value = params.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%")) / (100 if value.strip().endswith("%") else 1)
        except ValueError:
            raise OptimizationConfigInvalid(key, f"{value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptimizationConfigInvalid(key, f"{value!r} is not a number")
    if not low < value < high:
        raise OptimizationConfigInvalid(key, f"{value:g} is out of range; it must be above {low:g} and below {high:g}")
    return float(value)


def whole(params: dict[str, Any], key: str, default: int, *, low: int, high: int) -> int:
    """The value of `key`, a whole number from `low` to `high`."""
    value = params.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptimizationConfigInvalid(key, f"{value!r} is not a whole number")
    if not low <= value <= high:
        raise OptimizationConfigInvalid(key, f"{value} is out of range; it must be from {low} to {high}")
    return value


def flag(params: dict[str, Any], key: str, default: bool) -> bool:
    """The value of `key`, true or false ("true"/"false"/"yes"/"no" accepted)."""
    value = params.get(key, default)
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
        return value.strip().lower() in {"true", "yes", "on", "1"}
    if not isinstance(value, bool):
        raise OptimizationConfigInvalid(key, f"{value!r} is not true or false")
    return value


def calibration_settings(params: dict[str, Any], method: str) -> dict[str, Any]:
    """Wanda's calibration settings (`samples` windows of `window` tokens) when `method` is "wanda"; refused for
    magnitude, which reads no text."""
    if method == "wanda":
        return {"samples": whole(params, "samples", 32, low=1, high=4096),
                "window": whole(params, "window", 256, low=8, high=32768)}
    for key in ("samples", "window"):
        if key in params:
            raise OptimizationConfigInvalid(key, "only wanda uses calibration text; magnitude pruning has none")
    return {}


# Model folders.


def copy_companions(source: Path, out: Path) -> None:
    """Copy every file of `source` that is not weights (tokenizer, chat template, generation config, readme)."""
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES) and path.name not in _WEIGHT_INDEXES:
            shutil.copy2(path, out / path.name)


def load_causal_lm(source: Path, dtype: str = "auto", **kwargs: Any) -> Any:
    """Load a transformers causal LM from a folder in eval mode, in `dtype` ("auto": the one its config names);
    raises OptimizationFailed when it is not one."""
    import torch  # extra: ml
    from transformers import AutoModelForCausalLM  # extra: ml

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                                                     **kwargs)
    except (ValueError, OSError, KeyError) as error:
        raise OptimizationFailed("loading", source.name, f"transformers could not load it as a causal LM ({error})") \
            from error
    return model.eval()


def save_model(model: Any, source: Path, out: Path) -> None:
    """Write the model's weights (safetensors) and config into `out`, with the source's tokenizer files."""
    copy_companions(source, out)
    model.save_pretrained(out, safe_serialization=True)


def folder_bytes(folder: Path) -> int:
    """Bytes of the weight files in a folder."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.name.endswith(_WEIGHT_SUFFIXES))


def decoder_layers(model: Any, method: str, model_name: str) -> list[Any]:
    """The decoder blocks of a causal LM (`model.model.layers` for Llama-style models, or the first ModuleList of
    more than one block); raises OptimizationFailed when there is none."""
    import torch  # extra: ml

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and len(layers):
        return list(layers)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1:
            return list(module)
    raise OptimizationFailed(method, model_name, "no decoder blocks were found in the model")


def linears(layer: Any) -> dict[str, Any]:
    """The nn.Linear modules of one decoder block, by their name inside it."""
    import torch  # extra: ml

    return {name: module for name, module in layer.named_modules() if isinstance(module, torch.nn.Linear)}


class _Stop(Exception):
    pass


def layer_input_norms(model: Any, layers: Sequence[Any], windows: list[list[int]], device: str,
                      select: Callable[[Any], dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """For each block in order, the squared L2 norm of every input feature of its selected Linear modules over
    all calibration tokens: yields (index, {name: tensor of shape (in_features,)}).

    Computed layer by layer as Wanda does (Sun et al. 2023, arXiv:2306.11695, `prune_wanda`): the caller changes
    block i after it is yielded, and block i+1's inputs then come from the changed blocks. The model runs only
    up to the block measured.
    """
    import torch  # extra: ml

    batches = _batches(windows, device)
    for index, layer in enumerate(layers):
        modules = select(layer)
        sums = {name: torch.zeros(module.in_features, dtype=torch.float64, device=device)
                for name, module in modules.items()}

        def record(name: str, sums: dict[str, Any] = sums) -> Callable[..., None]:
            def hook(_module: Any, args: tuple[Any, ...]) -> None:
                x = args[0].detach().to(torch.float64)
                sums[name] += (x.reshape(-1, x.shape[-1]) ** 2).sum(dim=0)
            return hook

        def stop(*_: Any) -> None:
            raise _Stop

        handles = [module.register_forward_pre_hook(record(name)) for name, module in modules.items()]
        handles.append(layer.register_forward_hook(stop))
        try:
            with torch.inference_mode():
                for batch in batches:
                    try:
                        model(input_ids=batch, use_cache=False)
                    except _Stop:
                        pass
        finally:
            for handle in handles:
                handle.remove()
        yield index, {name: total.float() for name, total in sums.items()}


def _batches(windows: list[list[int]], device: str) -> list[Any]:  # torch tensors
    """Windows as (batch, length) token tensors: windows of one length together, CALIBRATION_BATCH at most."""
    import torch  # extra: ml

    by_length: dict[int, list[list[int]]] = {}
    for window in windows:
        if window:
            by_length.setdefault(len(window), []).append(window)
    return [torch.tensor(group[start:start + CALIBRATION_BATCH], dtype=torch.long, device=device)
            for group in by_length.values() for start in range(0, len(group), CALIBRATION_BATCH)]


def calibration_windows(work: Work, samples: int, length: int, method: str, model_name: str) -> list[list[int]]:
    """The calibration windows of the job; raises OptimizationFailed when there are none."""
    windows = [window for window in work.calibration(samples, length) if window]
    if not windows:
        raise OptimizationFailed(method, model_name, "there was no calibration text to measure activations on")
    return windows
