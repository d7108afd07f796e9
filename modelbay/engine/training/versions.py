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

import hashlib
import json
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from modelbay.engine.catalog import search as _search
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.catalog import InstallState, Model, ModelVersion
from modelbay.engine.errors import ModelNameTaken
from modelbay.engine.ids import validate_model_name
from modelbay.engine.installs.loadable import ADAPTER_DIR, FINETUNE, MERGED_DIR, check_tuned, weights_folder
from modelbay.engine.installs.store import ModelStore, sha256_file
from modelbay.engine.records import VersionRecord, record_from_row

__all__ = ["FINETUNE", "LINEAGE_KEYS", "SOURCE", "add_tuned_version", "check_name", "public_lineage"]

SOURCE = "finetune"  # the `source` of every model a training job makes


def check_name(db: Database, name: str) -> str:
    """Return the name a new fine-tune would get (lowercase, as every registry name) if it is valid and free.

    Training pre-flight calls this, so a bad or taken name is refused before any training.

    Raises:
        InvalidId: the name has characters a model name (one part of a repo id) cannot have.
        ModelNameTaken: a model of that name (in any case) exists.
    """
    name = validate_model_name(name).lower()
    with db.session() as session:
        if session.scalar(select(Model.id).where(func.lower(Model.name) == name)) is not None:
            raise ModelNameTaken(name)
    return name


def add_tuned_version(db: Database, *, base: VersionRecord, name: str, adapter_dir: Path, merged_dir: Path | None,
                      params: dict[str, Any], store: ModelStore) -> VersionRecord:
    """Register a training run's result as a new model with one installed version, moving its files into the store.

    `adapter_dir` is a folder peft's `save_pretrained` wrote (with the tokenizer files beside it), `merged_dir` one
    `merge_and_unload().save_pretrained` wrote, or None. Both folders are moved (not copied); if anything fails they
    are moved back and no model is left behind. `params` (JSON values: "dataset", "config", "metrics", ...) becomes
    the version's `lineage_params`, with "base" (the base model's name), "merged" and "lora_rank" (the adapter's
    rank, which a vLLM server's max LoRA rank must reach) added.

    Raises:
        InvalidId: the name is not a valid model name.
        ModelNameTaken: a model of that name exists.
        IncompleteModel: the adapter (or merged) folder lacks what loading needs; nothing is registered.
        ValueError: the base version is not installed with full weights (pre-flight's job to refuse), or params
            are not JSON.
    """
    name = validate_model_name(name).lower()
    base_folder = weights_folder(base)
    if base_folder is None:
        raise ValueError(f"base version #{base.id} is not installed with full weights (an adapter-only fine-tune "
                         "cannot be a base)")
    try:
        json.dumps(params)  # a value the JSON column cannot store fails here, before anything moves
    except TypeError as exc:
        raise ValueError(f"params must be JSON values: {exc}") from None
    version_id, model_id, base_name = _reserve(db, base, name, params, merged=merged_dir is not None)
    staging = store.root / ".staging" / f"{FINETUNE}-{uuid.uuid4().hex[:16]}"
    moved: list[tuple[Path, Path]] = []
    final: Path | None = None
    try:
        staging.mkdir(parents=True)
        for source, part in ((adapter_dir, ADAPTER_DIR), (merged_dir, MERGED_DIR)):
            if source is not None:
                shutil.move(str(source), str(staging / part))
                moved.append((staging / part, Path(source)))
        tuned = check_tuned(staging, name, base=base_folder, base_name=base_name)
        files = _files(staging)
        digest = _digest(files)
        final = store.path(f"{FINETUNE}/{name}", digest)
        store.commit(staging, final)
        moved = [(final / part.name, back) for part, back in moved]
        return _installed(db, version_id, final, files, digest, tuned.rank)
    except BaseException:
        for now, back in moved:  # the run's files go back where training left them
            if now.exists() and not back.exists():
                shutil.move(str(now), str(back))
        shutil.rmtree(staging, ignore_errors=True)
        if final is not None and final.exists():
            store.remove(final)
        with db.session() as session:
            row = session.get(Model, model_id)
            if row is not None:
                session.delete(row)
        raise


def _reserve(db: Database, base: VersionRecord, name: str, params: dict[str, Any], *,
             merged: bool) -> tuple[int, int, str]:
    """Add the model and its version (not yet installed) under the name, or raise ModelNameTaken; return the
    version's id, the model's id and the base model's name."""
    try:
        with db.session() as session:
            if session.scalar(select(Model.id).where(func.lower(Model.name) == name)) is not None:
                raise ModelNameTaken(name)
            parent = session.get(ModelVersion, base.id)
            if parent is None:
                raise ValueError(f"no model version #{base.id}")
            of = parent.model
            dataset = params.get("dataset")
            dataset_name = dataset.get("name") if isinstance(dataset, dict) else dataset
            row = Model(
                name=name, display_name=name, source=SOURCE, repo_id=None, category=of.category,
                tags=[FINETUNE, *(t for t in of.tags or [] if t != FINETUNE)],
                description=f"Fine-tuned from {of.name}" + (f" on {dataset_name}." if dataset_name else "."),
                license=of.license, parameter_count=of.parameter_count, context_length=of.context_length,
                dtype=of.dtype, pipeline_tag=of.pipeline_tag, languages=list(of.languages or []),
                format="safetensors", versions=[],
            )
            for key, value in _search.derived_columns(row).items():
                setattr(row, key, value)
            session.add(row)
            version = ModelVersion(model=row, revision="main", install_state=InstallState.VERIFYING,
                                   parent_version_id=base.id, lineage=FINETUNE,
                                   lineage_params={**params, "base": of.name, "merged": merged})
            session.add(version)
            session.flush()
            return version.id, row.id, of.name
    except IntegrityError:  # another run took the name between our look and our insert
        raise ModelNameTaken(name) from None


def _files(folder: Path) -> list[dict[str, Any]]:
    """Every file under folder as {"path", "size", "sha256"}, sorted by path (what an install records)."""
    return [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def _digest(files: list[dict[str, Any]]) -> str:
    """A 40-hex id of the files' paths and contents: the version's folder name and revision sha in the store."""
    manifest = "".join(f"{f['path']}\0{f['sha256']}\n" for f in files)
    return hashlib.sha1(manifest.encode(), usedforsecurity=False).hexdigest()


def _installed(db: Database, version_id: int, final: Path, files: list[dict[str, Any]], digest: str,
               rank: int | None) -> VersionRecord:
    """Mark the version installed at final, with its files and its adapter's LoRA rank, and return it."""
    size = sum(f["size"] for f in files)
    with db.session() as session:
        row = session.get(ModelVersion, version_id)
        row.install_state, row.local_path, row.files = InstallState.INSTALLED, str(final), files
        row.lineage_params = {**row.lineage_params, "lora_rank": rank}
        row.size_bytes, row.revision_sha, row.format = size, digest, "safetensors"
        row.installed_at = datetime.now(timezone.utc)
        model = row.model
        model.size_bytes = size
        for key, value in _search.derived_columns(model).items():
            setattr(model, key, value)
        session.flush()
        return record_from_row(VersionRecord, row)


# What a fine-tune's lineage shows people (`/models info`, REST): the rest of lineage_params stays on the server.
LINEAGE_KEYS = ("base", "dataset", "config", "metrics", "merged", "lora_rank")


def public_lineage(params: dict[str, Any]) -> dict[str, Any]:
    """The shown part of a version's lineage_params (LINEAGE_KEYS), without values that are absolute paths (files
    stay on the server)."""
    return {key: _no_paths(params[key]) for key in LINEAGE_KEYS if key in params}


def _no_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_paths(v) for k, v in value.items() if not _is_path(v)}
    if isinstance(value, list):
        return [_no_paths(v) for v in value if not _is_path(v)]
    return value


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith(("/", "~")) or value[1:3] in (":\\", ":/"))
