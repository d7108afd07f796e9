"""Job functions the job tests enqueue; real workers import them from this module by path."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from modelbay.engine.errors import ModelNotFound
from modelbay.workers import JobContext


def count(ctx: JobContext, n: int, delay: float = 0.02) -> dict:
    """Count to n, reporting progress at each step."""
    for i in range(n):
        ctx.progress((i + 1) / n, f"step {i + 1}/{n}", step=i + 1)
        time.sleep(delay)
    return {"counted": n}


def flaky(ctx: JobContext, marker: str, failures: int) -> dict:
    """Fail the first `failures` attempts (counted in a file), then succeed."""
    path = Path(marker)
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    if seen < failures:
        raise ConnectionError(f"transient failure {seen + 1}")
    return {"attempt": ctx.attempt}


def refuse(ctx: JobContext, marker: str) -> None:
    """Fail with a user-facing error (which must not be retried), counting attempts in a file."""
    path = Path(marker)
    path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))
    raise ModelNotFound("no-such-model", ["qwen2.5-0.5b-instruct"])


def sleepy(ctx: JobContext, seconds: float, pidfile: str | None = None) -> dict:
    """Sleep without reporting progress (only a forced cancel or the timeout stops it)."""
    if pidfile:
        # Written whole, then renamed into place: a test that sees the file reads the pid, never an empty file.
        Path(f"{pidfile}.part").write_text(str(os.getpid()))
        os.replace(f"{pidfile}.part", pidfile)
    time.sleep(seconds)
    return {"slept": seconds}


def modules(ctx: JobContext, heavy: str = "torch") -> dict:
    """Report whether a heavy module was already imported when the job started, then import it."""
    before = heavy in sys.modules
    __import__(heavy)
    return {"loaded_before": before, "pid": os.getpid()}
