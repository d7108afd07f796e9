"""The async progress watcher adapters use to follow a job and update the message that started it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from modelbay.engine.jobs import Jobs, ProgressEvent

__all__ = ["watch"]


async def watch(jobs: Jobs, job_id: str, *, poll: float = 0.5) -> AsyncIterator[ProgressEvent]:
    """Yield a job's progress events until it ends (or reports `ready`: a server that is up), off the loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ProgressEvent | BaseException | None] = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:
        # Redis pub/sub reads block, so they run on a thread and hand events to the loop.
        try:
            for event in jobs.events(job_id, poll=poll, stop=stop):
                loop.call_soon_threadsafe(queue.put_nowait, event)
                if event.detail.get("ready"):
                    break  # a long-lived job (a model server) is up: nothing more to follow
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side, which re-raises
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=pump, name=f"watch-{job_id}", daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
