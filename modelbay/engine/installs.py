"""Installs: pre-flight checks, one shared download job per model@commit, and uninstall."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelbay.config import Settings
from modelbay.engine.errors import (
    InsufficientDisk,
    ModelInUse,
    ModelNotFound,
    NotInstalled,
    RemoteCodeRequired,
    UnsafeWeights,
)
from modelbay.engine.catalog import SLUG
from modelbay.engine.ids import is_repo_id, validate_repo_id, validate_revision
from modelbay.engine.jobs import JobKind, Jobs, RetryPolicy, register_kind
from modelbay.engine.records import JobRecord, ModelRecord, VersionRecord
from modelbay.engine.registry import Registry
from modelbay.engine.sources import SOURCES, ModelSource, RemoteFile, RemoteModel
from modelbay.engine.store import ModelStore

__all__ = ["INSTALL", "InstallTicket", "Installs", "select_files"]

# Downloads get their own queue (never behind training), six hours, and two retries for transient errors.
INSTALL = register_kind(JobKind("install", "modelbay.workers.install.install", "downloads", timeout=6 * 3600,
                                retry=RetryPolicy(max=2, intervals=(5, 30)), description="Download and verify"))

PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
OTHER_WEIGHTS = (".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".gguf", ".tflite", ".mlmodel", ".npz")
_CATALOG_SOURCES = {"catalog": "huggingface"}


def select_files(model: RemoteModel, settings: Settings, *, needs_remote_code: bool = False) -> list[RemoteFile]:
    """Choose what to download: safetensors and configs; pickle only when allowed and nothing safer exists."""
    files = [f for f in model.files if not any(part.startswith(".") for part in f.path.split("/"))]
    has_safetensors = any(f.path.endswith(".safetensors") for f in files)
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


@dataclass(frozen=True)
class InstallTicket:
    """What an install request led to: the version, and the job downloading it (None if already installed)."""

    model: ModelRecord
    version: VersionRecord
    job: JobRecord | None
    created: bool
    total_bytes: int
    notices: list[str] = field(default_factory=list)


class Installs:
    """Plans, starts and undoes installs; the download itself runs in workers/install.py."""

    def __init__(self, settings: Settings, registry: Registry, jobs: Jobs) -> None:
        self.settings = settings
        self.registry = registry
        self.jobs = jobs
        self.store = ModelStore(settings.resolved_model_store)

    def source(self, name: str) -> ModelSource:
        """Return the source a model comes from."""
        return SOURCES[_CATALOG_SOURCES.get(name, name)](self.settings)

    def resolve(self, name: str) -> tuple[ModelRecord | None, str, str]:
        """Find a model by registry name or repo id: (record or None, repo id, source name)."""
        if not SLUG.match(name.lower()):
            validate_repo_id(name)  # anything else (paths, URLs, NUL bytes) is refused before any lookup
        try:
            record = self.registry.get(name)
        except ModelNotFound:
            if not is_repo_id(name):
                raise
            source = "local" if name.startswith("local/") else "huggingface"
            return None, name, source
        if not record.repo_id:
            raise ModelNotFound(name)
        return record, record.repo_id, _CATALOG_SOURCES.get(record.source, record.source)

    def request(self, name: str, revision: str | None, requester: str) -> InstallTicket:
        """Check everything that can fail before downloading, then start (or join) the download job."""
        if revision:
            validate_revision(revision)
        record, repo_id, source_name = self.resolve(name)
        source = self.source(source_name)
        remote = source.info(repo_id, revision)
        files = select_files(remote, self.settings, needs_remote_code=bool(record and record.trust_remote_code))
        source.check_access(remote)
        total = sum(f.size for f in files)
        self.check_disk(total)
        # Requests for one repo register it, add its version and submit the job one at a time.
        with self.jobs.redis.lock(f"modelbay:lock:install:{source_name}:{repo_id.lower()}", timeout=60,
                                  blocking_timeout=60):
            if record is None:
                record = self.registry.upsert(remote.registry_values(), source=source_name)
            version = self._version(self.registry.get(record.name), revision or "main", remote.sha)
            notices = self._notices(record, remote)
            if version.install_state == "installed" and self._present(version):
                return InstallTicket(record, version, None, False, total, ["Already installed.", *notices])
            job, created = self.jobs.submit(
                INSTALL.name,
                {"version_id": version.id, "source": source_name, "repo_id": repo_id, "sha": remote.sha,
                 "files": [asdict(f) for f in files]},
                requester=requester, dedup_key=f"{source_name}:{repo_id}@{remote.sha}", model_version_id=version.id,
            )
            if created:
                version = self.registry.update_version(version.id, install_state="queued")
        return InstallTicket(self.registry.get(record.name), version, job, created, total, notices)

    def check_disk(self, needed: int) -> None:
        """Refuse a download that would leave less than the configured margin free."""
        free = self.store.free_bytes()
        if needed + self.settings.disk_margin_bytes > free:
            raise InsufficientDisk(needed, free, self.settings.disk_margin_bytes, str(self.store.root))

    def _version(self, record: ModelRecord, revision: str, sha: str) -> VersionRecord:
        for version in record.versions:
            if version.revision_sha == sha:
                return version
        taken = {v.revision for v in record.versions}
        label = revision if revision not in taken else f"{revision}@{sha[:7]}"  # the branch moved on
        return self.registry.add_version(record.id, label, revision_sha=sha)

    def _present(self, version: VersionRecord) -> bool:
        return bool(version.local_path) and Path(version.local_path).is_dir()

    def _notices(self, record: ModelRecord, remote: RemoteModel) -> list[str]:
        notices = []
        if remote.gated or record.gated:
            notices.append(f"Gated model: its licence ({record.license or 'see the model card'}) applies to you.")
        elif record.license and record.license not in ("apache-2.0", "mit"):
            notices.append(f"Licence {record.license}: read its terms before use.")
        return notices

    def uninstall(self, name: str, revision: str | None = None, *, force: bool = False) -> list[VersionRecord]:
        """Remove installed files (all versions, or one revision), keeping history and analytics."""
        record, _, _ = self.resolve(name)
        if record is None:
            raise NotInstalled(name)
        targets = [v for v in record.versions if v.install_state == "installed"
                   and (revision is None or revision in (v.revision, v.revision_sha))]
        if not targets:
            raise NotInstalled(name)
        uses = self._uses(targets)
        if uses and not force:
            raise ModelInUse(record.name, uses)
        removed = []
        for version in targets:
            if version.local_path:
                self.store.remove(Path(version.local_path))
            removed.append(self.registry.update_version(version.id, install_state="uninstalled", local_path=None))
        return removed

    def _uses(self, versions: list[VersionRecord]) -> list[str]:
        ids = {v.id for v in versions}
        return [f"{job.kind} job {job.id}" for job in self.jobs.list(active=True, limit=200)
                if job.model_version_id in ids and job.kind != INSTALL.name]

    def describe(self, ticket: InstallTicket) -> dict[str, Any]:
        """A plain summary of a ticket for APIs."""
        return {"model": ticket.model.name, "revision": ticket.version.revision, "sha": ticket.version.revision_sha,
                "job_id": ticket.job.id if ticket.job else None, "created": ticket.created,
                "total_bytes": ticket.total_bytes, "notices": ticket.notices, "state": ticket.version.install_state}
