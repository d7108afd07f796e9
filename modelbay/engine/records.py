"""Plain records that cross layers (bot, adapters, workers); never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["JobRecord", "ModelRecord", "VersionRecord"]


@dataclass(frozen=True)
class VersionRecord:
    """One revision of a model and where it stands in the model store."""

    id: int
    revision: str
    revision_sha: str | None
    install_state: str
    local_path: str | None
    size_bytes: int | None
    parent_version_id: int | None
    lineage: str | None
    installed_at: datetime | None


@dataclass(frozen=True)
class ModelRecord:
    """A model's metadata and its versions."""

    id: int
    name: str
    display_name: str
    source: str
    repo_id: str | None
    category: str
    tags: list[str]
    description: str
    author: str | None
    license: str | None
    parameter_count: int | None
    size_bytes: int | None
    context_length: int | None
    format: str | None
    dtype: str | None
    pipeline_tag: str | None
    gated: bool
    trust_remote_code: bool
    languages: list[str] = field(default_factory=list)
    versions: list[VersionRecord] = field(default_factory=list)

    @property
    def installed(self) -> bool:
        """Whether any version is installed."""
        return any(v.install_state == "installed" for v in self.versions)


@dataclass(frozen=True)
class JobRecord:
    """A job as users see it."""

    id: str
    kind: str
    queue: str
    status: str
    progress: float
    progress_detail: dict[str, Any]
    requester: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the job may still run."""
        return self.status in ("queued", "started", "retrying")
