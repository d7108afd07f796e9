"""Byte accounting for downloads: totals, rate and ETA across files, and a tqdm stand-in that feeds it."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from modelbay.engine.errors import TransferStopped

__all__ = ["ByteMeter", "TailHasher", "TransferStopped"]


class ByteMeter:
    """Counts bytes per file across parallel downloads and derives rate and ETA from a sliding window."""

    WINDOW = 5.0  # seconds of history the rate is computed over

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self.total = sum(sizes.values())
        self._done: dict[str, int] = dict.fromkeys(sizes, 0)
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self.stop = threading.Event()
        self.started = time.monotonic()

    def set(self, path: str, done: int) -> None:
        """Record how many bytes of one file are on disk (capped at its size: resumed chunks can repeat)."""
        if self.stop.is_set():
            raise TransferStopped(path)
        with self._lock:
            self._done[path] = max(0, min(done, self.sizes.get(path, done)))

    def add(self, path: str, n: int) -> None:
        """Add n bytes to one file's count."""
        with self._lock:
            current = self._done.get(path, 0)
        self.set(path, current + n)

    @property
    def done(self) -> int:
        """Bytes downloaded so far, all files together."""
        with self._lock:
            return sum(self._done.values())

    def snapshot(self) -> dict[str, Any]:
        """Return bytes, total, rate (bytes/s) and eta (s, or None when the rate is 0)."""
        now, done = time.monotonic(), self.done
        with self._lock:
            self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
                self._samples.popleft()
            start_time, start_bytes = self._samples[0]
        elapsed = now - start_time
        rate = (done - start_bytes) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else None
        return {"bytes": done, "total": self.total, "rate": round(rate, 1),
                "eta": round(eta, 1) if eta is not None else None}

    def tqdm_class(self, path: str) -> type:
        """Return a tqdm-like class that huggingface_hub's downloader updates for one file."""
        meter = self

        class _FileProgress:
            # huggingface_hub calls cls(total=..., initial=..., desc=..., unit=...) and then update(n).
            def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
                self.n = initial
                meter.set(path, initial)

            def __enter__(self) -> _FileProgress:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def update(self, n: int | float | None = 1) -> None:
                self.n += int(n or 0)
                meter.set(path, self.n)

            def close(self) -> None:
                return None

        return _FileProgress


class TailHasher:
    """Hashes a file while a downloader writes it, so verification overlaps the download instead of following it.

    It follows the downloader's temporary file (found by a glob, opened once so a rename does not matter) and
    reads bytes as they land. Anything unexpected (no file found, the file shrinking on a resumed download)
    makes result() return None, and the caller hashes the finished file instead: correctness never depends
    on the downloader's private file layout.
    """

    POLL = 0.01

    def __init__(self, folder: Path, pattern: str, size: int) -> None:
        self._folder = folder
        self._pattern = pattern
        self._size = size
        self._digest = hashlib.sha256()
        self._read = 0
        self._failed = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tail-hasher", daemon=True)
        self._thread.start()

    def _find(self) -> Path | None:
        found = list(self._folder.glob(self._pattern)) if self._folder.is_dir() else []
        if len(found) > 1:  # two files with the same content downloading side by side: can't tell which is ours
            self._failed = True
            self._done.set()
        return found[0] if len(found) == 1 else None

    def _run(self) -> None:
        path = None
        while path is None:
            if self._done.is_set():
                self._failed = True
                return
            path = self._find()
            if path is None:
                time.sleep(self.POLL)
        try:
            with path.open("rb") as f:
                while self._read < self._size:
                    if os.fstat(f.fileno()).st_size < self._read:
                        self._failed = True  # rewritten from an earlier offset: what was hashed is stale
                        return
                    chunk = f.read(min(4 * 1024 * 1024, self._size - self._read))
                    if chunk:
                        self._digest.update(chunk)
                        self._read += len(chunk)
                    elif self._done.is_set() and os.fstat(f.fileno()).st_size <= self._read:
                        self._failed = True  # the download ended short of the size we expect
                        return
                    else:
                        time.sleep(self.POLL)
        except OSError:
            self._failed = True

    def result(self, timeout: float = 30.0) -> str | None:
        """Return the sha256 of the whole file, or None when the caller must hash it itself."""
        self._done.set()
        self._thread.join(timeout)
        if self._failed or self._thread.is_alive() or self._read != self._size:
            return None
        return self._digest.hexdigest()
