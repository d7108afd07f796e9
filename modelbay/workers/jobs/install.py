"""The install job: download a model version into staging, verify every file, then move it into the store."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelbay.engine.errors import ChecksumMismatch, DiskFull, UnsafeRepoFile
from modelbay.engine.installs.files import check_listing
from modelbay.engine.installs.installs import Installs
from modelbay.engine.jobs.jobs import JobCanceled
from modelbay.engine.installs.loadable import check_folder
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.catalog.sources.base import RemoteFile, RemoteModel
from modelbay.engine.installs.store import git_blob_sha1, sha256_file
from modelbay.engine.catalog.sources.transfer import ByteMeter, TransferStopped
from modelbay.engine.units import human_bytes
from modelbay.workers.context import JobContext

__all__ = ["install"]

REPORT_EVERY = 0.5  # seconds between progress reports, so a stalled download still shows its rate falling
# Errors writing a listed path that come from the listing itself (a name both a file and a folder, too long): the
# same listing fails the same way on every attempt, so they are refusals, never retried as temporary.
_LISTING_ERRNOS = {errno.EISDIR, errno.EEXIST, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EILSEQ}
STOP_GRACE = 5.0  # seconds, beyond one read timeout, a stopped download thread gets to end before staging goes

log = logging.getLogger("modelbay.install")


class _Reporter:
    """Reports download progress on a timer (bytes, total, rate, ETA) and stops the meter on cancel."""

    def __init__(self, ctx: JobContext, meter: ByteMeter, label: str) -> None:
        self._ctx = ctx
        self._meter = meter
        self._label = label
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="install-progress", daemon=True)
        self.canceled = False

    def __enter__(self) -> _Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._done.wait(REPORT_EVERY):
            self.report()

    def report(self, *, final: bool = False) -> None:
        """Send one progress report; a cancel request stops every download thread at its next chunk."""
        snap = self._meter.snapshot()
        eta = f", about {snap['eta']:.0f}s left" if snap["eta"] is not None else ""
        message = (f"{self._label}: {human_bytes(snap['bytes'])} of {human_bytes(snap['total'])} at "
                   f"{human_bytes(snap['rate'])}/s{eta}")
        try:
            self._ctx.progress(0.95 * snap["bytes"] / max(snap["total"], 1), message, force=final, phase="download",
                               **snap)
        except JobCanceled:
            self.canceled = True
            self._meter.stop.set()


def _verify(path: Path, file: RemoteFile, streamed: str | None) -> dict[str, Any]:
    """Check one downloaded file against its published hash; return its record with sha256.

    `streamed` is the sha256 of the bytes as they arrived. Against a published hash it stands for the file
    (saving a second read); without one (local copies) the file on disk is read back and must match it.
    """
    if path.stat().st_size != file.size:
        raise ChecksumMismatch(file.path, f"{file.size} bytes", f"{path.stat().st_size} bytes")
    if file.sha256:
        actual = streamed or sha256_file(path)
        if actual != file.sha256:
            raise ChecksumMismatch(file.path, file.sha256, actual)
        return {"path": file.path, "size": file.size, "sha256": actual}
    actual = sha256_file(path)
    if streamed and actual != streamed:
        raise ChecksumMismatch(file.path, streamed, actual)
    if file.blob_id and (blob := git_blob_sha1(path)) != file.blob_id:
        raise ChecksumMismatch(file.path, file.blob_id, blob)
    return {"path": file.path, "size": file.size, "sha256": actual}


def _download_all(work: Callable[[RemoteFile], dict[str, Any]], files: list[RemoteFile], workers: int,
                  meter: ByteMeter, reporter: _Reporter, grace: float) -> list[dict[str, Any]]:
    """Run work on every file in parallel; on a cancel or the first failure, stop the rest and wait for them.

    The caller removes the staging folder next, so no download may still be writing there (a late thread would
    leave a lock or partial file behind). A download blocked on a silent connection notices the meter's stop
    only at its next chunk, at most one read timeout away: it gets `grace` seconds, then is left to end alone.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
    futures = [pool.submit(work, f) for f in files]
    try:
        while True:
            done, pending = wait(futures, timeout=0.2, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if reporter.canceled:
                raise JobCanceled("canceled")
            if failed is not None:
                raise failed.exception()  # type: ignore[misc]
            if not pending:
                return [f.result() for f in futures]
    finally:
        meter.stop.set()  # every download still running stops at its next chunk
        pool.shutdown(wait=False, cancel_futures=True)
        _, running = wait(futures, timeout=grace)
        if running:
            log.warning("%d download threads still running %.0fs after the stop", len(running), grace)


def _listed(filename: object, staging: Path) -> str:
    """The repo path an OSError's file name stands for (relative to staging), or the name as it is."""
    try:
        return Path(str(filename)).relative_to(staging).as_posix()
    except ValueError:
        return str(filename)


def install(ctx: JobContext, version_id: int, source: str, repo_id: str, sha: str,
            files: list[dict[str, Any]]) -> dict[str, Any]:
    """Download, verify and install one model version; partial files never outlive a failed attempt."""
    registry = Registry(ctx.db)
    installs = Installs(ctx.settings, registry, ctx.jobs)
    wanted = [RemoteFile(**f) for f in files]
    model = RemoteModel(source=source, repo_id=repo_id, sha=sha, files=tuple(wanted))
    fetcher = installs.source(source)
    meter = ByteMeter({f.path: f.size for f in wanted})
    started = time.monotonic()

    installs.check_disk(meter.total)  # the disk may have filled since the request
    staging = installs.store.staging(version_id, sha)
    registry.update_version(version_id, install_state="downloading")
    try:
        # The listing as the job got it (a job queued without pre-flight, or a source that changed since): a path
        # that cannot be stored is refused before any download, not by whichever parallel write meets it first.
        check_listing(model)

        def fetch_and_verify(file: RemoteFile) -> dict[str, Any]:
            streamed = fetcher.fetch_file(model, file, staging, meter)
            return _verify(staging / file.path, file, streamed)

        with _Reporter(ctx, meter, f"Downloading {repo_id}") as reporter:
            records = _download_all(fetch_and_verify, wanted, ctx.settings.download_workers, meter, reporter,
                                    grace=ctx.settings.hub_download_timeout + STOP_GRACE)
        reporter.report(final=True)  # the last count (bytes == total) always goes out
        if reporter.canceled:
            raise JobCanceled(ctx.job_id)
        # What pre-flight saw in the listing, now on disk: nothing that cannot load is marked installed.
        found = check_folder(staging, repo_id, allow_pickle=ctx.settings.allow_pickle, installed=False)
        found.refuse_remote_code(repo_id, ctx.settings.trust_remote_code)
        ctx.progress(0.97, "Verified every file; moving into the model store", phase="install")
        final = installs.store.path(repo_id, sha)
        installs.store.commit(staging, final)
    except BaseException as exc:
        # A failure that comes from stopping on request (a download cut short) is a cancel, not an error.
        canceled = isinstance(exc, (JobCanceled, TransferStopped)) or ctx.jobs.cancel_requested(ctx.job_id)
        registry.update_version(version_id, install_state="available" if canceled else "failed")
        installs.store.remove(staging)
        if canceled:
            raise JobCanceled(ctx.job_id) from None
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise DiskFull(str(installs.store.root)) from exc
        if isinstance(exc, OSError) and exc.errno in _LISTING_ERRNOS:
            log.warning("install of %s refused: a listed path cannot be written", repo_id, exc_info=exc)
            raise UnsafeRepoFile(repo_id, _listed(exc.filename, staging), exc.strerror or type(exc).__name__) from exc
        raise
    registry.update_version(
        version_id, install_state="installed", local_path=str(final), files=records, size_bytes=meter.total,
        installed_at=datetime.now(timezone.utc),
        format="safetensors" if any(r["path"].endswith(".safetensors") for r in records) else None,
    )
    seconds = time.monotonic() - started
    return {"path": str(final), "files": len(records), "bytes": meter.total, "seconds": round(seconds, 2),
            "rate": round(meter.total / seconds, 1) if seconds > 0 else None}
