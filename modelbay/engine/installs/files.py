"""Which files of a listed version to download: safetensors and configs; pickle and remote code only where allowed."""

from __future__ import annotations

from modelbay.config import Settings
from modelbay.engine.catalog.sources.base import RemoteFile, RemoteModel
from modelbay.engine.errors import RemoteCodeRequired, UnsafeRepoFile, UnsafeWeights
from modelbay.engine.ids import InvalidId, validate_file_path
from modelbay.engine.installs.loadable import PICKLE, SAFETENSORS_WEIGHTS

__all__ = ["check_listing", "select_files"]


OTHER_WEIGHTS = (".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".gguf", ".tflite", ".mlmodel", ".npz")


def check_listing(model: RemoteModel) -> None:
    """Refuse a repo if any file it lists could not be stored safely inside its folder (UnsafeRepoFile).

    Besides each path on its own: two paths that differ only in case (one file on a case-insensitive disk), and
    a path that is both a file and a folder (`extra` and `extra/inner.txt`), cannot both be written.
    """
    seen: dict[str, str] = {}
    for file in model.files:
        try:
            validate_file_path(file.path)
        except InvalidId as exc:
            raise UnsafeRepoFile(model.repo_id, file.path, exc.reason) from None
        key = file.path.casefold()
        if key in seen:
            raise UnsafeRepoFile(model.repo_id, file.path, "it is listed twice (perhaps in another case)")
        seen[key] = file.path
    folders = {"/".join(parts[:i]) for parts in (k.split("/") for k in seen) for i in range(1, len(parts))}
    clash = min(folders & seen.keys(), default=None)
    if clash is not None:
        raise UnsafeRepoFile(model.repo_id, seen[clash], "it is both a file and a folder of other listed files")


def select_files(model: RemoteModel, settings: Settings, *, needs_remote_code: bool = False) -> list[RemoteFile]:
    """Choose what to download: safetensors and configs; pickle only when allowed and nothing safer exists."""
    files = [f for f in model.files if not any(part.startswith(".") for part in f.path.split("/"))]
    # Only the safetensors transformers loads make pickles redundant; a stray `training_args.safetensors` does not.
    has_safetensors = any(f.path in SAFETENSORS_WEIGHTS for f in files)
    pickles = [f.path for f in files if f.path.endswith(PICKLE)]
    if pickles and not has_safetensors and not settings.allow_pickle:
        raise UnsafeWeights(model.repo_id, pickles)
    code = [f for f in files if f.path.endswith(".py")]
    if (needs_remote_code or any("/" not in f.path and f.path.startswith("modeling_") for f in code)) \
            and not settings.trust_remote_code:
        raise RemoteCodeRequired(model.repo_id)
    chosen = []
    for f in files:
        if f.path.endswith(OTHER_WEIGHTS) or (f.path.endswith(PICKLE) and has_safetensors):
            continue  # other frameworks' copies of the same weights, or pickles beside safetensors
        if f.path.endswith(".py") and not settings.trust_remote_code:
            continue
        chosen.append(f)
    return chosen
