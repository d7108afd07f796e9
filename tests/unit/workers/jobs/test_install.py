"""workers/jobs/install.py's parallel downloads (`_download_all`) with stand-in downloads: results in listing
order, and on a failure or a cancel every other download stopped before the error comes back."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from modelbay.engine.catalog.sources.base import RemoteFile
from modelbay.engine.catalog.sources.transfer import ByteMeter, TransferStopped
from modelbay.engine.errors import ChecksumMismatch
from modelbay.engine.jobs.jobs import JobCanceled
from modelbay.workers.jobs.install import _download_all


def test_a_failure_is_raised_only_after_the_other_downloads_stopped() -> None:
    # A download notices the stop at its next chunk; staging is removed right after _download_all raises.
    meter = ByteMeter({"slow.safetensors": 100, "bad.json": 1})
    stopped = threading.Event()

    def work(file: RemoteFile) -> dict:
        if file.path == "bad.json":
            raise ChecksumMismatch(file.path, "a" * 64, "b" * 64)
        while True:
            time.sleep(0.3)  # the next chunk
            try:
                meter.add(file.path, 1)
            except TransferStopped:
                stopped.set()
                raise

    files = [RemoteFile("slow.safetensors", 100), RemoteFile("bad.json", 1)]
    with pytest.raises(ChecksumMismatch):
        _download_all(work, files, 2, meter, SimpleNamespace(canceled=False), grace=30)
    assert stopped.is_set()


def test_every_result_comes_back_in_listing_order() -> None:
    files = [RemoteFile(f"shard-{i}", 10 * i) for i in range(6)]
    meter = ByteMeter({f.path: f.size for f in files})

    def work(file: RemoteFile) -> dict:
        time.sleep(0.01 * (6 - int(file.path[-1])))  # the last listed finishes first
        meter.set(file.path, file.size)
        return {"path": file.path}

    done = _download_all(work, files, 3, meter, SimpleNamespace(canceled=False), grace=30)
    assert [d["path"] for d in done] == [f.path for f in files] and meter.done == meter.total


def test_a_cancel_stops_the_downloads_and_raises_once_they_stopped() -> None:
    meter = ByteMeter({"slow.safetensors": 100})
    reporter = SimpleNamespace(canceled=False)
    stopped = threading.Event()

    def work(file: RemoteFile) -> dict:
        reporter.canceled = True  # the job was canceled while this file downloads
        while True:
            time.sleep(0.05)
            try:
                meter.add(file.path, 1)
            except TransferStopped:
                stopped.set()
                raise

    with pytest.raises(JobCanceled):
        _download_all(work, [RemoteFile("slow.safetensors", 100)], 1, meter, reporter, grace=30)
    assert stopped.is_set()
