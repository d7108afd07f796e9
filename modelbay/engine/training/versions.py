"""A fine-tune as a model of its own: a new model (source "finetune") with one installed version that adapts its base.

A training job ends here (`add_tuned_version`): its LoRA adapter (and, with `merge:true`, the merged weights) move
into the model store under `finetune--<name>/<digest>/`, laid out as `engine/installs/loadable.py` reads a fine-tune:

    adapter/   adapter_config.json + adapter_model.safetensors (peft's save_pretrained), plus the tokenizer files
    merged/    a complete model (config, weights, tokenizer): only when merged

The version points at its base version (`parent_version_id`, lineage "finetune") and keeps what made it in
`lineage_params` (dataset, config, metrics, ...). Chats answer it through its base model's vLLM server with the
adapter hot-loaded, else in this process (`engine/chat/chats.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelbay.engine.db.database import Database
from modelbay.engine.installs.derived import Derived, add_derived_version, check_name, without_paths
from modelbay.engine.installs.loadable import ADAPTER_DIR, FINETUNE, MERGED_DIR, check_tuned, weights_folder
from modelbay.engine.installs.store import ModelStore
from modelbay.engine.records import VersionRecord

__all__ = ["FINETUNE", "LINEAGE_KEYS", "SOURCE", "add_tuned_version", "check_name", "public_lineage"]

SOURCE = "finetune"  # the `source` of every model a training job makes


def add_tuned_version(db: Database, *, base: VersionRecord, name: str, adapter_dir: Path, merged_dir: Path | None,
                      params: dict[str, Any], store: ModelStore) -> VersionRecord:
    """Register a training run's result as a new model with one installed version, moving its files into the store.

    `adapter_dir` is a folder peft's `save_pretrained` wrote (with the tokenizer files beside it), `merged_dir` one
    `merge_and_unload().save_pretrained` wrote, or None. Both folders are moved (not copied); if anything fails they
    are moved back and no model is left behind (`installs/derived.add_derived_version`). `params` (JSON values:
    "dataset", "config", "metrics", ...) becomes the version's `lineage_params`, with "base" (the base model's name),
    "merged" and "lora_rank" (the adapter's rank, which a vLLM server's max LoRA rank must reach) added.

    Raises:
        InvalidId: the name is not a valid model name.
        ModelNameTaken: a model of that name exists.
        IncompleteModel: the adapter (or merged) folder lacks what loading needs; nothing is registered.
        ValueError: the base version is not installed with full weights (pre-flight's job to refuse), or params
            are not JSON.
    """
    base_folder = weights_folder(base)
    if base_folder is None:
        raise ValueError(f"base version #{base.id} is not installed with full weights (an adapter-only fine-tune "
                         "cannot be a base)")
    dataset = params.get("dataset")
    dataset_name = dataset.get("name") if isinstance(dataset, dict) else dataset
    parts = [(adapter_dir, ADAPTER_DIR)] + ([(merged_dir, MERGED_DIR)] if merged_dir is not None else [])

    def check(staged: Path, base_name: str) -> dict[str, Any]:
        return {"lora_rank": check_tuned(staged, name, base=base_folder, base_name=base_name).rank}

    derived = Derived(source=SOURCE, lineage=FINETUNE, tags=(FINETUNE,), parts=parts,
                      description="Fine-tuned from {base}" + (f" on {dataset_name}." if dataset_name else "."))
    return add_derived_version(db, parent=base, name=name, derived=derived,
                               params={**params, "merged": merged_dir is not None}, store=store, check=check)


# What a fine-tune's lineage shows people (`/models info`, REST): the rest of lineage_params stays on the server.
LINEAGE_KEYS = ("base", "dataset", "config", "metrics", "merged", "lora_rank")


def public_lineage(params: dict[str, Any]) -> dict[str, Any]:
    """The shown part of a version's lineage_params (LINEAGE_KEYS), without values that are absolute paths (files
    stay on the server)."""
    return {key: without_paths(params[key]) for key in LINEAGE_KEYS if key in params}
