"""engine/training/templates.py: the shipped presets, overrides (nested, flat, short, camelCase), the REST body,
and one-line refusals."""

from __future__ import annotations

import pytest

from modelbay.engine.errors import TemplateNotFound, TrainingConfigInvalid
from modelbay.engine.training.templates import (
    SHORT_NAMES,
    EvaluationSettings,
    HardwareSettings,
    Parameters,
    TrainingConfig,
    TrainingRequest,
    flat_overrides,
    load_templates,
    resolve,
    template,
)

SHIPPED = ["chat-lora", "instruction-lora", "code-completion", "qlora-4bit", "continued-pretraining"]


def test_the_shipped_templates_are_the_five_named_ones_in_order_each_described() -> None:
    templates = load_templates()
    assert list(templates) == SHIPPED
    for name, found in templates.items():
        assert found.config.template == name
        assert found.description and "\n" not in found.description


def test_chat_lora_is_what_the_issue_names() -> None:
    config = template("chat-lora").config
    p = config.parameters
    assert (p.lora.r, p.lora.alpha, p.lora.target_modules) == (16, 32, "all-linear")
    assert (p.learning_rate, p.scheduler, p.warmup, p.epochs, p.max_length) == (2e-4, "cosine", 0.03, 3, 2048)
    assert p.loss == "completion_only" and not config.quantized and not config.needs_cuda


def test_qlora_loads_4bit_nf4_with_double_quantization_and_bf16_compute_on_cuda_only() -> None:
    config = template("qlora-4bit").config
    quant = config.parameters.quantization
    assert (quant.bits, quant.quant_type, quant.double_quant, quant.compute_dtype) == (4, "nf4", True, "bfloat16")
    assert config.quantized and config.needs_cuda and config.hardware.device == "cuda"


def test_continued_pretraining_trains_every_token() -> None:
    assert template("continued-pretraining").config.parameters.loss == "all_tokens"


def test_every_template_default_is_documented() -> None:
    for section in (Parameters, HardwareSettings, EvaluationSettings):
        for name, field in section.model_fields.items():
            if name not in ("lora", "quantization"):
                assert field.description, f"{section.__name__}.{name} has no description"


def test_overrides_merge_into_the_template_and_leave_the_rest() -> None:
    config = resolve("instruction-lora", {"parameters": {"epochs": 1, "lora": {"r": 4}}})
    assert config.parameters.epochs == 1 and config.parameters.lora.r == 4
    assert config.parameters.lora.alpha == 16  # the template's, untouched by a partial lora override
    assert config.parameters.max_length == 1024 and config.template == "instruction-lora"


def test_rest_camel_case_names_are_the_same_fields() -> None:
    config = resolve(None, {"parameters": {"batchSize": 2, "learningRate": 1e-5, "maxLength": 512,
                                           "lora": {"targetModules": ["q_proj", "v_proj"]}},
                            "hardware": {"gradientCheckpointing": True}, "evaluation": {"maxNewTokens": 8}})
    p = config.parameters
    assert (p.batch_size, p.learning_rate, p.max_length, p.lora.target_modules) == (2, 1e-5, 512, ["q_proj", "v_proj"])
    assert config.hardware.gradient_checkpointing and config.evaluation.max_new_tokens == 8
    assert config.template == "chat-lora"


def test_flat_pairs_from_a_command_nest_by_short_name_field_name_or_dotted_path() -> None:
    nested = flat_overrides({"lr": 1e-4, "batch": 8, "rank": 8, "epochs": 2, "max_length": 256,
                             "evaluation.prompts": 5, "hardware.processes": 2})
    assert nested == {"parameters": {"learning_rate": 1e-4, "batch_size": 8, "lora": {"r": 8}, "epochs": 2,
                                     "max_length": 256},
                      "evaluation": {"prompts": 5}, "hardware": {"processes": 2}}
    config = resolve("chat-lora", nested)
    assert config.parameters.lora.r == 8 and config.evaluation.prompts == 5
    assert all(path.split(".")[0] in TrainingConfig.model_fields for path in SHORT_NAMES.values())


def test_a_setting_that_names_no_field_is_refused_in_one_line() -> None:
    with pytest.raises(TrainingConfigInvalid) as flat:
        flat_overrides({"learningrate": 1})
    assert "`learningrate`" in str(flat.value) and "\n" not in str(flat.value)
    with pytest.raises(TrainingConfigInvalid) as nested:
        resolve(None, {"parameters": {"epoch": 2}})
    assert "`parameters.epoch`" in str(nested.value) and "\n" not in str(nested.value)


@pytest.mark.parametrize(("overrides", "where"), [
    ({"parameters": {"learning_rate": 0}}, "parameters.learning_rate"),
    ({"parameters": {"batch_size": "many"}}, "parameters.batch_size"),
    ({"parameters": {"overlong": "ignore"}}, "parameters.overlong"),
    ({"evaluation": {"validation": 1.5}}, "evaluation.validation"),
    ({"parameters": {"lora": {"r": 0}}}, "parameters.lora.r"),
])
def test_an_out_of_range_value_is_refused_naming_the_setting(overrides: dict, where: str) -> None:
    with pytest.raises(TrainingConfigInvalid) as refused:
        resolve(None, overrides)
    assert f"`{where}`" in str(refused.value) and "\n" not in str(refused.value)


def test_qlora_on_the_cpu_is_refused_by_the_config_itself() -> None:
    with pytest.raises(TrainingConfigInvalid, match="CUDA only"):
        resolve("qlora-4bit", {"hardware": {"device": "cpu"}})


def test_an_unknown_template_lists_the_shipped_ones() -> None:
    with pytest.raises(TemplateNotFound) as missing:
        resolve("chat-lora-xl")
    assert all(name in str(missing.value) for name in SHIPPED)


def test_the_rest_body_maps_onto_the_config_one_to_one() -> None:
    body = {"baseModelId": "tiny-chat", "datasetId": "7", "template": "code-completion", "name": "tiny-coder",
            "parameters": {"epochs": 5, "batchSize": 2, "learningRate": 2e-5, "maxLength": 2048,
                           "lora": {"r": 8, "alpha": 16}, "quantization": {"bits": None}},
            "hardware": {"device": "cpu"}, "evaluation": {"validation": 0.2}}
    request = TrainingRequest.model_validate(body)
    config = request.config()
    p = config.parameters
    assert (request.base_model_id, request.dataset_id, request.name) == ("tiny-chat", "7", "tiny-coder")
    assert (p.epochs, p.batch_size, p.learning_rate, p.max_length, p.lora.r, p.lora.alpha) == (5, 2, 2e-5, 2048, 8, 16)
    assert config.hardware.device == "cpu" and config.evaluation.validation == 0.2
    # Written back, the body asks for exactly the same config.
    again = TrainingRequest.of(config, base_model_id="tiny-chat", dataset_id="7", name="tiny-coder")
    assert again.config() == config
    dumped = again.model_dump(by_alias=True)
    assert {"baseModelId", "datasetId", "parameters", "hardware", "evaluation"} <= set(dumped)
    assert {"epochs", "batchSize", "learningRate", "maxLength", "lora", "quantization"} <= set(dumped["parameters"])


def test_a_rest_body_takes_the_dataset_id_as_the_datasets_route_answers_it_a_number() -> None:
    # POST /api/training/datasets answers {"dataset": {"id": 2, ...}}: that id, pasted as is, was refused as
    # "should be a valid string".
    assert TrainingRequest.model_validate({"baseModelId": "m", "datasetId": 2}).dataset_id == "2"
    with pytest.raises(ValueError):
        TrainingRequest.model_validate({"baseModelId": "m", "datasetId": True})


def test_a_rest_body_with_an_unknown_top_level_name_is_refused() -> None:
    with pytest.raises(ValueError):
        TrainingRequest.model_validate({"baseModelId": "m", "datasetId": "d", "epochs": 3})
