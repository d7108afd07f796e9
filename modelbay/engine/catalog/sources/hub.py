"""The Hugging Face Hub source (huggingface_hub against MODELBAY_HUB_ENDPOINT), a deadline on every metadata call."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelbay.config import Settings
from modelbay.engine.catalog.sources.base import READ_LIMIT, ModelSource, RemoteFile, RemoteModel
from modelbay.engine.catalog.sources.transfer import ByteMeter, TailHasher
from modelbay.engine.errors import DownloadFailed, GatedModel, HubUnavailable, RepoNotFound, RevisionMissing
from modelbay.engine.ids import validate_file_path, validate_repo_id, validate_revision

__all__ = ["HubSource"]


_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.ENAMETOOLONG}

_timeout_lock = threading.Lock()
_timeout_set: float | None = None


@dataclass(frozen=True)
class _Deadline:
    """The moment a hub metadata call (or a whole pre-flight) must have its answer by."""

    at: float  # time.monotonic()
    seconds: float
    endpoint: str

    def left(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> HubUnavailable:
        return HubUnavailable(self.endpoint, f"it did not answer within {self.seconds:g}s")


# Set around each metadata call in the calling thread; the client's hooks below read it there.
_DEADLINE: ContextVar[_Deadline | None] = ContextVar("modelbay_hub_deadline", default=None)


class _UntilDeadline:
    """A response body that stops at the deadline: a hub sending one byte every few seconds never times out a read."""

    def __init__(self, stream: Any, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if self._deadline.left() <= 0:
                raise self._deadline.expired()
            yield chunk

    def close(self) -> None:
        self._stream.close()


_wrappers: dict[type, type] = {}


def _until_deadline(stream: Any, deadline: _Deadline) -> Any:
    """Wrap a body stream; the wrapper also derives from the client's own SyncByteStream, which it checks for.

    huggingface_hub 2 brings its own copy of httpx (httpx2): the base class is taken from the stream itself, so
    ModelBay does not import that package.
    """
    cls = type(stream)
    if cls not in _wrappers:
        base = next((c for c in cls.__mro__ if c.__name__ == "SyncByteStream"), object)
        _wrappers[cls] = type("UntilDeadline", (_UntilDeadline, base), {})
    return _wrappers[cls](stream, deadline)


def _on_request(seconds: float) -> Callable[[Any], None]:
    def hook(request: Any) -> None:
        """Give a request without a timeout `seconds`; under a deadline, no read may wait past it."""
        limits = request.extensions.get("timeout")
        if not isinstance(limits, dict):
            return
        limits = {k: seconds if v is None else v for k, v in limits.items()}
        deadline = _DEADLINE.get()
        if deadline is not None:
            left = deadline.left()
            if left <= 0:
                raise deadline.expired()  # not an httpx error, so huggingface_hub's retry loop does not retry it
            limits = {k: min(v, left) for k, v in limits.items()}
        request.extensions["timeout"] = limits
    return hook


def _on_response(response: Any) -> None:
    """Under a deadline: a server error ends the call at once (no retries past it), and the body stops in time."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return  # downloads: their stalls are handled by hub_download_timeout, and a large file takes its time
    if response.status_code >= 500 or response.status_code == 429:
        response.close()
        raise HubUnavailable(deadline.endpoint, f"HTTP {response.status_code}")
    response.stream = _until_deadline(response.stream, deadline)


def _bound_hub_timeouts(seconds: float) -> None:
    """Give every huggingface_hub request that sets no timeout of its own a `seconds` limit, and honour deadlines.

    The client huggingface_hub shares across the process has no timeout, and some calls (list_models, pagination)
    pass none: a hub that accepts the connection and never answers would hold them forever. A read timeout is per
    read, so a hub that drips a byte every few seconds would hold them too: inside `_deadline()` every request
    also ends by the deadline (at most one read timeout late). The client is process-wide, so this limit is too;
    it is set through the library's own client factory hook.
    """
    global _timeout_set
    with _timeout_lock:
        if _timeout_set == seconds:
            return
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils import _http  # its default client, which the factory hook can only replace

        def factory() -> Any:
            client = _http.default_client_factory()
            hooks = client.event_hooks
            client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _on_request(seconds)],
                                  "response": [*hooks.get("response", []), _on_response]}
            return client

        set_client_factory(factory)
        _timeout_set = seconds


# Categories the hub's list endpoint can filter on directly.
_PIPELINES = {"embedding": "feature-extraction", "chat": "text-generation", "code": "text-generation",
              "creative": "text-generation", "analysis": "text-generation", "domain": "text-generation"}


class HubSource(ModelSource):
    """The Hugging Face Hub (or a mirror at MODELBAY_HUB_ENDPOINT), through huggingface_hub."""

    name = "huggingface"

    def __init__(self, settings: Settings) -> None:
        from huggingface_hub import HfApi

        super().__init__(settings)
        self.endpoint = settings.hub_endpoint.rstrip("/")
        self._token = settings.hub_token.get_secret_value() if settings.hub_token else None
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self.timeout = settings.hub_timeout
        _bound_hub_timeouts(self.timeout)

    @contextmanager
    def _errors(self, repo_id: str, revision: str | None = None) -> Iterator[None]:
        """Translate huggingface_hub's exceptions into ModelBay's user-facing errors."""
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            yield
        except GatedRepoError:
            raise GatedModel(repo_id, f"{self.endpoint}/{repo_id}", bool(self._token)) from None
        except RepositoryNotFoundError:
            raise RepoNotFound(repo_id) from None
        except RevisionNotFoundError:
            raise RevisionMissing(repo_id, revision or "main") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise HubUnavailable(self.endpoint, f"HTTP {status}") from exc
        except OSError as exc:
            if exc.errno in _LOCAL_ERRNOS or exc.filename is not None:
                raise  # the model store's disk, not the network: the caller reports it as such
            raise HubUnavailable(self.endpoint, self._reason(exc)) from exc  # refused, DNS, timeouts
        except Exception as exc:
            if type(exc).__module__.startswith(("httpx", "httpcore")):
                raise HubUnavailable(self.endpoint, self._reason(exc)) from exc
            raise

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Bound every hub call made inside to `seconds` in all (an outer, sooner deadline still holds)."""
        outer = _DEADLINE.get()
        mine = _Deadline(time.monotonic() + seconds, seconds, self.endpoint)
        token = _DEADLINE.set(mine if outer is None or mine.at < outer.at else outer)
        try:
            yield
        finally:
            _DEADLINE.reset(token)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return f"it did not answer within {self.timeout:g}s"
        return type(exc).__name__

    def search(self, text: str, *, category: str | None = None, limit: int = 20) -> list[RemoteModel]:
        """Search the hub's model list, most downloaded first.

        Raises:
            HubUnavailable: the hub did not answer in time, or answered with a server error.
        """
        # A person searching waits source_search_timeout: the call ends by then too, so its thread is free again.
        with self._errors(text), self.within(min(self.timeout, self.settings.source_search_timeout)):
            found = self._api.list_models(
                search=text or None, pipeline_tag=_PIPELINES.get(category or ""), sort="downloads", limit=limit,
                expand=["author", "downloads", "likes", "tags", "pipeline_tag", "library_name", "gated",
                        "safetensors", "sha"],
            )
            return [self._remote(m) for m in found]

    def info(self, repo_id: str, revision: str | None = None) -> RemoteModel:
        """Return a model's metadata and file list (with LFS sha256) at a revision.

        Raises:
            InvalidId: repo_id or revision is not valid.
            RepoNotFound: the source has no such repository (or it is private).
            RevisionMissing: it has no such branch, tag or commit.
            GatedModel: the repository needs its licence accepted with the token's account.
            HubUnavailable: the hub did not answer, or answered with a server error.
        """
        validate_repo_id(repo_id)
        if revision:
            validate_revision(revision)
        with self._errors(repo_id, revision), self.within(self.timeout):
            info = self._api.model_info(repo_id, revision=revision, files_metadata=True, timeout=self.timeout)
            return self._remote(info)

    def _remote(self, info: Any) -> RemoteModel:
        files = tuple(
            RemoteFile(s.rfilename, s.size or (s.lfs.size if s.lfs else 0), s.lfs.sha256 if s.lfs else None,
                       s.blob_id)
            for s in (info.siblings or [])
        )
        tags = tuple(info.tags or ())
        license_ = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
        params = info.safetensors.total if getattr(info, "safetensors", None) else None
        if not info.sha:
            raise HubUnavailable(self.endpoint, f"no commit sha for {info.id}")
        return RemoteModel(
            source=self.name, repo_id=info.id, sha=info.sha, files=files,
            author=info.author, pipeline_tag=info.pipeline_tag, tags=tags, library=info.library_name,
            license=license_, gated=bool(info.gated), downloads=info.downloads or 0, likes=info.likes or 0,
            parameter_count=params,
        )

    def check_access(self, model: RemoteModel) -> None:
        """Ask for one file's metadata, which a gated repo refuses without an approved token.

        Raises:
            RepoNotFound: the source has no such repository (or it is private).
            RevisionMissing: it has no such branch, tag or commit.
            GatedModel: the repository needs its licence accepted with the token's account.
            HubUnavailable: the hub did not answer, or answered with a server error.
        """
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        if not model.gated or not model.files:
            return
        url = hf_hub_url(model.repo_id, model.files[0].path, revision=model.sha, endpoint=self.endpoint)
        with self._errors(model.repo_id, model.sha), self.within(self.timeout):
            get_hf_file_metadata(url, token=self._token or False, timeout=self.timeout)

    def read_file(self, model: RemoteModel, file: RemoteFile) -> bytes | None:
        """Fetch a small file (config, shard index) at the model's commit, giving up after the hub timeout.

        Raises:
            RepoNotFound: the source has no such repository (or it is private).
            RevisionMissing: it has no such branch, tag or commit.
            GatedModel: the repository needs its licence accepted with the token's account.
            HubUnavailable: the hub did not answer, or answered with a server error.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        if file.size > READ_LIMIT:
            return b""  # no config or index is that large
        url = hf_hub_url(model.repo_id, file.path, revision=model.sha, endpoint=self.endpoint)
        chunks: list[bytes] = []
        with self._errors(model.repo_id, model.sha), self.within(self.timeout):
            headers = build_hf_headers(token=self._token or False)
            with get_session().stream("GET", url, headers=headers, timeout=self.timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > READ_LIMIT:
                        return b""  # larger than listed, and than any config or index
                    chunks.append(chunk)
        return b"".join(chunks)

    def fetch_file(self, model: RemoteModel, file: RemoteFile, dest: Path, meter: ByteMeter) -> str | None:
        """Download one file at the model's commit into dest with byte-level progress.

        Raises:
            InvalidId: the file path could reach outside dest.
            DownloadFailed: the connection failed and huggingface_hub's retries did not recover it.
            RepoNotFound: the source has no such repository (or it is private).
            RevisionMissing: it has no such branch, tag or commit.
            GatedModel: the repository needs its licence accepted with the token's account.
        """
        from huggingface_hub import constants, hf_hub_download

        validate_file_path(file.path)
        # Read per call by the downloader: retry a silent connection after this many seconds,
        # and report (and resume) in 1 MiB steps instead of the default 10 MiB.
        constants.HF_HUB_DOWNLOAD_TIMEOUT = self.settings.hub_download_timeout
        constants.DOWNLOAD_CHUNK_SIZE = 1024 * 1024
        # Plain HTTP (with Range resume) even for Xet-backed repos: the Xet path reports progress through
        # another interface and ignores the timeout and chunk settings above.
        constants.HF_HUB_DISABLE_XET = True
        # huggingface_hub writes LFS files to .cache/huggingface/download/<dir>/<hash>.<sha256>.<uuid>.incomplete.
        parent = (dest / ".cache" / "huggingface" / "download" / file.path).parent
        hasher = TailHasher(parent, f"*.{file.sha256}.*.incomplete", file.size) if file.sha256 else None
        try:
            with self._errors(model.repo_id, model.sha):
                hf_hub_download(model.repo_id, file.path, revision=model.sha, local_dir=dest, endpoint=self.endpoint,
                                token=self._token or False, tqdm_class=meter.tqdm_class(file.path),
                                etag_timeout=self.timeout)
        except HubUnavailable as exc:
            raise DownloadFailed(file.path, exc.reason) from exc
        finally:
            digest = hasher.result() if hasher else None
        return digest
