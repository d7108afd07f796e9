"""What a training job is asked to do: the typed `TrainingConfig`, the shipped templates, overrides and the REST body.

`config/training_templates.yaml` names presets (chat-lora, instruction-lora, code-completion, qlora-4bit,
continued-pretraining); each sets only what differs from the defaults below. A job's config is its template deep-merged
with the job's overrides and validated here (`resolve`), so a typo or an out-of-range value is refused in one line
before anything is queued.

The config's shape is the seed's `TrainingConfig` REST body without the two ids: `parameters` (epochs, batch size,
learning rate, max length, `lora`, `quantization`, and the other training knobs), `hardware` and `evaluation`. Every
field takes its snake_case name or its camelCase REST name (`learning_rate` or `learningRate`). `TrainingRequest` is
that REST body (`baseModelId`, `datasetId`, `template`, `name`, `parameters`, `hardware`, `evaluation`); its
`overrides()` are exactly what `resolve` takes, and `TrainingRequest.of` writes a config back the same way.

Chat commands pass flat `key:value` pairs: a dotted path (`parameters.lora.r`, `evaluation.validation`), a field of
`parameters` by its own name (`epochs`, `max_length`), or a short name from `SHORT_NAMES` (`lr`, `batch`, `rank`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from modelbay.engine.errors import TemplateNotFound, TrainingConfigInvalid

__all__ = [
    "DEFAULT_TEMPLATE", "SHORT_NAMES", "EvaluationSettings", "HardwareSettings", "LoraSettings", "Parameters",
    "QuantizationSettings", "Template", "TrainingConfig", "TrainingRequest", "flat_overrides", "load_templates",
    "resolve", "template",
]

DEFAULT_TEMPLATE = "chat-lora"
TEMPLATES_FILE = "training_templates.yaml"

# Short names chat commands take (`/train start m d lr:1e-4 batch:8 rank:8`), each a path into the config.
SHORT_NAMES: dict[str, str] = {
    "lr": "parameters.learning_rate",
    "batch": "parameters.batch_size",
    "rank": "parameters.lora.r",
    "alpha": "parameters.lora.alpha",
    "steps": "parameters.max_steps",
    "merge": "parameters.merge",
    "processes": "hardware.processes",
    "precision": "hardware.precision",
    "device": "hardware.device",
    "strategy": "hardware.strategy",
    "validation": "evaluation.validation",
}


class _Section(BaseModel):
    """A part of the config: unknown names are refused, REST's camelCase names are accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class LoraSettings(_Section):
    """The LoRA adapter trained on the frozen base model (Hu et al. 2021)."""

    r: int = Field(16, ge=1, le=512, description="Rank of each adapter's two matrices (vLLM serves ranks up to its "
                   "--max-lora-rank: 1, 8, 16, 32, 64, ...).")
    alpha: int = Field(32, ge=1, le=4096, description="Scale numerator: the update is multiplied by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: str | list[str] = Field(
        "all-linear", description='"all-linear" (every linear layer but the output head, as QLoRA) or a list of '
        "module names (q_proj, v_proj, ...).")


class QuantizationSettings(_Section):
    """Loading the frozen base model quantized (QLoRA): bitsandbytes 4-bit on CUDA only."""

    bits: Literal[4] | None = Field(None, description="4 for QLoRA's 4-bit base model; null for none.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: NormalFloat4 or FP4.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (about 0.4 bit/param "
                               "saved).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="Type the 4-bit "
                                                                     "weights are computed in.")


class Parameters(_Section):
    """How the adapter is trained: the seed's `parameters` (epochs, batch size, learning rate, max length, LoRA,
    quantization) and the knobs beside them."""

    epochs: float = Field(3.0, gt=0, le=1000, description="Passes over the training rows (fractions allowed).")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="Optimizer steps to stop after "
                                  "(overrides epochs when set).")
    batch_size: int = Field(4, ge=1, le=4096, description="Rows per forward pass on each process.")
    gradient_accumulation: int = Field(1, ge=1, le=1024, description="Forward passes per optimizer step "
                                       "(effective batch = batch_size x this x processes).")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning rate schedule after warm-up.")
    warmup: float = Field(0.03, ge=0, lt=1, description="Share of the steps the learning rate rises over.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, le=1000, description="Gradient clipping norm.")
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "adamw_torch", description="Optimizer (the 8-bit ones need bitsandbytes and CUDA).")
    max_length: int = Field(2048, ge=8, le=1_048_576, description="Longest row in tokens; longer rows follow "
                            "`overlong`.")
    overlong: Literal["drop", "truncate", "fail"] = Field(
        "drop", description="What happens to a row over max_length: left out, cut, or the job refused.")
    loss: Literal["completion_only", "all_tokens"] = Field(
        "completion_only", description="Train on the answers only (prompts masked) or on every token.")
    save_steps: int = Field(50, ge=1, le=10_000_000, description="Optimizer steps between checkpoints (what a "
                            "resume or a retried job starts from).")
    save_total_limit: int = Field(2, ge=1, le=100, description="Checkpoints kept on disk.")
    merge: bool = Field(False, description="Also save merged weights (a full model) beside the adapter.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the split, the shuffling and the adapter's init.")
    min_rows: int = Field(8, ge=1, le=1_000_000, description="Fewest training rows a job accepts.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: QuantizationSettings = Field(default_factory=QuantizationSettings)


class HardwareSettings(_Section):
    """Where and how the job runs: the seed's `hardware`."""

    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when the worker has a GPU, "
                                                   "else the CPU.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that have it (fp16 on others), fp32 on the CPU.")
    processes: int | None = Field(None, ge=1, le=1024, description="Training processes (DDP through torchrun); "
                                  "null: one per GPU the worker sees, one on the CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                         "memory, about a third more time.")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="How several processes train: ddp (each GPU holds the whole model), fsdp (the model "
        "sharded across the GPUs, CUDA only), auto: FSDP when one GPU cannot hold the run at this precision but the "
        "GPUs together can, else DDP.")


class EvaluationSettings(_Section):
    """How the result is measured: the seed's `evaluation`."""

    validation: float = Field(0.1, gt=0, lt=1, description="Share of the rows held out (a seeded split), unless "
                              "validation_dataset is given.")
    validation_dataset: str | None = Field(None, max_length=200, description="A dataset to validate on instead.")
    eval_steps: int | None = Field(None, ge=1, le=10_000_000, description="Steps between held-out evaluations; "
                                   "null: at the end of each epoch.")
    prompts: int = Field(3, ge=0, le=20, description="Validation prompts answered by the base and the tuned model "
                         "(greedy) for the final card.")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Longest of those answers, in tokens.")


class TrainingConfig(_Section):
    """Everything a training job is told, apart from its base model and dataset."""

    template: str = Field(DEFAULT_TEMPLATE, max_length=64, description="The template the job started from.")
    parameters: Parameters = Field(default_factory=Parameters)
    hardware: HardwareSettings = Field(default_factory=HardwareSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        quantized = self.parameters.quantization.bits is not None
        if quantized and self.hardware.device == "cpu":
            raise ValueError("4-bit quantization (QLoRA) runs on CUDA only: set hardware.device to cuda or auto")
        if self.parameters.optimizer != "adamw_torch" and self.hardware.device == "cpu":
            raise ValueError(f"{self.parameters.optimizer} runs on CUDA only: use adamw_torch on the CPU")
        if self.hardware.strategy == "fsdp" and self.hardware.device == "cpu":
            raise ValueError("FSDP shards a model across GPUs only (accelerate trains CPU processes with DDP): set "
                             "hardware.strategy to ddp or auto on the CPU")
        if self.hardware.strategy == "fsdp" and quantized:
            raise ValueError("FSDP does not shard 4-bit (QLoRA) weights here: set hardware.strategy to ddp or auto")
        return self

    @property
    def quantized(self) -> bool:
        """Whether the base model loads in 4 bits (QLoRA), which needs CUDA and bitsandbytes."""
        return self.parameters.quantization.bits is not None

    @property
    def needs_cuda(self) -> bool:
        """Whether this config can only run on a CUDA GPU."""
        return (self.quantized or self.hardware.device == "cuda" or self.parameters.optimizer != "adamw_torch"
                or self.hardware.strategy == "fsdp")

    @property
    def cuda_use(self) -> str:
        """What in this config needs CUDA, as a sentence's subject (for CudaRequired)."""
        if self.quantized:
            return "4-bit training (QLoRA)"
        if self.parameters.optimizer != "adamw_torch":
            return f"The {self.parameters.optimizer} optimizer"
        if self.hardware.strategy == "fsdp":
            return "FSDP training (hardware.strategy fsdp)"
        return "Training with hardware.device cuda"


class Template(BaseModel):
    """One shipped preset: its name, what it is for, and the config it resolves to with no overrides."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    config: TrainingConfig
    sets: dict[str, Any]  # what the YAML sets (the rest are TrainingConfig's defaults)


@functools.cache
def _raw_templates() -> dict[str, dict[str, Any]]:
    text = resources.files("modelbay.config").joinpath(TEMPLATES_FILE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    return {str(name): dict(body or {}) for name, body in (raw.get("templates") or {}).items()}


@functools.cache
def load_templates() -> dict[str, Template]:
    """The shipped templates by name, in file order, each validated.

    Raises:
        TrainingConfigInvalid: the YAML holds a value the config refuses (a packaging mistake).
    """
    found = {}
    for name, body in _raw_templates().items():
        sets = {k: v for k, v in body.items() if k != "description"}
        found[name] = Template(name=name, description=" ".join(str(body.get("description", "")).split()),
                               config=_validate({**sets, "template": name}), sets=sets)
    return found


def template(name: str) -> Template:
    """The template of that name (case-insensitive).

    Raises:
        TemplateNotFound: no template has that name; the message lists them.
    """
    templates = load_templates()
    found = templates.get(name.strip().lower())
    if found is None:
        raise TemplateNotFound(name, list(templates))
    return found


def _deep_merge(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in more.items():
        key = _snake(key)
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _snake(name: str) -> str:
    """`learningRate` -> `learning_rate`: overrides may use REST's names."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _validate(values: Mapping[str, Any]) -> TrainingConfig:
    try:
        return TrainingConfig.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "config"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise TrainingConfigInvalid(where, message) from None


def flat_overrides(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """Nest flat `key: value` pairs (dotted paths, `parameters` fields by name, `SHORT_NAMES`) into overrides.

    Raises:
        TrainingConfigInvalid: a key names no field.
    """
    nested: dict[str, Any] = {}
    top = set(TrainingConfig.model_fields)
    params = set(Parameters.model_fields)
    for key, value in pairs.items():
        path = SHORT_NAMES.get(key, key)
        parts = [_snake(p) for p in path.split(".")]
        if parts[0] not in top:
            if parts[0] not in params:
                raise TrainingConfigInvalid(key, f"no such setting; settings are {', '.join(sorted(SHORT_NAMES))}, "
                                            "the fields of parameters, or dotted paths (parameters.lora.r)")
            parts = ["parameters", *parts]
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TrainingConfigInvalid(key, "given twice, once as a whole and once in part")
        node[parts[-1]] = value
    return nested


def resolve(name: str | None = None, overrides: Mapping[str, Any] | None = None) -> TrainingConfig:
    """The config of a job: the template's settings deep-merged with overrides (nested, as the REST body), validated.

    Raises:
        TemplateNotFound: no template has that name.
        TrainingConfigInvalid: an override names no field or has a value the field refuses (one line naming it).
    """
    chosen = template(name or DEFAULT_TEMPLATE)
    overrides = dict(overrides or {})
    overrides.pop("template", None)
    return _validate({**_deep_merge(chosen.sets, overrides), "template": chosen.name})


class TrainingRequest(BaseModel):
    """The REST body that starts a training job (the seed's TrainingConfig, plus the template and the new name)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    base_model_id: str = Field(min_length=1, max_length=200, description="The installed model to fine-tune.")
    dataset_id: str = Field(min_length=1, max_length=200, description="The dataset (id or name) to train on.")
    template: str = Field(DEFAULT_TEMPLATE, max_length=64, description="The template the settings start from.")
    name: str | None = Field(None, max_length=96, description="Name of the new model (default: <base>-ft-<job>).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Overrides of `parameters` (epochs, "
                                       "batchSize, learningRate, maxLength, lora, quantization, ...).")
    hardware: dict[str, Any] = Field(default_factory=dict, description="Overrides of `hardware`.")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="Overrides of `evaluation`.")

    @field_validator("dataset_id", mode="before")
    @classmethod
    def _id_number(cls, value: Any) -> Any:
        """A dataset's id as `POST /api/training/datasets` answers it (a number) is taken as well as its text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("parameters", "hardware", "evaluation")
    @classmethod
    def _plain(cls, value: dict[str, Any]) -> dict[str, Any]:
        return value or {}

    def overrides(self) -> dict[str, Any]:
        """What `resolve(self.template, ...)` takes: the three sections, only those given."""
        return {key: value for key in ("parameters", "hardware", "evaluation") if (value := getattr(self, key))}

    def config(self) -> TrainingConfig:
        """The config this body asks for.

        Raises:
            TemplateNotFound: no template has that name.
            TrainingConfigInvalid: a setting names no field or has a value the field refuses.
        """
        return resolve(self.template, self.overrides())

    @classmethod
    def of(cls, config: TrainingConfig, *, base_model_id: str, dataset_id: str,
           name: str | None = None) -> TrainingRequest:
        """The body that asks for exactly this config (every field written out, in REST's camelCase)."""
        dumped = config.model_dump(by_alias=True, mode="json")
        return cls(base_model_id=base_model_id, dataset_id=dataset_id, template=config.template, name=name,
                   parameters=dumped["parameters"], hardware=dumped["hardware"], evaluation=dumped["evaluation"])
