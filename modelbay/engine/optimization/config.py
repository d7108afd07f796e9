"""What an optimization job is asked to do: the seed's `OptimizationConfig` (the REST body), recipes, and the steps.

The body is the original design's `OptimizationConfig`, extended where the seed is silent:

    {"type": "quantization" | "pruning" | "export" | "recipe" | "distillation",
     "quantization": {"method": "dynamic" | "static" | "qat" | "bitsandbytes" | "cast" | "weight-only" | "onnx",
                      "bits": 4 | 8 | 16, "dataType": "int8" | "int4" | "fp16" | "bf16" | "nf4" | "fp4"},
     "pruning": {"method": "magnitude" | "wanda" | "structured" | "unstructured", "sparsity": 0.5,
                 "structure": "unstructured" | "2:4" | "channels"},
     "export": {"format": "onnx", "int8": false | true | "dynamic" | "static"},
     "recipe": "<name in config/optimization_recipes.yaml>",
     "targetReduction": 75,          # percent of the parent's size on disk to remove; picks the bits (or sparsity)
     "preserveAccuracy": true}       # true: the default perplexity budget; a number: the budget in percent; false: none

`steps(config)` turns it into the list of `Step`s the job applies in order, each a registered method
(`methods/`) with params its `check` has validated and completed; every impossible combination is refused here in
one line (`OptimizationConfigInvalid`), before anything is queued:

- quantization: 16 bits is a cast (fp16, or bf16); 8 bits is bitsandbytes LLM.int8 ("dynamic", the default),
  torchao/quanto weight-only ("weight-only") or onnxruntime int8 ("onnx"; "static" with calibration data); 4 bits is
  bitsandbytes nf4/fp4, or int4 weight-only. An 8-bit data type with 4 bits (or the reverse), quantization-aware
  training and distillation are refused with what to use instead.
- pruning: magnitude or Wanda, unstructured or 2:4 (which fixes sparsity at 0.5), or whole MLP channels
  ("structured", or `structure: channels`), which makes the model smaller and faster.
- export: ONNX, with int8 optionally.

`targetReduction` without bits picks the least aggressive precision that removes at least that much (from the
parent's stored precision); with pruning and no sparsity, the channel fraction. A goal no single step reaches is
refused with the figure each would give.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from modelbay.engine.errors import OptimizationConfigInvalid

__all__ = ["BUDGET_KINDS", "ExportSpec", "OptimizationConfig", "OptimizationRequest", "PruningSpec",
           "QuantizationSpec", "Recipe", "Step", "budget_kind", "load_recipes", "parse_config", "steps"]

RECIPES_FILE = "optimization_recipes.yaml"
# Bits per stored parameter of the precisions a parent may be stored in (config.json's dtype / torch_dtype).
STORED_BITS = {"float32": 32, "float16": 16, "bfloat16": 16}
# The kinds a variant's default perplexity budget is chosen by (`compare.Budget`).
BUDGET_KINDS = ("16-bit", "8-bit", "4-bit", "pruning", "onnx", "onnx-int8")


class _Section(BaseModel):
    """A part of the body: unknown names are refused, camelCase (REST) and snake_case names are both accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class QuantizationSpec(_Section):
    """How to quantize: the seed's method/bits/dataType; the library follows from them (module docstring)."""

    method: Literal["dynamic", "static", "qat", "bitsandbytes", "cast", "weight-only", "onnx"] = "dynamic"
    bits: Literal[4, 8, 16] | None = None  # None: picked from targetReduction
    data_type: Literal["int8", "int4", "fp16", "bf16", "nf4", "fp4"] | None = None
    double_quant: bool = True  # 4-bit bitsandbytes: quantize the quantization constants too


class PruningSpec(_Section):
    """How to prune: the seed's method/sparsity, and the structure (unstructured, 2:4, channels)."""

    method: Literal["magnitude", "wanda", "structured", "unstructured"] = "magnitude"
    sparsity: float | None = Field(None, gt=0.0, lt=1.0)  # fraction of weights (or MLP channels) removed
    structure: Literal["unstructured", "2:4", "channels"] | None = None


class ExportSpec(_Section):
    """An export: ONNX (for onnxruntime and the browser), int8 optionally."""

    format: Literal["onnx"] = "onnx"
    int8: bool | Literal["dynamic", "static"] = False


class StepSpec(_Section):
    """One step written out: a registered method's name and its params (recipes, or the REST body's `steps`)."""

    method: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizationConfig(_Section):
    """The seed's OptimizationConfig (the module docstring has every field)."""

    type: Literal["quantization", "pruning", "export", "recipe", "distillation"] = "quantization"
    quantization: QuantizationSpec | None = None
    pruning: PruningSpec | None = None
    export: ExportSpec | None = None
    recipe: str | None = Field(None, max_length=64)
    steps: list[StepSpec] | None = Field(None, max_length=16)
    target_reduction: float | None = Field(None, ge=0.01, le=99.99)  # percent of size on disk removed
    # True: the kind's default budget; False: none; a number: the largest perplexity increase allowed, in percent.
    preserve_accuracy: bool | Annotated[float, Field(ge=0.0, le=1_000.0)] = True

    @field_validator("preserve_accuracy", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        """One plain message for a budget that is neither true/false nor a percent from 0 to 1000."""
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1000:
            return float(value)
        raise ValueError(f"must be true, false or a percent from 0 to 1000, not {value!r}")


class OptimizationRequest(OptimizationConfig):
    """`POST /api/optimization/jobs`: the config plus the model to optimize, the new name and a dataset (held-out
    and calibration text; the shipped text when absent)."""

    model: str = Field(min_length=1, max_length=200)
    name: str | None = Field(None, max_length=96)
    dataset: Annotated[str, Field(min_length=1, max_length=200)] | None = None  # an id (a number is read as one)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_id(cls, value: Any) -> Any:
        """A dataset's id may come as a JSON number."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def config(self) -> OptimizationConfig:
        """The config part alone."""
        return OptimizationConfig.model_validate(self.model_dump(exclude={"model", "name", "dataset"}))


@dataclass(frozen=True)
class Step:
    """One method applied to the previous step's folder: a registered method's name and its checked params."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON for job params and lineage."""
        return {"method": self.method, "params": dict(self.params)}

    @classmethod
    def of(cls, value: dict[str, Any]) -> Step:
        return cls(str(value["method"]), dict(value.get("params") or {}))


@dataclass(frozen=True)
class Recipe:
    """A named list of steps from `config/optimization_recipes.yaml`."""

    name: str
    description: str
    steps: tuple[Step, ...]


def parse_config(body: dict[str, Any]) -> OptimizationConfig:
    """Validate a body into a config, refusing the first problem in one line.

    Raises:
        OptimizationConfigInvalid: an unknown name, a wrong type or a value out of range.
    """
    try:
        return OptimizationConfig.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> OptimizationConfigInvalid:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"] if not isinstance(p, int)) or "config"
    problem = "not a setting" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if error["type"] not in ("extra_forbidden", "value_error") and isinstance(given, str | int | float | bool):
        problem = f"{problem} (got {given!r})"
    return OptimizationConfigInvalid(where, problem)


@functools.cache
def load_recipes() -> dict[str, Recipe]:
    """The shipped recipes by name, in the YAML's order.

    Raises:
        OptimizationConfigInvalid: the file names a step badly (a packaging mistake; a test reads every recipe).
    """
    raw = yaml.safe_load(resources.files("modelbay.config").joinpath(RECIPES_FILE).read_text(encoding="utf-8"))
    recipes = {}
    for name, spec in (raw or {}).items():
        listed = tuple(Step(str(s["method"]), dict(s.get("params") or {})) for s in spec["steps"])
        recipes[name] = Recipe(name, str(spec.get("description", "")).strip(), listed)
    return recipes


def steps(config: OptimizationConfig, *, stored_dtype: str | None = None, calibration: bool = False) -> list[Step]:
    """The checked steps a config asks for, in order (module docstring).

    `stored_dtype` is the parent's stored precision (config.json's dtype), which targetReduction is measured from;
    `calibration` says whether the person gave calibration data (a dataset): static quantization needs it.

    Raises:
        OptimizationConfigInvalid: an impossible or unsupported combination, or a step its method refuses.
    """
    from modelbay.engine.optimization.methods import METHODS

    if config.type == "distillation":
        raise OptimizationConfigInvalid("type", "distillation is not offered (it trains a new student model); use "
                                        "quantization, pruning, export or a recipe")
    _sections_match(config)
    if config.type == "recipe" or config.recipe:
        found = _recipe_steps(config)
    elif config.steps:
        found = [Step(s.method, dict(s.params)) for s in config.steps]
    elif config.type == "quantization":
        found = [_quantization(config.quantization or QuantizationSpec(), config.target_reduction, stored_dtype,
                               calibration)]
    elif config.type == "pruning":
        found = [_pruning(config.pruning, config.target_reduction)]
    else:
        export = config.export or ExportSpec()
        found = [Step("onnx", {"int8": _int8(export.int8, calibration)})]
    checked = []
    for i, step in enumerate(found):
        cls = METHODS.get(step.method)
        if cls is None:
            raise OptimizationConfigInvalid(f"steps[{i}].method", f"no method `{step.method}` (known: "
                                            f"{', '.join(sorted(METHODS))})")
        checked.append(Step(step.method, cls().check(step.params)))
    for i, step in enumerate(checked[:-1]):
        if METHODS[step.method]().needs(step.params).output == "onnx":
            raise OptimizationConfigInvalid(f"steps[{i}]", "an ONNX export must be the last step (nothing reads "
                                            "its output but onnxruntime)")
        if step.method in ("bnb", "weight-only"):
            raise OptimizationConfigInvalid(f"steps[{i}]", "a quantized model cannot be changed further: quantize "
                                            "last (prune, then quantize)")
    return checked


def _sections_match(config: OptimizationConfig) -> None:
    """Refuse a section the config's type would silently ignore (`{"type": "export", "quantization": {...}}`), and
    a size target a recipe or explicit steps would not use."""
    sections = {"quantization": config.quantization, "pruning": config.pruning, "export": config.export}
    wanted = {"quantization": "quantization", "pruning": "pruning", "export": "export"}.get(config.type)
    for section, value in sections.items():
        if value is not None and section != wanted:
            article = "an" if config.type[0] in "aeiou" else "a"
            raise OptimizationConfigInvalid(section, f"{article} {config.type} job does not read it: set type "
                                            f"{section}, or leave the {section} section out")
    if config.target_reduction is not None:
        if config.type in ("recipe", "export") or config.steps or config.recipe:
            raise OptimizationConfigInvalid("targetReduction", "a recipe, an export or explicit steps take no size "
                                            "target: leave targetReduction out")
        given = (config.quantization and config.quantization.bits) or (config.pruning and config.pruning.sparsity)
        if given:
            raise OptimizationConfigInvalid("targetReduction", "bits or sparsity are given too: give one or the "
                                            "other")
    if config.steps and (config.recipe or config.type != "recipe" and any(sections.values())):
        raise OptimizationConfigInvalid("steps", "give steps alone, not with a recipe or a section")


def _recipe_steps(config: OptimizationConfig) -> list[Step]:
    recipes = load_recipes()
    if not config.recipe:
        raise OptimizationConfigInvalid("recipe", f"type recipe needs a recipe name ({', '.join(recipes)})")
    recipe = recipes.get(config.recipe)
    if recipe is None:
        raise OptimizationConfigInvalid("recipe", f"no recipe `{config.recipe}` (known: {', '.join(recipes)})")
    return list(recipe.steps)


def _int8(value: bool | str, calibration: bool) -> bool | str:
    if value == "static" and not calibration:
        raise OptimizationConfigInvalid("export.int8", "static int8 needs calibration data: give a dataset "
                                        "(`dataset:`), or use dynamic int8")
    return "dynamic" if value is True else value


def _quantization(q: QuantizationSpec, target: float | None, stored_dtype: str | None, calibration: bool) -> Step:
    bits = q.bits or _bits_for(target, stored_dtype)
    data_type = q.data_type
    eight, four, sixteen = ("int8",), ("nf4", "fp4", "int4"), ("fp16", "bf16")
    if data_type is not None:
        fits = {8: eight, 4: four, 16: sixteen}[bits]
        if data_type not in fits:
            raise OptimizationConfigInvalid("quantization.dataType", f"{data_type} is not a {bits}-bit type: use "
                                            f"{' or '.join(fits)} with bits {bits}")
    if q.method == "qat":
        raise OptimizationConfigInvalid("quantization.method", "quantization-aware training is not offered: use "
                                        "dynamic (bitsandbytes) or static (ONNX int8 with calibration data)")
    if q.method == "static":
        if bits != 8:
            raise OptimizationConfigInvalid("quantization.bits", "static quantization is int8 (onnxruntime): use "
                                            "bits 8")
        return Step("onnx", {"int8": _int8("static", calibration)})
    if bits == 16:
        if q.method not in ("dynamic", "cast"):
            raise OptimizationConfigInvalid("quantization.method", f"16 bits is a cast, not {q.method}: use method "
                                            "cast (or dynamic)")
        return Step("cast", {"dtype": "bfloat16" if data_type == "bf16" else "float16"})
    if q.method == "cast":
        raise OptimizationConfigInvalid("quantization.method", f"a cast gives 16 bits, not {bits}: use bits 16, or "
                                        "method dynamic for bitsandbytes")
    if q.method == "onnx":
        if bits != 8:
            raise OptimizationConfigInvalid("quantization.bits", "onnxruntime quantization here is int8: use bits 8")
        return Step("onnx", {"int8": "dynamic"})
    if q.method == "weight-only" or data_type == "int4":
        return Step("weight-only", {"bits": bits})
    if bits == 8:
        return Step("bnb", {"bits": 8})
    return Step("bnb", {"bits": 4, "quant_type": data_type or "nf4", "double_quant": q.double_quant})


def _bits_for(target: float | None, stored_dtype: str | None) -> int:
    """The least aggressive precision removing at least `target` percent of a parent stored at `stored_dtype`."""
    if target is None:
        raise OptimizationConfigInvalid("quantization.bits", "give bits (4, 8 or 16) or a targetReduction")
    stored = STORED_BITS.get(stored_dtype or "float32", 32)
    options = [(bits, 100.0 * (1 - bits / stored)) for bits in (16, 8, 4) if bits < stored]
    for bits, removed in options:
        if removed + 1e-9 >= target:
            return bits
    reachable = ", ".join(f"{bits}-bit removes about {removed:.0f}%" for bits, removed in options) or "nothing"
    raise OptimizationConfigInvalid("targetReduction", f"{target:g}% is beyond what quantizing a {stored}-bit model "
                                    f"gives ({reachable}); lower it, or prune then quantize (`/optimize recipes`)")


def _pruning(p: PruningSpec | None, target: float | None) -> Step:
    p = p or PruningSpec()
    # A size target needs weights really removed: whole channels, unless a structure is asked for.
    by_target = p.sparsity is None and target is not None
    structure = p.structure or ("channels" if p.method == "structured" or by_target else "unstructured")
    method = p.method if p.method in ("magnitude", "wanda") else "magnitude"
    sparsity = p.sparsity
    if sparsity is None and target is not None:
        sparsity = target / 100.0
    if structure == "2:4":
        if sparsity is not None and abs(sparsity - 0.5) > 1e-9:
            raise OptimizationConfigInvalid("pruning.sparsity", f"2:4 sparsity is exactly 0.5, not {sparsity:g}: "
                                            "leave sparsity out, or use unstructured")
        return Step("prune", {"method": method, "sparsity": 0.5, "structure": "2:4"})
    if sparsity is None:
        raise OptimizationConfigInvalid("pruning.sparsity", "give a sparsity between 0 and 1 (e.g. 0.5), or a "
                                        "targetReduction")
    if structure == "channels":
        return Step("channels", {"sparsity": sparsity, "method": method})
    return Step("prune", {"method": method, "sparsity": sparsity, "structure": "unstructured"})


def budget_kind(checked: list[Step]) -> str:
    """The kind (BUDGET_KINDS) a list of steps is budgeted as: its most lossy step's."""
    kinds = []
    for step in checked:
        p = step.params
        if step.method == "onnx":
            kinds.append("onnx-int8" if p.get("int8") else "onnx")
        elif step.method in ("bnb", "weight-only"):
            kinds.append("4-bit" if p.get("bits") == 4 else "8-bit")
        elif step.method == "cast":
            kinds.append("16-bit")
        else:
            kinds.append("pruning")
    order = ("4-bit", "pruning", "8-bit", "onnx-int8", "16-bit", "onnx")  # most lossy first
    return min(kinds, key=order.index) if kinds else "16-bit"
