"""What loading a model version needs, checked on a listing before download and on the files after it.

ModelBay answers and embeds text, and loads models as transformers does, from the top of the folder. A version
is complete when it has:

- `config.json`;
- weights in an allowed format: a `*.safetensors` file, or every shard its `*.safetensors.index.json` names
  (pickle `.bin`/`.pt`, and their index, only where pickle is allowed);
- a tokenizer, when the model reads or writes tokens (its config names a vocabulary size, at the top or in a
  sub-config, as every text model's does: chat, code and embedding models alike): `tokenizer.json`, or
  `tokenizer_config.json` with its vocabulary (`tokenizer.model`, `vocab.json`, `vocab.txt`, ...). A config
  without a vocabulary (an image or audio encoder) needs none; a config that cannot be read yet counts as text.

A version needs remote code when `auto_map` in `config.json` or `tokenizer_config.json` points at Python classes,
in its own repo or (as `owner/name--module.Class`) in another one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelbay.engine.errors import IncompleteModel

__all__ = ["PICKLE", "READ_LIMIT", "Reader", "Inspection", "check_folder", "folder_reader", "inspect"]

PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# The largest JSON file read to check a version; a real shard index of a 400B model is under 200 kB.
READ_LIMIT = 8 * 1024 * 1024
# Returns a file's bytes, or None where it cannot be read yet (a source that only lists files before download).
Reader = Callable[[str], "bytes | None"]

_TOKENIZERS = ("tokenizer.json", "tekken.json")  # self-contained tokenizers
_NEEDS_VOCAB = "tokenizer_config.json"
_TOKENIZER_HINT = "a tokenizer (tokenizer.json, or tokenizer_config.json with its vocabulary files)"
_UNREADABLE = object()


@dataclass(frozen=True)
class Inspection:
    """What a version lacks for loading (empty when complete) and, if it needs Python code, where it comes from."""

    missing: list[str]
    remote_code: bool = False
    code_from: str | None = None  # another repo named by auto_map, if any


def _json(read: Reader, path: str) -> Any:
    """The parsed file, None where it cannot be read yet, or _UNREADABLE when it is not JSON."""
    data = read(path)
    if data is None:
        return None
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


def _weights(top: set[str], read: Reader, allow_pickle: bool) -> list[str]:
    """What the weights lack: nothing when a complete set in an allowed format is there."""
    for suffix in (".safetensors", *(PICKLE if allow_pickle else ())):
        indexes = sorted(p for p in top if p.endswith(f"{suffix}.index.json"))
        if indexes:
            missing = []
            for index in indexes:
                parsed = _json(read, index)
                if parsed is None:
                    continue  # checked once the files are here
                weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
                if not isinstance(weight_map, dict) or not weight_map:
                    missing.append(f"a readable {index}")
                    continue
                shards = sorted({s for s in weight_map.values() if isinstance(s, str)} - top)
                missing += [f"{shard} (named by {index})" for shard in shards]
            return missing
        if any(p.endswith(suffix) for p in top):
            return []
    kinds = "model.safetensors, or the shards a model.safetensors.index.json names"
    return [f"weights ({kinds}{'; or pickle weights' if allow_pickle else ''})"]


def inspect(paths: Collection[str], read: Reader, *, allow_pickle: bool) -> Inspection:
    """Check a version's file paths (and the few small JSON files `read` returns) against what loading needs."""
    top = {p for p in paths if "/" not in p}
    missing: list[str] = []
    config = _json(read, "config.json") if "config.json" in top else _UNREADABLE
    if "config.json" not in top:
        missing.append("config.json")
    elif config is _UNREADABLE:
        missing.append("a readable config.json")
    missing += _weights(top, read, allow_pickle)
    has_tokenizer = any(p in top for p in _TOKENIZERS) or (
        _NEEDS_VOCAB in top and any(p.endswith((".model", ".tiktoken")) or "vocab" in p or p == "merges.txt"
                                    for p in top))
    if not has_tokenizer and _has_vocabulary(config if config is not _UNREADABLE else None):
        missing.append(_TOKENIZER_HINT)
    refs = _auto_map_refs(config)
    if _NEEDS_VOCAB in top:
        refs += _auto_map_refs(_json(read, _NEEDS_VOCAB))
    code_from = next((ref.split("--", 1)[0] for ref in refs if "--" in ref), None)
    return Inspection(missing, bool(refs), code_from)


def folder_reader(folder: Path) -> Reader:
    """A Reader over a folder on disk (files above READ_LIMIT are not read)."""

    def read(path: str) -> bytes | None:
        file = folder / path
        try:
            return file.read_bytes() if file.stat().st_size <= READ_LIMIT else None
        except OSError:
            return b""  # listed but unreadable: not JSON, so reported as such

    return read


def check_folder(folder: Path, name: str, *, allow_pickle: bool = True, installed: bool = True) -> Inspection:
    """Raise IncompleteModel naming what a folder lacks for loading; return its inspection when complete."""
    if not folder.is_dir():
        raise IncompleteModel(name, [f"its folder {folder}"], installed=installed)
    paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    found = inspect(paths, folder_reader(folder), allow_pickle=allow_pickle)
    if found.missing:
        raise IncompleteModel(name, found.missing, installed=installed)
    return found
