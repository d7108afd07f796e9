"""A posted message kept up to date in place, for every chat platform: throttled edits, the newest content wins.

Job progress and streamed answers change many times a second; platforms allow about one edit a second per
message (Slack's chat.update, Discord's message edits). `show()` never waits: a background task sends the newest
content once the interval since the last edit has passed (and, with a shared `Pace`, once no other message of
the bot was edited in the last interval), so a fast producer costs one edit an interval whatever its rate. An
edit refused with a rate limit postpones the next one by the time the platform asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["LiveMessage", "Pace", "RateLimited"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimited(Exception):
    """The platform refused a call for now: try again in `retry_after` seconds."""

    def __init__(self, what: str, retry_after: float) -> None:
        self.what = what
        self.retry_after = retry_after
        super().__init__(f"{what} rate limited for {retry_after:g} s")


class Pace:
    """A minimum spacing between edits shared by every live message of a bot (one edit per interval in all)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next_at = 0.0
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        """Wait until this bot may edit again, and take the turn."""
        async with self._lock:
            wait = self._next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_at = time.monotonic() + self.interval

    def hold(self, seconds: float) -> None:
        """Let no edit through for `seconds` (a rate limit that covers the whole bot)."""
        self._next_at = max(self._next_at, time.monotonic() + seconds)


class LiveMessage(Generic[T]):
    """One posted message (`ref` is the platform's handle for it) edited in place at most once per interval."""

    def __init__(self, edit: Callable[[T], Awaitable[Any]], shown: T, ref: Any = None, *, interval: float = 1.0,
                 pace: Pace | None = None) -> None:
        self.ref = ref
        self.interval = interval
        self.edits = 0
        self._edit = edit
        self._pace = pace
        self._shown = shown
        self._wanted: T | None = None
        self._next_at = time.monotonic() + interval  # posting it counts as the first write
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    @property
    def shown(self) -> T:
        """What the message shows now (as far as the platform confirmed)."""
        return self._shown

    def show(self, content: T) -> None:
        """Ask for the message to show this content (soon; nothing is sent if it is what is shown)."""
        self._wanted = content
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def settle(self, content: T | None = None) -> None:
        """Show the final content and wait until the platform has it; raise what made an edit fail."""
        if content is not None:
            self.show(content)
        if self._task is not None:
            await self._task
        if self._failed is not None:
            raise self._failed

    async def _pump(self) -> None:
        while self._wanted is not None:
            wait = self._next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._pace is not None:
                await self._pace.turn()
            wanted, self._wanted = self._wanted, None
            if wanted is None or wanted == self._shown:
                continue
            try:
                await self._edit(wanted)
            except RateLimited as exc:
                log.warning("%s; next edit in %.1f s", exc, exc.retry_after)
                self._next_at = time.monotonic() + exc.retry_after
                if self._pace is not None:
                    self._pace.hold(exc.retry_after)
                if self._wanted is None:
                    self._wanted = wanted  # nothing newer came meanwhile: this content is still owed
                continue
            except Exception as exc:  # noqa: BLE001 - kept for settle(); a failed edit must not stop the producer
                log.warning("editing a live message failed: %s", exc)
                self._failed = exc
                return
            self._shown = wanted
            self.edits += 1
            self._next_at = time.monotonic() + self.interval
