"""Following a job: the async progress watcher, and the reply that started a job advanced to its latest event."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

from modelbay.bot.bridge import in_thread
from modelbay.bot.live import LiveMessage
from modelbay.bot.reply import Attachment, Progress, Reply
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.units import human_bytes

__all__ = ["advance", "describe", "events_of", "finished", "follow", "following", "watch"]

log = logging.getLogger(__name__)
_ENDED = {"finished": ("success", "done"), "failed": ("error", "failed"), "canceled": ("warning", "canceled")}


async def watch(jobs: Jobs, job_id: str, *, poll: float = 0.5) -> AsyncIterator[ProgressEvent]:
    """Yield a job's progress events until it ends (or reports `ready`: a server that is up), off the loop."""
    stop = threading.Event()

    def events() -> Iterator[ProgressEvent]:
        # Redis pub/sub reads block, so they run on a stream thread; `stop` ends them when the reader leaves.
        for event in jobs.events(job_id, poll=poll, stop=stop):
            yield event
            if event.detail.ready:
                return  # a long-lived job (a model server) is up: nothing more to follow

    try:
        async for event in in_thread(events):
            yield event
    finally:
        stop.set()


def events_of(jobs: Jobs, progress: Progress) -> AsyncIterator[ProgressEvent]:
    """A progress's events: its own source when it has one (an arena battle), else its job's (`watch`)."""
    return progress.events() if progress.events is not None else watch(jobs, progress.job_id)


def following(reply: Reply) -> bool:
    """Whether a reply shows a job that is still running, so the adapter should keep it up to date."""
    return reply.progress is not None and reply.progress.status in ("queued", "started", "retrying")


def describe(event: ProgressEvent) -> str:
    """The progress message with its measurements: 'model.safetensors · 1.2 GB of 2.9 GB · 12 MB/s · 2 min left'."""
    d = event.detail
    parts = [event.message] if event.message else []
    if d.total:
        parts.append(f"{human_bytes(d.bytes or 0)} of {human_bytes(d.total)}")
    if d.rate:
        parts.append(f"{human_bytes(d.rate)}/s")
    if d.eta is not None and not event.terminal:
        eta = float(d.eta)
        parts.append(f"{eta:.0f} s left" if eta < 90 else f"{eta / 60:.0f} min left")
    return " · ".join(parts)


def advance(reply: Reply, event: ProgressEvent) -> Reply:
    """The reply that started a job, showing its latest event; when it ends (or is ready) its `done` buttons.

    A progress `view` (a training card) then redraws the rest of the reply from the same event.
    """
    progress = reply.progress
    if progress is None:
        return reply
    shown = replace(progress, fraction=event.progress, status=event.status, detail=describe(event) or None)
    ready = bool(event.detail.ready) and not event.terminal
    if event.status in _ENDED:
        tone, word = _ENDED[event.status]
        buttons = list(progress.done) if event.status == "finished" else []
        footer = f"{progress.label}: {word}" + (f" - {event.message}" if event.status != "finished" and event.message
                                                 else "")
        moved = replace(reply, progress=shown, tone=tone, buttons=buttons, footer=footer)  # type: ignore[arg-type]
    elif ready:
        moved = replace(reply, progress=shown, tone="success", buttons=list(progress.done) or reply.buttons,
                        footer=f"{progress.label}: ready")
    else:
        moved = replace(reply, progress=shown)
    return progress.view(moved, event) if progress.view is not None else moved


async def finished(reply: Reply, event: ProgressEvent) -> Reply | None:
    """The reply that replaces a job's reply once the job ended (its progress's `finish`), or None without one."""
    if reply.progress is None or reply.progress.finish is None or not event.terminal:
        return None
    return await reply.progress.finish(event)


async def follow(jobs: Jobs, live: LiveMessage[Any], reply: Reply, render: Callable[[Reply], Any],
                 attach: Callable[[list[Attachment]], Awaitable[None]] | None = None) -> None:
    """Keep the message that shows a job up to date (throttled by the live message) until the job ends or is ready;
    then show the reply that replaces it (`finished`), and send that reply's files with `attach`."""
    assert reply.progress is not None
    try:
        last = None
        async for event in events_of(jobs, reply.progress):
            last = event
            live.show(render(advance(reply, event)))
        final = await finished(reply, last) if last is not None else None
        if final is not None:
            live.show(render(final))
        await live.settle()
        if final is not None and final.attachments and attach is not None:
            await attach(final.attachments)
    except Exception:  # noqa: BLE001 - the job goes on; only its message stops moving
        log.exception("following job %s stopped", reply.progress.job_id)
