"""What loading a model version needs, checked on a listing before download and on the files after it.

ModelBay answers and embeds text, and loads models as transformers does, from the top of the folder, by the names
transformers looks for (no variants, no other frameworks' files). A version is complete when it has:

- `config.json` holding a JSON object (a config that is `null`, `{}`, not JSON or over READ_LIMIT cannot load);
- weights: `model.safetensors`, or every shard `model.safetensors.index.json` names (paths relative to the
  index's folder); where pickle is allowed, `pytorch_model.bin` or every shard of `pytorch_model.bin.index.json`.
  Other safetensors files (`consolidated.safetensors`, `adapter_model.safetensors`, `training_args.safetensors`)
  are not what transformers loads, so they do not count;
- a tokenizer, when the model reads or writes tokens (its config names a vocabulary size, at the top or in a
  sub-config, as every text model's does: chat, code and embedding models alike): `tokenizer.json`, or the
  files of a tokenizer transformers builds without extra packages: `vocab.txt` (WordPiece) or `vocab.json` with
  `merges.txt` (BPE). A `tokenizer.model` alone is refused: converting it needs `sentencepiece`, which ModelBay
  does not install. A config without a vocabulary (an image or audio encoder) needs none; a config that cannot
  be read yet counts as text.

A version needs remote code when `auto_map` in `config.json` or `tokenizer_config.json` points at Python classes,
in its own repo or (as `owner/name--module.Class`) in another one.

A fine-tune (a version with lineage "finetune", made by a training job) keeps its parts in sub-folders of its own:
`adapter/` (a LoRA adapter as peft's `save_pretrained` writes it: `adapter_config.json` naming a LoRA, and
`adapter_model.safetensors`; often the tokenizer files too) and, when it was merged, `merged/` (a complete model by
the rules above). It loads from `merged/` when that is complete, else from its adapter applied to its base model,
which must then be installed and complete (`check_tuned`).

An ONNX variant (a version with format "onnx", made by an optimization job's ONNX export) loads with onnxruntime,
not transformers. Its folder holds `config.json` and a tokenizer as above, ONNX_MANIFEST (`modelbay_onnx.json`: the
graph to load under "file", its external data files under "external_data", and the cache shape) and, under
ONNX_DIR, ONNX_MODEL (fp32) and ONNX_QUANTIZED when it was quantized to int8 (transformers.js' names), with the
external data files the manifest names (`model.onnx_data` beside a graph too large for one protobuf); `check_onnx`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelbay.engine.catalog.sources.base import READ_LIMIT
from modelbay.engine.errors import BaseModelMissing, IncompleteModel, RemoteCodeRequired
from modelbay.engine.records import VersionRecord

__all__ = [
    "ADAPTER_DIR",
    "ADAPTER_FILES",
    "FINETUNE",
    "MERGED_DIR",
    "ONNX_DIR",
    "ONNX_MANIFEST",
    "ONNX_MODEL",
    "ONNX_QUANTIZED",
    "PICKLE",
    "SAFETENSORS_WEIGHTS",
    "Inspection",
    "Reader",
    "Tuned",
    "adapter_rank",
    "check_folder",
    "check_onnx",
    "check_tuned",
    "folder_reader",
    "inspect", "read_config",
    "tuned_parts",
    "weights_folder",
]

PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Returns a file's bytes, or None where it cannot be read yet (a source that only lists files before download);
# a file over READ_LIMIT comes back as b"" (unreadable: no config or index is that large).
Reader = Callable[[str], "bytes | None"]

_TOKENIZER_CONFIG = "tokenizer_config.json"
# Tokenizers transformers builds with what the ml extra installs: fast (tokenizer.json), WordPiece, BPE.
_TOKENIZER_SETS = ({"tokenizer.json"}, {"vocab.txt"}, {"vocab.json", "merges.txt"})
_TOKENIZER_HINT = "a tokenizer (tokenizer.json, or vocab.txt, or vocab.json with merges.txt)"
_SENTENCEPIECE_HINT = ("tokenizer.json (its only tokenizer is tokenizer.model, which needs sentencepiece, "
                       "not installed with ModelBay)")
# The weights transformers loads from a folder: one file, or the shards its index names.
SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# A fine-tune's layout (the module docstring): its lineage, and the sub-folders of its local_path.
FINETUNE = "finetune"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # what peft's save_pretrained writes
_RETRAIN = "Fine-tune it again to replace it."
# An ONNX variant's layout (the module docstring), relative to its folder.
ONNX_MANIFEST = "modelbay_onnx.json"
ONNX_DIR = "onnx"
ONNX_MODEL = f"{ONNX_DIR}/model.onnx"
ONNX_QUANTIZED = f"{ONNX_DIR}/model_quantized.onnx"
_REEXPORT = "Export it again with `/optimize onnx` on its parent model."  # a fine-tune's files come from its training job, not a download
_UNREADABLE = object()  # not JSON
_NOT_YET = object()  # not readable before download


@dataclass(frozen=True)
class Inspection:
    """What a version lacks for loading (empty when complete) and, if it needs Python code, where it comes from."""

    missing: list[str]
    remote_code: bool = False
    code_from: str | None = None  # another repo named by auto_map, if any

    def refuse_remote_code(self, name: str, trusted: bool) -> None:
        """Raise RemoteCodeRequired if the version needs its own Python code and the operator does not allow it."""
        if self.remote_code and not trusted:
            raise RemoteCodeRequired(name, self.code_from)


def _json(read: Reader, path: str) -> Any:
    """The parsed file (`null` is None), _NOT_YET where it cannot be read yet, or _UNREADABLE when it is not JSON."""
    data = read(path)
    if data is None:
        return _NOT_YET
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return _UNREADABLE


def _auto_map_refs(config: Any) -> list[str]:
    """Every class reference in a config's auto_map (values are "module.Class" or [slow, fast] pairs)."""
    if not isinstance(config, dict) or not config.get("auto_map"):
        return []
    auto_map = config["auto_map"]
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    refs: list[str] = []
    for value in values:
        refs.extend(v for v in (value if isinstance(value, list | tuple) else [value]) if isinstance(v, str))
    return refs or ["auto_map"]


def _has_vocabulary(config: Any) -> bool:
    """Whether a config names a vocabulary size at its top or in a sub-config (text_config, decoder, ...)."""
    if not isinstance(config, dict):
        return True  # not readable yet: assume the common case, a text model
    scopes = [config, *(v for v in config.values() if isinstance(v, dict))]
    return any(isinstance(key, str) and "vocab_size" in key for scope in scopes for key in scope)


def _weights(paths: set[str], read: Reader, allow_pickle: bool) -> list[str]:
    """What the weights lack: nothing when a complete set in an allowed format is there."""
    for single, index in (SAFETENSORS_WEIGHTS, *((_PICKLES,) if allow_pickle else ())):
        if single in paths:
            return []
        if index not in paths:
            continue
        parsed = _json(read, index)
        if parsed is _NOT_YET:
            return []  # not readable before download: checked once the files are here
        weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
        shards = {s for s in weight_map.values() if isinstance(s, str)} if isinstance(weight_map, dict) else set()
        if not shards:
            return [f"a readable {index} (a JSON object whose weight_map names its shards)"]
        return [f"{shard} (named by {index})" for shard in sorted(shards - paths)]
    kinds = "model.safetensors, or the shards a model.safetensors.index.json names"
    return [f"weights ({kinds}{'; or pytorch_model.bin' if allow_pickle else ''})"]


def _tokenizer(top: set[str]) -> list[str]:
    """What the tokenizer lacks: nothing when a set transformers can build is there."""
    if any(needed <= top for needed in _TOKENIZER_SETS):
        return []
    return [_SENTENCEPIECE_HINT if "tokenizer.model" in top else _TOKENIZER_HINT]


def inspect(paths: Collection[str], read: Reader, *, allow_pickle: bool) -> Inspection:
    """Check a version's file paths (and the few small JSON files `read` returns) against what loading needs."""
    every = set(paths)
    top = {p for p in every if "/" not in p}
    missing: list[str] = []
    config = _json(read, "config.json") if "config.json" in top else _NOT_YET
    if "config.json" not in top:
        missing.append("config.json")
    elif config is not _NOT_YET and (not isinstance(config, dict) or not config):
        missing.append("a readable config.json (a JSON object)")
    missing += _weights(every, read, allow_pickle)
    if _has_vocabulary(config):
        missing += _tokenizer(top)
    refs = _auto_map_refs(config)
    if _TOKENIZER_CONFIG in top:
        refs += _auto_map_refs(_json(read, _TOKENIZER_CONFIG))
    code_from = next((ref.split("--", 1)[0] for ref in refs if "--" in ref), None)
    return Inspection(missing, bool(refs), code_from)


def folder_reader(folder: Path) -> Reader:
    """A Reader over a folder on disk: a file above READ_LIMIT, or one that cannot be read, comes back as b""."""

    def read(path: str) -> bytes | None:
        file = folder / path
        try:
            return file.read_bytes() if file.stat().st_size <= READ_LIMIT else b""
        except OSError:
            return b""  # listed but unreadable: not JSON, so reported as such

    return read


def read_config(folder: Path) -> dict[str, Any]:
    """A model folder's `config.json` as a dict; empty when it is missing, unreadable or not a JSON object (the
    checks above say which, where it matters)."""
    value = _json(folder_reader(folder), "config.json")
    return value if isinstance(value, dict) else {}


def check_folder(folder: Path, name: str, *, allow_pickle: bool = True, installed: bool = True,
                 fix: str | None = None) -> Inspection:
    """Raise IncompleteModel naming what a folder lacks for loading (with `fix` as its advice, if given); return its
    inspection when complete."""
    if not folder.is_dir():
        raise IncompleteModel(name, [f"its folder {folder}"], installed=installed, fix=fix)
    paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    found = inspect(paths, folder_reader(folder), allow_pickle=allow_pickle)
    if found.missing:
        raise IncompleteModel(name, found.missing, installed=installed, fix=fix)
    return found


@dataclass(frozen=True)
class Tuned:
    """Where a loadable fine-tune's parts are: merged weights, a LoRA adapter (with its rank), or both."""

    merged: Path | None  # a complete model folder
    adapter: Path | None  # a complete LoRA adapter folder
    rank: int | None = None  # the adapter's LoRA rank (`r` in adapter_config.json)


def adapter_rank(folder: Path) -> int | None:
    """The LoRA rank an adapter folder's adapter_config.json names (the largest of `r` and `rank_pattern`), or None
    when it names none (not a LoRA, or not readable)."""
    config = _json(folder_reader(folder), ADAPTER_FILES[0])
    if not isinstance(config, dict) or not isinstance(config.get("r"), int):
        return None
    pattern = config.get("rank_pattern") if isinstance(config.get("rank_pattern"), dict) else {}
    return max([config["r"], *(r for r in pattern.values() if isinstance(r, int))])


def _adapter_missing(folder: Path) -> list[str]:
    """What an adapter folder lacks for loading: nothing when it holds a LoRA config and its safetensors weights."""
    missing = [f"{ADAPTER_DIR}/{name}" for name in ADAPTER_FILES if not (folder / name).is_file()]
    config_name = ADAPTER_FILES[0]
    if (folder / config_name).is_file():
        config = _json(folder_reader(folder), config_name)
        lora = isinstance(config, dict) and str(config.get("peft_type", "")).upper() == "LORA"
        if not lora or adapter_rank(folder) is None:
            missing.insert(0, f"a readable {ADAPTER_DIR}/{config_name} (a LoRA's: peft_type LORA and a rank r)")
    return missing


def check_tuned(folder: Path, name: str, *, base: Path | None, base_name: str | None) -> Tuned:
    """Raise what a fine-tune lacks for loading; return its loadable parts.

    It loads from `merged/` when that is complete; else from `adapter/` on its base model's folder (`base`: the
    base's full weights, None when the base is not installed any more; `base_name` names it, None when its row is
    gone). An adapter is returned only when complete, so a fine-tune with merged weights loads even without it.

    Raises:
        IncompleteModel: the folder, or what it needs (merged weights or an adapter, the base's files), is missing.
        BaseModelMissing: only an adapter is there and its base model is not installed any more.
    """
    if not folder.is_dir():
        raise IncompleteModel(name, [f"its folder {folder}"], installed=True, fix=_RETRAIN)
    merged_dir, adapter_dir = folder / MERGED_DIR, folder / ADAPTER_DIR
    merged = merged_dir if merged_dir.is_dir() else None
    if merged is not None:
        check_folder(merged, name, allow_pickle=False, installed=True, fix=_RETRAIN)
    adapter_missing = _adapter_missing(adapter_dir) if adapter_dir.is_dir() else [f"{ADAPTER_DIR}/ (a LoRA adapter)"]
    adapter = None if adapter_missing else adapter_dir
    if merged is not None:
        return Tuned(merged, adapter, adapter_rank(adapter_dir) if adapter else None)
    if adapter is None:
        raise IncompleteModel(name, [*adapter_missing, f"or merged weights in {MERGED_DIR}/"], installed=True,
                              fix=_RETRAIN)
    if base is None:
        raise BaseModelMissing(name, base_name)
    check_folder(base, base_name or "its base model", installed=True)
    return Tuned(None, adapter, adapter_rank(adapter))


def check_onnx(folder: Path, name: str) -> dict[str, Any]:
    """Raise IncompleteModel naming what an ONNX variant's folder lacks for loading; return its manifest when complete.

    It needs config.json, a tokenizer, a readable ONNX_MANIFEST naming its graph ("file") and every external data
    file it lists, and those files.
    """
    if not folder.is_dir():
        raise IncompleteModel(name, [f"its folder {folder}"], installed=True, fix=_REEXPORT)
    top = {p.name for p in folder.iterdir() if p.is_file()}
    read = folder_reader(folder)
    missing: list[str] = []
    config = _json(read, "config.json") if "config.json" in top else _UNREADABLE
    if not isinstance(config, dict) or not config:
        missing.append("a readable config.json (a JSON object)")
    missing += _tokenizer(top)
    manifest = _json(read, ONNX_MANIFEST) if ONNX_MANIFEST in top else _UNREADABLE
    graph = manifest.get("file") if isinstance(manifest, dict) else None
    extra = manifest.get("external_data", []) if isinstance(manifest, dict) else None
    if not isinstance(graph, str) or not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
        missing.append(f"a readable {ONNX_MANIFEST} (a JSON object naming its graph under \"file\")")
    else:
        missing += [path for path in (graph, *extra) if not (folder / path).is_file()]
    if missing:
        raise IncompleteModel(name, missing, installed=True, fix=_REEXPORT)
    return manifest


def weights_folder(version: VersionRecord) -> Path | None:
    """The folder holding an installed version's full weights: its own folder, or a fine-tune's `merged/`; None when
    it is not installed or is a fine-tune with only an adapter (it loads on its base, `check_tuned`)."""
    if version.install_state != "installed" or not version.local_path:
        return None
    folder = Path(version.local_path)
    if version.lineage != FINETUNE:
        return folder
    return folder / MERGED_DIR if (folder / MERGED_DIR).is_dir() else None


def tuned_parts(version: VersionRecord) -> Tuned | None:
    """A fine-tune's parts as its record lists them (None for any other version), without reading its folder: the
    files may lie on another host (a gpu worker's store, which a vLLM server loads the adapter from)."""
    if version.lineage != FINETUNE or not version.local_path:
        return None
    listed = {f.get("path") for f in version.files if isinstance(f, dict)}
    folder = Path(version.local_path)
    adapter = all(f"{ADAPTER_DIR}/{name}" in listed for name in ADAPTER_FILES)
    merged = any(isinstance(p, str) and p.startswith(f"{MERGED_DIR}/") for p in listed)
    rank = version.lineage_params.get("lora_rank")
    return Tuned(folder / MERGED_DIR if merged else None, folder / ADAPTER_DIR if adapter else None,
                 rank if isinstance(rank, int) else None)
