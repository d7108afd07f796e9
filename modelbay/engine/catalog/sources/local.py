"""A local folder of models as a source (MODELBAY_LOCAL_MODELS_DIR)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelbay.engine.catalog.sources.base import READ_LIMIT, ModelSource, RemoteFile, RemoteModel
from modelbay.engine.catalog.sources.transfer import ByteMeter
from modelbay.engine.errors import RepoNotFound, RevisionMissing
from modelbay.engine.ids import validate_file_path, validate_repo_id

__all__ = ["LocalFolderSource"]


class LocalFolderSource(ModelSource):
    """A folder of model folders (`name/` or `owner/name/`, each with a config.json), for air-gapped sites."""

    name = "local"

    @property
    def root(self) -> Path | None:
        """The folder, if one is configured."""
        return self.settings.local_models_dir

    def _folders(self) -> dict[str, Path]:
        root = self.root
        if root is None or not root.is_dir():
            return {}
        found: dict[str, Path] = {}
        for config in sorted(root.glob("*/config.json")) + sorted(root.glob("*/*/config.json")):
            rel = config.parent.relative_to(root).parts
            found["/".join(rel) if len(rel) == 2 else f"local/{rel[0]}"] = config.parent
        return found

    def has(self, repo_id: str) -> bool:
        """Whether a folder answers to repo_id (a `local/...` id always names this source)."""
        return repo_id.startswith("local/") or repo_id in self._folders()

    def search(self, text: str, *, category: str | None = None, limit: int = 20) -> list[RemoteModel]:
        """Return folders whose name contains every word of text."""
        words = text.lower().split()
        hits = [repo for repo in self._folders() if all(w in repo.lower() for w in words)]
        return [self.info(repo) for repo in hits[:limit]]

    def info(self, repo_id: str, revision: str | None = None) -> RemoteModel:
        """Describe a folder; its revision is a digest of its file names, sizes and times.

        Raises:
            InvalidId: repo_id is not valid.
            RepoNotFound: no folder has that name.
            RevisionMissing: revision is neither main nor the folder's current digest.
        """
        validate_repo_id(repo_id)
        folder = self._folders().get(repo_id)
        if folder is None:
            raise RepoNotFound(repo_id)
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        files = tuple(RemoteFile(p.relative_to(folder).as_posix(), p.stat().st_size) for p in paths)
        digest = hashlib.sha1()  # noqa: S324 - an identifier, not a security check
        for p, f in zip(paths, files, strict=True):
            digest.update(f"{f.path}\0{f.size}\0{p.stat().st_mtime_ns}\n".encode())
        if revision and revision not in ("main", digest.hexdigest()):
            raise RevisionMissing(repo_id, revision)
        return RemoteModel(source=self.name, repo_id=repo_id, sha=digest.hexdigest(), files=files,
                           author=repo_id.split("/")[0], tags=("local",))

    def read_file(self, model: RemoteModel, file: RemoteFile) -> bytes | None:
        """Return a small file of the folder."""
        validate_file_path(file.path)
        path = self._folders()[model.repo_id] / file.path
        return path.read_bytes() if path.stat().st_size <= READ_LIMIT else b""

    def fetch_file(self, model: RemoteModel, file: RemoteFile, dest: Path, meter: ByteMeter) -> str | None:
        """Copy one file, hashing what is read so the copy can be verified against it."""
        validate_file_path(file.path)
        target = dest / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with (self._folders()[model.repo_id] / file.path).open("rb") as src, target.open("wb") as out:
            while chunk := src.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
                meter.add(file.path, len(chunk))
        return digest.hexdigest()
