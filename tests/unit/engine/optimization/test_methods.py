"""Optimization methods' settings: `check` completes them or refuses in one line, `needs` and `suffix` follow them,
and the registry holds the built-ins without importing torch (the bot and the API check settings)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelbay.engine.errors import OptimizationConfigInvalid
from modelbay.engine.optimization.methods import METHODS, Method, Needs
from modelbay.engine.optimization.methods.channels import kept_channels


def _check(name: str, params: dict) -> dict:
    return METHODS[name]().check(params)


def test_the_registry_holds_the_built_ins_through_the_plugin_hook() -> None:
    assert {"cast", "bnb", "weight-only", "prune", "channels", "onnx"} <= set(METHODS)
    assert all(issubclass(METHODS[name], Method) for name in METHODS)


def test_reading_the_registry_and_checking_settings_imports_no_torch() -> None:
    code = ("import sys; from modelbay.engine.optimization.methods import METHODS; "
            "[METHODS[n]().check({}) for n in ('cast', 'bnb', 'weight-only', 'prune', 'channels')]; "
            "heavy = sorted(m for m in ('torch', 'transformers', 'bitsandbytes', 'torchao') if m in sys.modules); "
            "print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("name", "params", "checked", "suffix"), [
    ("cast", {}, {"dtype": "float16"}, "fp16"),
    ("cast", {"dtype": "bf16"}, {"dtype": "bfloat16"}, "bf16"),
    ("bnb", {}, {"bits": 8}, "int8"),
    ("bnb", {"bits": "8", "quant_type": "int8"}, {"bits": 8}, "int8"),
    ("bnb", {"bits": 4}, {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}, "nf4"),
    ("bnb", {"quant_type": "FP4", "double_quant": "no"},
     {"bits": 4, "quant_type": "fp4", "double_quant": False, "compute_dtype": "float32"}, "fp4"),
    ("prune", {}, {"method": "wanda", "sparsity": 0.5, "structure": "unstructured", "samples": 32, "window": 256},
     "wanda50"),
    ("prune", {"method": "magnitude", "sparsity": "30%"},
     {"method": "magnitude", "sparsity": 0.3, "structure": "unstructured"}, "mag30"),
    ("prune", {"structure": "2:4", "method": "magnitude"},
     {"method": "magnitude", "sparsity": 0.5, "structure": "2:4"}, "mag-2of4"),
    ("prune", {"structure": "2:4", "sparsity": 0.5, "samples": 8},
     {"method": "wanda", "sparsity": 0.5, "structure": "2:4", "samples": 8, "window": 256}, "wanda-2of4"),
    ("weight-only", {}, {"bits": 8}, "w8"),
    ("weight-only", {"bits": "8"}, {"bits": 8}, "w8"),
    ("channels", {}, {"sparsity": 0.3, "method": "wanda", "samples": 32, "window": 256}, "ch30"),
    ("channels", {"sparsity": 0.25, "method": "magnitude"}, {"sparsity": 0.25, "method": "magnitude"}, "ch25"),
])
def test_check_completes_the_settings_and_suffix_names_them(name: str, params: dict, checked: dict,
                                                           suffix: str) -> None:
    method = METHODS[name]()
    assert method.check(params) == checked
    assert method.check(checked) == checked  # checking is idempotent: a recipe's stored settings pass again
    assert method.suffix(checked) == suffix
    assert method.describe(checked)


@pytest.mark.parametrize(("name", "params", "setting", "words"), [
    ("cast", {"dtype": "int8"}, "dtype", "not one of float16 or bfloat16"),
    ("cast", {"bits": 16}, "bits", "not a setting"),
    ("bnb", {"bits": 4, "quant_type": "int8"}, "quant_type", "4-bit bitsandbytes is nf4 or fp4, not int8"),
    ("bnb", {"bits": 8, "quant_type": "nf4"}, "quant_type", "8-bit bitsandbytes is int8"),
    ("bnb", {"bits": 8, "double_quant": True}, "double_quant", "only 4-bit"),
    ("bnb", {"bits": 3}, "bits", "not one of 8 or 4"),
    ("bnb", {"bits": 4, "compute_dtype": "int8"}, "compute_dtype", "not one of"),
    ("bnb", {"bits": 4, "double_quant": "maybe"}, "double_quant", "not true or false"),
    ("prune", {"sparsity": 1.5}, "sparsity", "1.5 is out of range"),
    ("prune", {"sparsity": 0}, "sparsity", "out of range"),
    ("prune", {"sparsity": "half"}, "sparsity", "not a number"),
    ("prune", {"structure": "2:4", "sparsity": 0.3}, "sparsity", "2:4 sparsity zeroes exactly half"),
    ("prune", {"structure": "4:8"}, "structure", "not one of unstructured or 2:4"),
    ("prune", {"method": "sparsegpt"}, "method", "not one of wanda or magnitude"),
    ("prune", {"method": "magnitude", "samples": 8}, "samples", "only wanda uses calibration"),
    ("prune", {"samples": 0}, "samples", "out of range"),
    ("prune", {"amount": 0.5}, "amount", "not a setting of this method"),
    ("weight-only", {"bits": 4}, "bits", "use method bnb with bits 4"),
    ("weight-only", {"bits": 16}, "bits", "is not 8"),
    ("weight-only", {"group_size": 32}, "group_size", "not a setting"),
    ("channels", {"sparsity": 0.95}, "sparsity", "below 0.9"),
    ("channels", {"structure": "2:4"}, "structure", "not a setting"),
])
def test_check_refuses_in_one_line(name: str, params: dict, setting: str, words: str) -> None:
    with pytest.raises(OptimizationConfigInvalid) as refused:
        _check(name, params)
    assert refused.value.setting == setting
    assert words in refused.value.problem
    assert "\n" not in str(refused.value)


def test_needs_follow_the_settings() -> None:
    prune, channels = METHODS["prune"](), METHODS["channels"]()
    assert prune.needs(prune.check({"method": "wanda"})) == Needs(calibration=True)
    assert prune.needs(prune.check({"method": "magnitude"})) == Needs()
    assert channels.needs(channels.check({})) == Needs(calibration=True)
    assert METHODS["cast"]().needs({"dtype": "float16"}) == Needs()
    assert METHODS["bnb"]().needs({"bits": 8}).output == "transformers"


@pytest.mark.parametrize(("intermediate", "sparsity", "kept"), [
    (256, 0.3, 176), (256, 0.5, 128), (11008, 0.3, 7704), (14336, 0.25, 10752), (40, 0.5, 20), (8, 0.89, 1),
])
def test_channels_keep_a_multiple_of_eight_where_the_mlp_is_wide(intermediate: int, sparsity: float,
                                                                 kept: int) -> None:
    assert kept_channels(intermediate, sparsity) == kept
