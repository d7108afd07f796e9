"""A model made here from another one (a fine-tune, an optimized variant): registered as a new model with one
installed version whose files were made by a job, moved into the content-addressed store.

`add_derived_version` is the one way such a version is added: the new model takes its parent's category, license and
shape; the version points at its parent version (`parent_version_id`, a `lineage` and its `lineage_params`); the
files are moved (not copied) into a staging folder, checked as loadable by the caller's `check`, hashed into a
digest that names their folder in the store (`<source>--<name>/<digest>/`), and committed there. If anything fails
the files go back where the job left them and no model is left behind. `check_name` is the pre-flight of the name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from modelbay.engine.installs.store import ModelStore, sha256_file
from modelbay.engine.records import VersionRecord, record_from_row

__all__ = ["Derived", "add_derived_version", "check_name", "without_paths"]

WHOLE = "."  # a part moved as the version's folder itself (not a sub-folder of it)


def check_name(db: Database, name: str) -> str:
    """Return the name a new model would get (lowercase, as every registry name) if it is valid and free.

    Raises:
        InvalidId: the name has characters a model name (one part of a repo id) cannot have.
        ModelNameTaken: a model of that name (in any case) exists.
    """
    name = validate_model_name(name).lower()
    with db.session() as session:
        if session.scalar(select(Model.id).where(func.lower(Model.name) == name)) is not None:
            raise ModelNameTaken(name)
    return name


@dataclass(frozen=True)
class Derived:
    """What makes a derived model: its source and lineage names, how it describes itself, and its files."""

    source: str  # the new model's `source` ("finetune", "optimized")
    lineage: str  # the version's lineage ("finetune", "optimize")
    description: str  # the new model's description; "{base}" in it becomes the parent model's name
    tags: tuple[str, ...]  # tags the new model gets first (its parent's others follow)
    parts: Sequence[tuple[Path, str]]  # (folder a job wrote, its name in the version's folder; WHOLE: the folder)
    format: str = "safetensors"  # the version's format column ("safetensors", "onnx")
    parameter_count: int | None = None  # when it differs from the parent's (a structured pruning)
    not_inherited: tuple[str, ...] = ()  # parent's tags that say something of the parent only ("over-budget")


def add_derived_version(db: Database, *, parent: VersionRecord, name: str, derived: Derived, params: dict[str, Any],
                        store: ModelStore, check: Callable[[Path, str], dict[str, Any]]) -> VersionRecord:
    """Register a job's result as a new model with one installed version, moving its files into the store.

    `params` (JSON values) becomes the version's `lineage_params`, with "base" (the parent model's name) added and
    whatever `check(staged_folder, parent_name)` returns merged in once the files are staged; `check` raises when
    they are not loadable (IncompleteModel), and nothing is registered.

    Raises:
        InvalidId: the name is not a valid model name.
        ModelNameTaken: a model of that name exists.
        IncompleteModel: as `check` raises; nothing is registered and the files are moved back.
        ValueError: params are not JSON values, or the parent version does not exist.
    """
    name = validate_model_name(name).lower()
    try:
        json.dumps(params)  # a value the JSON column cannot store fails here, before anything moves
    except TypeError as exc:
        raise ValueError(f"params must be JSON values: {exc}") from None
    version_id, model_id, parent_name = _reserve(db, parent, name, derived, params)
    staging = store.root / ".staging" / f"{derived.source}-{uuid.uuid4().hex[:16]}"
    moved: list[tuple[Path, Path]] = []
    final: Path | None = None
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        for source, part in derived.parts:
            target = staging if part == WHOLE else staging / part
            if part != WHOLE:
                staging.mkdir(exist_ok=True)
            shutil.move(str(source), str(target))
            moved.append((target, Path(source)))
        staging.mkdir(exist_ok=True)
        found = check(staging, parent_name)
        files = _files(staging)
        digest = _digest(files)
        final = store.path(f"{derived.source}/{name}", digest)
        store.commit(staging, final)
        moved = [(final if now == staging else final / now.name, back) for now, back in moved]
        return _installed(db, version_id, final, files, digest, derived.format, found)
    except BaseException:
        for now, back in moved:  # the job's files go back where it left them
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


def _reserve(db: Database, parent: VersionRecord, name: str, derived: Derived,
             params: dict[str, Any]) -> tuple[int, int, str]:
    """Add the model and its version (not yet installed) under the name, or raise ModelNameTaken; return the
    version's id, the model's id and the parent model's name."""
    try:
        with db.session() as session:
            if session.scalar(select(Model.id).where(func.lower(Model.name) == name)) is not None:
                raise ModelNameTaken(name)
            row_parent = session.get(ModelVersion, parent.id)
            if row_parent is None:
                raise ValueError(f"no model version #{parent.id}")
            of = row_parent.model
            row = Model(
                name=name, display_name=name, source=derived.source, repo_id=None, category=of.category,
                tags=[*derived.tags, *(t for t in of.tags or []
                                       if t not in derived.tags and t not in derived.not_inherited)],
                description=derived.description.replace("{base}", of.name), license=of.license,
                parameter_count=derived.parameter_count or of.parameter_count, context_length=of.context_length,
                dtype=of.dtype, pipeline_tag=of.pipeline_tag, languages=list(of.languages or []),
                format=derived.format, versions=[],
            )
            for key, value in _search.derived_columns(row).items():
                setattr(row, key, value)
            session.add(row)
            version = ModelVersion(model=row, revision="main", install_state=InstallState.VERIFYING,
                                   parent_version_id=parent.id, lineage=derived.lineage,
                                   lineage_params={**params, "base": of.name})
            session.add(version)
            session.flush()
            return version.id, row.id, of.name
    except IntegrityError:  # another job took the name between our look and our insert
        raise ModelNameTaken(name) from None


def _files(folder: Path) -> list[dict[str, Any]]:
    """Every file under folder as {"path", "size", "sha256"}, sorted by path (what an install records)."""
    return [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def _digest(files: list[dict[str, Any]]) -> str:
    """A 40-hex id of the files' paths and contents: the version's folder name and revision sha in the store."""
    manifest = "".join(f"{f['path']}\0{f['sha256']}\n" for f in files)
    return hashlib.sha1(manifest.encode(), usedforsecurity=False).hexdigest()


def _installed(db: Database, version_id: int, final: Path, files: list[dict[str, Any]], digest: str, fmt: str,
               found: dict[str, Any]) -> VersionRecord:
    """Mark the version installed at final, with its files and what its check found, and return it."""
    size = sum(f["size"] for f in files)
    with db.session() as session:
        row = session.get(ModelVersion, version_id)
        row.install_state, row.local_path, row.files = InstallState.INSTALLED, str(final), files
        row.lineage_params = {**row.lineage_params, **found}
        row.size_bytes, row.revision_sha, row.format = size, digest, fmt
        row.installed_at = datetime.now(timezone.utc)
        model = row.model
        model.size_bytes = size
        for key, value in _search.derived_columns(model).items():
            setattr(model, key, value)
        session.flush()
        return record_from_row(VersionRecord, row)


def without_paths(value: Any) -> Any:
    """A JSON value (lineage params, a job's result) without the strings that are absolute server paths: what people
    see of it (`/models info`, REST); the files stay on the server."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items() if not _is_path(v)}
    if isinstance(value, list):
        return [without_paths(v) for v in value if not _is_path(v)]
    return value


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith(("/", "~")) or value[1:3] in (":\\", ":/"))
