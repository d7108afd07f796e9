"""Model sources: the base class every source implements, the records it returns, and the registry of sources."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from modelbay.config import Settings
from modelbay.engine.catalog.sources.transfer import ByteMeter
from modelbay.engine.extensions import Extensions

__all__ = ["READ_LIMIT", "ModelSource", "RemoteFile", "RemoteModel", "SOURCES", "guess_category", "register_source"]


# The largest JSON file read to check a version (bytes); a real shard index of a 400B model is under 200 kB.
READ_LIMIT = 8 * 1024 * 1024
_KEEP_TAG = re.compile(r"^[a-z0-9][a-z0-9-]{1,30}$")
_NOISE_TAGS = {"transformers", "safetensors", "pytorch", "endpoints_compatible", "text-generation-inference",
               "autotrain_compatible", "region:us", "conversational"}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model at a commit: its size, and the hash the source publishes for it."""

    path: str
    size: int
    sha256: str | None = None  # LFS files on the hub carry their sha256
    blob_id: str | None = None  # git blob sha1 of small (non-LFS) files


@dataclass(frozen=True)
class RemoteModel:
    """A model as a source describes it at one commit."""

    source: str
    repo_id: str
    sha: str
    files: tuple[RemoteFile, ...] = ()
    author: str | None = None
    pipeline_tag: str | None = None
    tags: tuple[str, ...] = ()
    library: str | None = None
    license: str | None = None
    gated: bool = False
    downloads: int = 0
    likes: int = 0
    parameter_count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Total size of every file."""
        return sum(f.size for f in self.files)

    def registry_values(self) -> dict[str, Any]:
        """Return the registry fields for this model (for models the catalog does not have)."""
        name = self.repo_id.split("/", 1)[1]
        weights = [f for f in self.files if f.path.endswith(".safetensors")]
        return {
            "name": name.lower(),
            "display_name": name,
            "repo_id": self.repo_id,
            "category": guess_category(self.pipeline_tag, self.tags),
            "tags": [t for t in self.tags if _KEEP_TAG.match(t) and t not in _NOISE_TAGS][:12],
            "description": "",
            "author": self.author or self.repo_id.split("/", 1)[0],
            "license": self.license,
            "parameter_count": self.parameter_count,
            "size_bytes": sum(f.size for f in weights) or self.size_bytes or None,
            "format": "safetensors" if weights else None,
            "pipeline_tag": self.pipeline_tag,
            "gated": self.gated,
            "downloads": self.downloads,
            "likes": self.likes,
        }


def guess_category(pipeline_tag: str | None, tags: tuple[str, ...] | list[str]) -> str:
    """Map a hub pipeline tag and tags onto ModelBay's categories."""
    tagset = {t.lower() for t in tags}
    if pipeline_tag in ("feature-extraction", "sentence-similarity") or "sentence-transformers" in tagset:
        return "embedding"
    if tagset & {"code", "coder", "code-generation"}:
        return "code"
    if tagset & {"math", "reasoning"}:
        return "analysis"
    if tagset & {"medical", "biology", "legal", "finance", "chemistry"}:
        return "domain"
    if tagset & {"roleplay", "creative-writing", "storytelling"}:
        return "creative"
    return "chat"


class ModelSource(ABC):
    """A place models come from; a new source is a class with these three methods and a `name`.

    Sources are registered through the `register_sources` plugin hook (`modelbay/hookspecs.py`); the built-in
    ones in `modelbay/default_plugins/sources.py`, and `examples/model_source.py` shows one from a plugin.
    """

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def search(self, text: str, *, category: str | None = None, limit: int = 20) -> list[RemoteModel]:
        """Return models matching text, best first."""

    @abstractmethod
    def info(self, repo_id: str, revision: str | None = None) -> RemoteModel:
        """Return one model at a revision (default: its main branch), with its files.

        Raises:
            InvalidId: repo_id or revision is not valid.
            RepoNotFound: the source has no such repository (or it is private).
            RevisionMissing: it has no such branch, tag or commit.
            ModelBayError: a remote source's own, e.g. GatedModel or HubUnavailable from the hub.
        """

    @abstractmethod
    def fetch_file(self, model: RemoteModel, file: RemoteFile, dest: Path, meter: ByteMeter) -> str | None:
        """Copy one file into dest, feeding meter; return the sha256 of what was written, if it was computed."""

    def has(self, repo_id: str) -> bool:
        """Whether this source holds `repo_id`, answered without the network (optional hook; default: no).

        An install of a repo id the registry does not know asks every source but the hub, in the order they were
        registered, and the first that has it wins; the hub is the fallback. So a site's own copy (a local folder,
        a plugin's store) is never replaced by a same-named model from the internet.
        """
        return False

    def check_access(self, model: RemoteModel) -> None:  # noqa: B027 - optional hook
        """Raise if the caller may not download the model's files (gated repos).

        Raises:
            GatedModel: the hub's repository needs a licence accepted with the token's account.
        """

    def read_file(self, model: RemoteModel, file: RemoteFile) -> bytes | None:
        """Return a small file's bytes before the download, or None where this source cannot (optional hook).

        Pre-flight reads config and index files with it; without it, the check after the download still runs.
        A file over READ_LIMIT comes back as b"" (no config or index is that large).
        """
        return None

    def within(self, seconds: float) -> AbstractContextManager[None]:
        """Bound every call made inside to `seconds` in all (optional hook; pre-flight uses it)."""
        return nullcontext()


# Source classes by name, filled through the `register_sources` hook the first time it is read.
SOURCES: Extensions[type[ModelSource]] = Extensions("register_sources", lambda cls: cls.name)


def register_source(cls: type[ModelSource]) -> type[ModelSource]:
    """Make a source available by its name (replacing one of the same name); plugins use the hook instead."""
    return SOURCES.register(cls)
