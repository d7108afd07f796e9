"""The async progress watcher adapters use to follow a job and update the message that started it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

from modelbay.bot.bridge import in_thread
from modelbay.engine.jobs import Jobs, ProgressEvent

__all__ = ["watch"]


async def watch(jobs: Jobs, job_id: str, *, poll: float = 0.5) -> AsyncIterator[ProgressEvent]:
    """Yield a job's progress events until it ends (or reports `ready`: a server that is up), off the loop."""
    stop = threading.Event()

    def events() -> Iterator[ProgressEvent]:
        # Redis pub/sub reads block, so they run on a stream thread; `stop` ends them when the reader leaves.
        for event in jobs.events(job_id, poll=poll, stop=stop):
            yield event
            if event.detail.get("ready"):
                return  # a long-lived job (a model server) is up: nothing more to follow

    try:
        async for event in in_thread(events):
            yield event
    finally:
        stop.set()
