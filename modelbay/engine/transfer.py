"""Byte accounting for downloads: totals, rate and ETA across files, and a tqdm stand-in that feeds it."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

__all__ = ["ByteMeter", "TransferStopped"]


class TransferStopped(Exception):  # noqa: N818 - a control-flow signal raised inside download threads
    """Raised inside a download when the meter was told to stop (the job was canceled)."""


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
