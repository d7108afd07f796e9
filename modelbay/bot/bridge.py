"""The bridge from the synchronous engine to the event loop: a blocking iterator consumed as an async one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["in_thread"]

T = TypeVar("T")
_END = object()
# Streams (answers, job progress) can last minutes: their own warm pool keeps them from starving the loop's
# default executor, which runs every short engine call (`Context.call`), and costs no thread start per stream.
_STREAMS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="modelbay-stream")


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run a blocking iterator on a stream thread and yield its items on the event loop as they come.

    An error raised by the iterator is raised here. Leaving early does not stop the iterator: give it its own
    stop signal (as `Jobs.events` takes) when it must end with its reader.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def pump() -> None:
        try:
            for item in make():
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the awaiting side
            loop.call_soon_threadsafe(queue.put_nowait, _Raised(exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    done = loop.run_in_executor(_STREAMS, pump)
    while (item := await queue.get()) is not _END:
        if isinstance(item, _Raised):
            raise item.exc
        yield item  # type: ignore[misc]
    await done
