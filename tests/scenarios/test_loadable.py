"""What loading needs, checked on listings (with the small JSON files they hold) and on folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelbay.engine.errors import IncompleteModel
from modelbay.engine.catalog.sources.base import READ_LIMIT
from modelbay.engine.installs.loadable import check_folder, inspect

TEXT_CONFIG = {"model_type": "llama", "vocab_size": 32000}
NO_WEIGHTS = ["weights (model.safetensors, or the shards a model.safetensors.index.json names)"]
NO_TOKENIZER = ["a tokenizer (tokenizer.json, or vocab.txt, or vocab.json with merges.txt)"]
BAD_CONFIG = ["a readable config.json (a JSON object)"]
SHARDED = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}


def _inspect(files: dict[str, object], *, allow_pickle: bool = False):
    """Inspect a listing whose JSON files hold the given objects (bytes as they are; None: not readable yet)."""
    def read(path: str) -> bytes | None:
        value = files[path]
        return value if value is None or isinstance(value, bytes) else json.dumps(value).encode()

    return inspect(list(files), read, allow_pickle=allow_pickle)


COMPLETE = {
    "single safetensors + fast tokenizer": {"config.json": TEXT_CONFIG, "model.safetensors": b"",
                                            "tokenizer.json": b""},
    "shards all present": {"config.json": TEXT_CONFIG, "model.safetensors.index.json": SHARDED,
                           "model-00001-of-00002.safetensors": b"", "model-00002-of-00002.safetensors": b"",
                           "tokenizer.json": b""},
    "sentencepiece beside its fast tokenizer": {"config.json": TEXT_CONFIG, "model.safetensors": b"",
                                                "tokenizer.model": b"", "tokenizer.json": b""},
    "shards in a subfolder, as the index names them": {
        "config.json": TEXT_CONFIG, "tokenizer.json": b"", "weights/model-00001.safetensors": b"",
        "model.safetensors.index.json": {"weight_map": {"a": "weights/model-00001.safetensors"}}},
    "safetensors beside stray safetensors": {"config.json": TEXT_CONFIG, "model.safetensors": b"",
                                             "training_args.safetensors": b"", "tokenizer.json": b""},
    "BPE vocab + merges": {"config.json": TEXT_CONFIG, "model.safetensors": b"", "tokenizer_config.json": {},
                           "vocab.json": b"", "merges.txt": b""},
    "embedding model (WordPiece)": {"config.json": {"model_type": "bert", "vocab_size": 30522},
                                    "model.safetensors": b"", "tokenizer_config.json": {}, "vocab.txt": b"",
                                    "1_Pooling/config.json": {}, "modules.json": []},
    "vision encoder needs no tokenizer": {"config.json": {"model_type": "vit", "image_size": 224},
                                          "model.safetensors": b"", "preprocessor_config.json": {}},
    "config not readable before download": {"config.json": None, "model.safetensors": b"", "tokenizer.json": b""},
    "index not readable before download": {"config.json": TEXT_CONFIG, "model.safetensors.index.json": None,
                                           "tokenizer.json": b""},
}

INCOMPLETE = {
    "shard named by the index missing": (
        {"config.json": TEXT_CONFIG, "model.safetensors.index.json": SHARDED,
         "model-00001-of-00002.safetensors": b"", "tokenizer.json": b""},
        ["model-00002-of-00002.safetensors (named by model.safetensors.index.json)"]),
    "index without a weight map": (
        {"config.json": TEXT_CONFIG, "model.safetensors.index.json": {"metadata": {}}, "tokenizer.json": b""},
        ["a readable model.safetensors.index.json (a JSON object whose weight_map names its shards)"]),
    "no config": ({"model.safetensors": b"", "tokenizer.json": b""}, ["config.json"]),
    "config not JSON": ({"config.json": b"{oops", "model.safetensors": b"", "tokenizer.json": b""}, BAD_CONFIG),
    # A config that parses but is no object is not "not readable yet": transformers cannot load it either.
    "config null": ({"config.json": b"null", "model.safetensors": b"", "tokenizer.json": b""}, BAD_CONFIG),
    "config empty object": ({"config.json": {}, "model.safetensors": b"", "tokenizer.json": b""}, BAD_CONFIG),
    "config a list": ({"config.json": [1], "model.safetensors": b"", "tokenizer.json": b""}, BAD_CONFIG),
    "config a string": ({"config.json": "llama", "model.safetensors": b"", "tokenizer.json": b""}, BAD_CONFIG),
    "config over the read limit": ({"config.json": b"", "model.safetensors": b"", "tokenizer.json": b""}, BAD_CONFIG),
    "no tokenizer": ({"config.json": TEXT_CONFIG, "model.safetensors": b""}, NO_TOKENIZER),
    "tokenizer config without its vocabulary": (
        {"config.json": TEXT_CONFIG, "model.safetensors": b"", "tokenizer_config.json": {}}, NO_TOKENIZER),
    "a file named like a vocabulary is no tokenizer": (
        {"config.json": TEXT_CONFIG, "model.safetensors": b"", "tokenizer_config.json": {},
         "vocab_notes.md": b"", "special_tokens_map.json": {}}, NO_TOKENIZER),
    "BPE vocabulary without its merges": (
        {"config.json": TEXT_CONFIG, "model.safetensors": b"", "tokenizer_config.json": {}, "vocab.json": {}},
        NO_TOKENIZER),
    "sentencepiece only (needs a package ModelBay does not install)": (
        {"config.json": TEXT_CONFIG, "model.safetensors": b"", "tokenizer_config.json": {}, "tokenizer.model": b""},
        ["tokenizer.json (its only tokenizer is tokenizer.model, which needs sentencepiece, not installed with "
         "ModelBay)"]),
    "text model in a sub-config needs a tokenizer": (
        {"config.json": {"model_type": "llava", "text_config": {"vocab_size": 5}}, "model.safetensors": b""},
        NO_TOKENIZER),
    "index null and no weight files": (
        {"config.json": TEXT_CONFIG, "model.safetensors.index.json": b"null", "tokenizer.json": b""},
        ["a readable model.safetensors.index.json (a JSON object whose weight_map names its shards)"]),
    "index naming no shard": (
        {"config.json": TEXT_CONFIG, "model.safetensors.index.json": {"weight_map": {}}, "tokenizer.json": b""},
        ["a readable model.safetensors.index.json (a JSON object whose weight_map names its shards)"]),
    "only consolidated.safetensors (not what transformers loads)": (
        {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "consolidated.safetensors": b""}, NO_WEIGHTS),
    "only an adapter's weights": (
        {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "adapter_model.safetensors": b""}, NO_WEIGHTS),
    "a variant's weights only": (
        {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "model.fp16.safetensors": b""}, NO_WEIGHTS),
    "pickle shards with a stray safetensors where pickle is refused": (
        {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "training_args.safetensors": b"",
         "pytorch_model.bin.index.json": {"weight_map": {"a": "pytorch_model-1.bin"}}, "pytorch_model-1.bin": b""},
        NO_WEIGHTS),
    "no weights": ({"config.json": TEXT_CONFIG, "tokenizer.json": b""},
                   NO_WEIGHTS),
    "weights only in a subfolder": ({"config.json": TEXT_CONFIG, "tokenizer.json": b"", "onnx/model.safetensors": b""},
                                    NO_WEIGHTS),
    "pickle weights where pickle is refused": (
        {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "pytorch_model.bin": b""},
        NO_WEIGHTS),
}


@pytest.mark.parametrize("files", COMPLETE.values(), ids=COMPLETE.keys())
def test_complete_listings(files: dict[str, object]) -> None:
    found = _inspect(files)
    assert found.missing == [] and not found.remote_code


@pytest.mark.parametrize(("files", "missing"), INCOMPLETE.values(), ids=INCOMPLETE.keys())
def test_incomplete_listings_name_what_is_missing(files: dict[str, object], missing: list[str]) -> None:
    assert _inspect(files).missing == missing


def test_pickle_weights_count_where_allowed() -> None:
    files = {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "pytorch_model.bin.index.json": {"weight_map": {
        "a": "pytorch_model-1.bin", "b": "pytorch_model-2.bin"}}, "pytorch_model-1.bin": b""}
    assert _inspect(files, allow_pickle=True).missing == ["pytorch_model-2.bin (named by pytorch_model.bin.index.json)"]
    single = {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "pytorch_model.bin": b""}
    assert _inspect(single, allow_pickle=True).missing == []
    stray = {"config.json": TEXT_CONFIG, "tokenizer.json": b"", "model.pt": b""}  # not a name transformers loads
    assert _inspect(stray, allow_pickle=True).missing == [
        "weights (model.safetensors, or the shards a model.safetensors.index.json names; or pytorch_model.bin)"]


@pytest.mark.parametrize(("where", "auto_map", "code_from"), [
    ("config.json", {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}, None),
    ("config.json", {"AutoConfig": "other-org/other-repo--configuration_x.XConfig"}, "other-org/other-repo"),
    ("tokenizer_config.json", {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}, None),
    ("tokenizer_config.json", {"AutoTokenizer": [None, "org/code--tokenization_x.XTokenizerFast"]}, "org/code"),
])
def test_any_auto_map_is_remote_code(where: str, auto_map: dict, code_from: str | None) -> None:
    files: dict[str, object] = {"config.json": TEXT_CONFIG, "model.safetensors": b"", "tokenizer.json": b"",
                                "tokenizer_config.json": {}}
    files[where] = {**files[where], "auto_map": auto_map}  # type: ignore[dict-item]
    found = _inspect(files)
    assert found.remote_code and found.code_from == code_from and found.missing == []


def test_a_folder_missing_files_says_so_in_one_line(tiny_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "copy")
    assert check_folder(folder, "tiny").missing == []
    (folder / "model.safetensors").unlink()
    (folder / "tokenizer.json").unlink()
    with pytest.raises(IncompleteModel) as caught:
        check_folder(folder, "tiny")
    message = str(caught.value)
    assert message.startswith("`tiny` is installed but incomplete on disk (missing weights (")
    assert "a tokenizer" in message and "`/models install tiny`" in message and "\n" not in message
    shutil.rmtree(folder)
    with pytest.raises(IncompleteModel, match="missing its folder"):
        check_folder(folder, "tiny")


@pytest.mark.parametrize("config", [b"null", b"{}", b"[]", b"{oops", None], ids=["null", "{}", "[]", "not JSON",
                                                                                 "over the read limit"])
def test_a_folder_with_an_unreadable_config_is_refused(tiny_model: Path, tmp_path: Path, config: bytes | None) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "copy")
    if config is None:
        with (folder / "config.json").open("ab") as out:
            out.truncate(READ_LIMIT + 1)  # on disk every file can be read: one this large is no config
    else:
        (folder / "config.json").write_bytes(config)
    with pytest.raises(IncompleteModel, match=r"missing a readable config\.json \(a JSON object\)"):
        check_folder(folder, "tiny")
