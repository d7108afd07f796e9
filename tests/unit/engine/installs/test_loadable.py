"""A fine-tune's layout: which parts load, from the folder and from the version's file list, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbay.engine.errors import BaseModelMissing, IncompleteModel
from modelbay.engine.installs.loadable import Tuned, adapter_rank, check_tuned, tuned_parts, weights_folder
from modelbay.engine.records import VersionRecord

MODEL_FILES = {"config.json": {"vocab_size": 8}, "tokenizer.json": {}, "model.safetensors": None}


def _write(folder: Path, files: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content) if content is not None else "weights")
    return folder


def _adapter(folder: Path, **config: object) -> Path:
    return _write(folder / "adapter", {"adapter_config.json": {"peft_type": "LORA", "r": 8, **config},
                                       "adapter_model.safetensors": None})


def test_an_adapter_loads_on_its_base_and_names_its_largest_rank(tmp_path: Path) -> None:
    base = _write(tmp_path / "base", MODEL_FILES)
    adapter = _adapter(tmp_path / "tuned", rank_pattern={"q_proj": 16})
    assert adapter_rank(adapter) == 16
    assert check_tuned(tmp_path / "tuned", "tuned", base=base, base_name="base") == Tuned(None, adapter, 16)


def test_merged_weights_load_without_the_adapter_or_the_base(tmp_path: Path) -> None:
    merged = _write(tmp_path / "tuned" / "merged", MODEL_FILES)
    assert check_tuned(tmp_path / "tuned", "tuned", base=None, base_name=None) == Tuned(merged, None, None)


@pytest.mark.parametrize("config, missing", [
    ({"peft_type": "IA3"}, "a readable adapter/adapter_config.json (a LoRA's: peft_type LORA and a rank r)"),
    ({"peft_type": "LORA", "r": "eight"}, "a readable adapter/adapter_config.json"),
])
def test_an_adapter_that_is_not_a_lora_is_refused(tmp_path: Path, config: dict[str, object], missing: str) -> None:
    _write(tmp_path / "tuned" / "adapter", {"adapter_config.json": config, "adapter_model.safetensors": None})
    with pytest.raises(IncompleteModel) as refused:
        check_tuned(tmp_path / "tuned", "tuned", base=tmp_path, base_name="base")
    assert missing in str(refused.value) and str(refused.value).endswith("Fine-tune it again to replace it.")


def test_an_adapter_without_its_base_or_with_an_incomplete_base_is_refused(tmp_path: Path) -> None:
    _adapter(tmp_path / "tuned")
    with pytest.raises(BaseModelMissing, match="`tuned` is a LoRA adapter on `base`, which is not installed"):
        check_tuned(tmp_path / "tuned", "tuned", base=None, base_name="base")
    base = _write(tmp_path / "base", {"config.json": {"vocab_size": 8}, "tokenizer.json": {}})
    with pytest.raises(IncompleteModel, match="`base` is installed but incomplete on disk .*/models install base"):
        check_tuned(tmp_path / "tuned", "tuned", base=base, base_name="base")


def _version(**fields: object) -> VersionRecord:
    values = dict(id=2, revision="main", revision_sha=None, install_state="installed", local_path="/store/t",
                  size_bytes=None, parent_version_id=1, lineage="finetune", installed_at=None)
    return VersionRecord(**{**values, **fields})


def test_the_parts_of_a_fine_tune_are_read_from_its_file_list() -> None:
    files = [{"path": "adapter/adapter_config.json"}, {"path": "adapter/adapter_model.safetensors"}]
    adapter_only = _version(files=files, lineage_params={"lora_rank": 16})
    assert tuned_parts(adapter_only) == Tuned(None, Path("/store/t/adapter"), 16)
    both = _version(files=[*adapter_only.files, {"path": "merged/config.json"}])
    assert tuned_parts(both) == Tuned(Path("/store/t/merged"), Path("/store/t/adapter"), None)
    assert tuned_parts(_version(lineage=None)) is None
    assert weights_folder(_version(lineage=None)) == Path("/store/t")
    assert weights_folder(adapter_only) is None  # no merged/ on disk: it loads on its base
    assert weights_folder(_version(install_state="uninstalled", lineage=None)) is None
