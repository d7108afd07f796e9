"""The model store on disk: where each version lives, staging for downloads, hashing and removal."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from modelbay.engine.ids import validate_repo_id

__all__ = ["ModelStore", "git_blob_sha1", "sha256_file"]

_CHUNK = 4 * 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{40}$")


def sha256_file(path: Path) -> str:
    """Return a file's sha256 hex digest."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """Return the git blob id of a file, which the hub publishes for files not stored in LFS."""
    digest = hashlib.sha1()  # noqa: S324 - git's object id, compared with the hub's, not a security hash
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _commit(sha: str) -> str:
    """Return sha if it is a full 40-hex commit id, the only folder name a version may have."""
    if not _SHA.match(sha):
        raise ValueError(f"not a commit sha: {sha!r}")
    return sha


class ModelStore:
    """Paths under MODELBAY_MODEL_STORE: <owner>--<name>/<sha>/ per version, .staging/ for downloads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, repo_id: str, sha: str) -> Path:
        """Where a version lives once installed."""
        validate_repo_id(repo_id)
        return self.root / repo_id.replace("/", "--") / _commit(sha)

    def staging(self, version_id: int, sha: str) -> Path:
        """A fresh, empty folder to download a version into (removing any leftover of a dead attempt)."""
        folder = self.root / ".staging" / f"{version_id}-{_commit(sha)[:16]}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def commit(self, staging: Path, final: Path) -> None:
        """Move a verified download into place in one rename, dropping the downloader's metadata."""
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)  # a reinstall of the same commit: the verified copy replaces it
        os.replace(staging, final)

    def remove(self, folder: Path) -> None:
        """Delete an installed version's folder (only ever inside the store)."""
        resolved = folder.resolve()
        if self.root.resolve() not in resolved.parents:
            raise ValueError(f"{folder} is outside the model store")
        shutil.rmtree(resolved, ignore_errors=True)
        try:
            resolved.parent.rmdir()  # the model's folder, once its last version is gone
        except OSError:
            pass

    def free_bytes(self) -> int:
        """Free space on the store's disk."""
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free
