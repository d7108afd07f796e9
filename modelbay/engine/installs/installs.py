"""Installs: pre-flight checks, one shared download job per model@commit, and uninstall."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from modelbay.config import Settings
from modelbay.engine.catalog.curated import SLUG
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.catalog.sources.base import SOURCES, ModelSource, RemoteFile, RemoteModel
from modelbay.engine.db.database import Database
from modelbay.engine.errors import (
    IncompleteModel,
    InsufficientDisk,
    ModelBayError,
    ModelInUse,
    ModelNotFound,
    NotInstalled,
)
from modelbay.engine.hardware import HardwareInfo, fits
from modelbay.engine.ids import is_repo_id, validate_repo_id, validate_revision
from modelbay.engine.installs.files import check_listing, select_files
from modelbay.engine.installs.loadable import check_folder, inspect, tuned_parts
from modelbay.engine.installs.store import ModelStore
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.jobs.kinds import INSTALL
from modelbay.engine.records import JobRecord, ModelRecord, VersionRecord
from modelbay.engine.units import human_bytes

__all__ = ["InstallTicket", "Installs", "Resolved", "settle"]


PREFLIGHT_TIMEOUTS = 2  # hub timeouts the whole pre-flight (listing, small JSON reads, access check) may take
HUB = "huggingface"  # the source of last resort for a repo id no other source holds
_CATALOG_SOURCES = {"catalog": HUB}  # the curated catalog's entries come from the hub
_IN_FLIGHT = {"queued", "downloading", "verifying"}


def settle(db: Database, job: JobRecord) -> None:
    """Give a version a resting state when its install job ended without its job function saying how."""
    if job.model_version_id is None:
        return
    registry = Registry(db)
    if registry.get_version(job.model_version_id).install_state in _IN_FLIGHT:
        registry.update_version(job.model_version_id,
                                install_state="available" if job.status == "canceled" else "failed")



@dataclass(frozen=True)
class InstallTicket:
    """What an install request led to: the version, and the job downloading it (None if already installed)."""

    model: ModelRecord
    version: VersionRecord
    job: JobRecord | None
    created: bool
    total_bytes: int
    notices: list[str] = field(default_factory=list)


class Resolved(NamedTuple):
    """A model named for install: its registry record (None when only a source has it), repo id and source name."""

    model: ModelRecord | None
    repo_id: str
    source: str


class Installs:
    """Plans, starts and undoes installs; the download itself runs in workers/install.py."""

    def __init__(self, settings: Settings, registry: Registry, jobs: Jobs, hardware: HardwareInfo | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.jobs = jobs
        self.hardware = hardware
        self.store = ModelStore(settings.resolved_model_store)

    def source(self, name: str) -> ModelSource:
        """Return the source a model comes from."""
        return SOURCES[_CATALOG_SOURCES.get(name, name)](self.settings)

    def resolve(self, name: str) -> Resolved:
        """Find a model by registry name or repo id, and the repo and source it installs from.

        Raises:
            InvalidId: `name` is neither a registry name nor a valid repo id.
            ModelNotFound: no registered model has that name, or it has no repo to install from.
        """
        if not SLUG.match(name.lower()):
            validate_repo_id(name)  # anything else (paths, URLs, NUL bytes) is refused before any lookup
        try:
            record = self.registry.get(name)
        except ModelNotFound:
            if not is_repo_id(name):
                raise
            # A source that holds it (a local folder, a plugin's store) wins over the hub: an air-gapped site must
            # never fetch a same-named model from the internet instead of its own copy.
            held = (n for n, cls in SOURCES.items() if n != HUB and cls(self.settings).has(name))
            return Resolved(None, name, next(held, HUB))
        if not record.repo_id:
            raise ModelNotFound(name)
        return Resolved(record, record.repo_id, _CATALOG_SOURCES.get(record.source, record.source))

    def request(self, name: str, revision: str | None, requester: str) -> InstallTicket:
        """Check everything that can fail before downloading, then start (or join) the download job.

        Raises:
            InvalidId: the name or revision is not a valid repo id or revision.
            ModelNotFound: no model has that name, or its catalog entry names no repository.
            RepoNotFound: the source has no such repository (or it is private).
            RevisionMissing: it has no such branch, tag or commit.
            GatedModel: the repository needs its licence accepted with the token's account.
            HubUnavailable: the hub did not answer, or answered with a server error.
            UnsafeRepoFile: the repository lists a file name that cannot be stored safely.
            UnsafeWeights: it ships only pickle weights and MODELBAY_ALLOW_PICKLE is off.
            RemoteCodeRequired: loading it needs repository code and MODELBAY_TRUST_REMOTE_CODE is off.
            IncompleteModel: the chosen files lack a config, a tokenizer or weights their index names.
            InsufficientDisk: the download would leave less than the disk margin free.
        """
        if revision:
            validate_revision(revision)
        record, typed_id, source_name = self.resolve(name)
        source = self.source(source_name)
        # Each hub call has hub_timeout in all; the whole pre-flight gets a few of them, never more.
        with source.within(PREFLIGHT_TIMEOUTS * self.settings.hub_timeout):
            remote = source.info(typed_id, revision)
            check_listing(remote)
            files = select_files(remote, self.settings, needs_remote_code=bool(record and record.trust_remote_code))
            source.check_access(remote)
            self._check_loadable(source, remote, files)
        repo_id = remote.repo_id  # the source's spelling: ids typed in another case must share one download
        total = sum(f.size for f in files)
        self.check_disk(total)
        notices = self._notices(record, remote)
        # Requests for one repo register it, add its version and submit the job one at a time.
        with self.jobs.redis.lock(f"modelbay:lock:install:{source_name}:{repo_id.lower()}", timeout=60,
                                  blocking_timeout=60):
            if record is None:
                record = self.registry.upsert(remote.registry_values(), source=source_name)
            version = self._version(self.registry.get(record.name), revision or "main", remote.sha)
            if version.install_state == "installed" and self._present(version):
                return InstallTicket(record, version, None, False, total, ["Already installed.", *notices])
            job, created = self.jobs.submit(
                INSTALL.name,
                {"version_id": version.id, "source": source_name, "repo_id": repo_id, "sha": remote.sha,
                 "files": [asdict(f) for f in files]},
                requester=requester, dedup_key=f"{source_name}:{repo_id.lower()}@{remote.sha}",
                model_version_id=version.id,
            )
            current = self.registry.get_version(version.id)
            if created and current.install_state not in ("downloading", "verifying", "installed"):
                version = self.registry.update_version(version.id, install_state="queued")  # unless a worker began
        return InstallTicket(self.registry.get(record.name), version, job, created, total, notices)

    def _check_loadable(self, source: ModelSource, remote: RemoteModel, files: list[RemoteFile]) -> None:
        """Refuse a version whose chosen files cannot load: a config, a tokenizer, complete weights, no remote code."""
        chosen = {f.path: f for f in files}
        found = inspect(chosen, lambda path: source.read_file(remote, chosen[path]),
                        allow_pickle=self.settings.allow_pickle)
        found.refuse_remote_code(remote.repo_id, self.settings.trust_remote_code)
        if found.missing:
            raise IncompleteModel(remote.repo_id, found.missing)

    def check_disk(self, needed: int) -> None:
        """Refuse a download that would leave less than the configured margin free.

        Raises:
            InsufficientDisk: needed bytes plus MODELBAY_DISK_MARGIN_BYTES exceed the store's free space.
        """
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
        """Whether an installed version's folder still has what loading needs (files removed by hand: install again)."""
        if not version.local_path:
            return False
        try:
            check_folder(Path(version.local_path), version.revision)
        except IncompleteModel:
            return False
        return True

    def _notices(self, record: ModelRecord | None, remote: RemoteModel) -> list[str]:
        notices = self._fit_notice((record and record.parameter_count) or remote.parameter_count)
        licence = (record and record.license) or remote.license
        if remote.gated or (record and record.gated):
            notices.append(f"Gated model: its licence ({licence or 'see the model card'}) applies to you.")
        elif licence and licence not in ("apache-2.0", "mit"):
            notices.append(f"Licence {licence}: read its terms before use.")
        return notices

    def _fit_notice(self, parameter_count: int | None) -> list[str]:
        if self.hardware is None or not parameter_count:
            return []
        try:
            hardware = self.hardware.current(wait=2.0).hardware
        except ModelBayError:
            return []  # a notice is not worth refusing an install over
        options = fits(parameter_count, hardware)
        if any(f.where for f in options):
            best = next(f for f in options if f.where)
            return [f"Runs at {best.precision} on {best.where.upper()} here (about {human_bytes(best.needed)})."]
        smallest = options[-1]
        return [f"Too big for this deployment even at 4-bit (needs about {human_bytes(smallest.needed)}); it will "
                "install, but serving it needs a bigger machine."]

    def uninstall(self, name: str, revision: str | None = None, *, force: bool = False) -> list[VersionRecord]:
        """Remove installed files (all versions, or one revision), keeping history and analytics.

        Raises:
            InvalidId: the name or revision is not a valid repo id or revision.
            ModelNotFound: no model has that name.
            NotInstalled: no version (or not that revision) is installed.
            ModelInUse: a job uses an installed version, or an installed fine-tune needs it as its base (a LoRA
                adapter without merged weights), and force is not set.
        """
        if revision is not None:
            validate_revision(revision)  # a path or garbage is refused as such, not reported "not installed"
        record = self.resolve(name).model
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
        jobs = [f"{job.kind} job {job.id}" for job in self.jobs.list(active=True, limit=200)
                if job.model_version_id in ids and job.kind != INSTALL.name]
        # An adapter-only fine-tune answers through its base: removing the base would leave it unable to load.
        adapters = [f"fine-tune `{name}`" for name, version in self.registry.derived(ids)
                    if (parts := tuned_parts(version)) is not None and parts.merged is None]
        return jobs + adapters
