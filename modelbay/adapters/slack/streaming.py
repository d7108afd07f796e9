"""Answers streamed with Slack's chat streaming API: chat.startStream, chat.appendStream and chat.stopStream.

The slack_sdk helper (`AsyncWebClient.chat_stream`, what bolt's `say_stream` wraps) keeps each stream's state and
starts it with its first text; ModelBay decides when to hand it text. Slack's limits, as documented:
appendStream is Tier 4 (100+ calls a minute), startStream and stopStream Tier 2 (20+ a minute), per workspace, and
`markdown_text` takes at most 12,000 characters. So text is buffered and appended at most every `APPEND_EVERY`
seconds per answer, every call also waits for room in its method's minute (`CallWindow`, shared by all answers), and
a 429 waits Retry-After and tries again. A call lost in transit (a connection reset, a timeout: no answer from Slack)
is tried again after a back-off (`BACKOFF`). Either way only what the helper still holds is sent again: it keeps the
text of a call that failed and drops it once Slack accepted it, so text Slack confirmed is never sent twice.

The model's Markdown goes as it is (Slack renders it), with & and < escaped so it can never mention people or
make Slack links (`blocks.escape_markdown` says why > is not). A streamed message holds at most `STREAMED_CHARS`
escaped characters: its last `HOLD_CHARS` are held back until the cut is known, so the cut falls at a paragraph or
line break (`split_parts`); a code block open there is closed, and reopened with its language at the start of the
next message, a new stream in the thread. Which code block is open is read from whole lines only (`fence_after`):
a send may end inside a fence line, whose beginning is carried over and read with the rest of the line.
Any other error Slack answers a call with, and a failure that persists, is raised as `StreamRefused`; the adapter
then shows the whole answer with chat.update instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from modelbay.adapters.slack.blocks import escape_markdown, markdown_chars
from modelbay.adapters.slack.outbox import retry_after
from modelbay.bot.reply import Reply
from modelbay.bot.text import Fence, Part, fence_after, split_parts

__all__ = ["APPEND_EVERY", "BACKOFF", "HOLD_CHARS", "STREAMED_CHARS", "CallWindow", "NativeAnswer", "StreamLimits",
           "StreamRefused"]

log = logging.getLogger(__name__)
APPEND_EVERY = 0.5  # seconds between two appends to one answer: tokens are buffered meanwhile
STREAMED_CHARS = 11000  # escaped characters in one streamed message (Slack's 12,000, less room for fence lines)
HOLD_CHARS = 1500  # the end of a message's room held back so its cut can fall at a paragraph or line break
RETRIES = 3  # 429s, or failures in transit, in a row before a call counts as refused
BACKOFF = 0.5  # seconds before trying again a call lost in transit; doubled at each try
# What a call lost in transit raises: no answer came from Slack (aiohttp's timeouts are both)
_IN_TRANSIT = (aiohttp.ClientError, asyncio.TimeoutError)


class StreamRefused(Exception):
    """Slack refused a streaming call (`error` is its error code); `shown` says whether any streamed text is up."""

    def __init__(self, method: str, error: str, *, shown: bool) -> None:
        self.method = method
        self.error = error
        self.shown = shown
        super().__init__(f"{method} refused: {error}")


class CallWindow:
    """At most `calls` calls of one Slack method in any `seconds` (its rate-limit tier), shared by every answer."""

    def __init__(self, calls: int, seconds: float = 60.0) -> None:
        self.calls = calls
        self.seconds = seconds
        self._made: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        """Wait until a call fits in the window, and count it."""
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._made and now - self._made[0] >= self.seconds:
                    self._made.popleft()
                if len(self._made) < self.calls:
                    self._made.append(now)
                    return
                await asyncio.sleep(self.seconds - (now - self._made[0]))


@dataclass
class StreamLimits:
    """The documented tiers of the three streaming methods (calls a minute, per workspace)."""

    start: CallWindow = field(default_factory=lambda: CallWindow(20))
    append: CallWindow = field(default_factory=lambda: CallWindow(100))
    stop: CallWindow = field(default_factory=lambda: CallWindow(20))


class NativeAnswer:
    """One answer streamed into a thread with Slack's streaming methods (the `AnswerSink` of `relay`).

    `messages` holds the ts of each streamed message; `on_start` runs once the first one is up. A refused call
    raises `StreamRefused` from `add` or `finish` (the text so far stays in `text`).
    """

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, *, user: str | None,
                 team: str | None, limits: StreamLimits, tail: Callable[[Reply, list[str]], list[dict[str, Any]]],
                 on_start: Callable[[], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.user = user
        self.team = team
        self.limits = limits
        self.tail = tail
        self.on_start = on_start
        self.notices: list[str] = []
        self.messages: list[str] = []
        self.text = ""
        self._sent = 0  # characters of text handed to Slack
        self._used = 0  # escaped characters in the current message
        self._open: Fence | None = None  # the code block open at the start of the line the sent text ends in
        self._line = ""  # the sent text's unfinished last line (its fence state is known once it ends)
        self._stream: AsyncChatStream | None = None
        self._last = 0.0  # when the last append was made
        self._task: asyncio.Task[None] | None = None
        self._failed: Exception | None = None

    async def add(self, piece: str) -> None:
        """Take a new piece of the answer; it is appended within `APPEND_EVERY` seconds."""
        self.text += piece
        if self._failed is not None:
            raise self._failed
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def finish(self, reply: Reply) -> None:
        """Append the rest of the finished answer and stop the stream with the reply's tail blocks under it."""
        if self._task is not None:
            await self._task
        if self._failed is not None:
            raise self._failed
        if not reply.text.startswith(self.text[:self._sent]):  # never expected: what is shown is not the answer
            raise StreamRefused("finish", "the final answer differs from what was streamed", shown=self._sent > 0)
        if not reply.text:
            raise StreamRefused("finish", "nothing to stream", shown=False)
        self.text = reply.text
        while await self._flush(final=True):
            pass
        last = self.text[self._sent - 1:self._sent]
        end = fence_after(self._line, self._open)
        closer = str(Part(last, close=end))[len(last):]  # the answer ended inside a code block
        await self._stop(closer, self.tail(reply, self.notices))

    async def _pump(self) -> None:
        try:
            while True:
                wait = self._last + APPEND_EVERY - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not await self._flush(final=False):
                    return
        except Exception as exc:  # noqa: BLE001 - kept for add or finish to raise, never left unretrieved
            self._failed = exc

    async def _flush(self, *, final: bool) -> bool:
        """Hand Slack what may be shown now (all of it once `final`); False if there was nothing to hand."""
        pending = self.text[self._sent:]
        if not pending:
            return False
        room = STREAMED_CHARS - self._used
        # split_parts counts the reopening fence line of its first part: a new message writes it, the current one
        # already shows it
        fresh = self._stream is None
        reopen = markdown_chars(self._open.opening + "\n") if self._open else 0
        # split_parts reads fences by whole lines, so it reads from the start of the line the sent text ends in; that
        # line's sent beginning is already counted (in this message or the last), so its room is given back
        line = self._line
        parts = split_parts(line + pending, room + markdown_chars(line) + (0 if fresh else reopen), markdown_chars,
                            fence=self._open)
        if len(parts) == 1:
            take = pending if final else _within(pending, room - HOLD_CHARS - (reopen if fresh else 0))
            if not take:
                return False
            await self._append(take)
            return True
        first = parts[0]  # the message is full: it ends here, its code block closed; the rest goes on in a new one
        take = first.text[len(line):]
        if not take and fresh:  # never expected: a new message must take something, or this would not end
            take = _within(pending, room - reopen) or pending[:1]
        if take:
            await self._append(take)
        ended = line + take
        await self._stop(str(Part(ended, close=first.close if take else self._open))[len(ended):], None)
        return True

    async def _append(self, raw: str) -> None:
        shown = raw
        if self._stream is None:
            self._stream = await self.client.chat_stream(
                channel=self.channel, thread_ts=self.thread_ts, recipient_user_id=self.user,
                recipient_team_id=self.team, buffer_size=1)  # ModelBay buffers; every append is sent
            if self._open is not None:
                shown = self._open.opening + "\n" + raw
        stream, starting = self._stream, self._stream.ts is None
        wait = self._last + APPEND_EVERY - time.monotonic()
        if not starting and wait > 0:
            await asyncio.sleep(wait)
        await self._call("chat.startStream" if starting else "chat.appendStream",
                         self.limits.start if starting else self.limits.append,
                         lambda again: stream.append(markdown_text="" if again else escape_markdown(shown)))
        self._last = time.monotonic()
        self._sent += len(raw)
        self._used += markdown_chars(shown)
        whole = self._line + raw
        ended = whole.rfind("\n") + 1
        self._open, self._line = fence_after(whole[:ended], self._open), whole[ended:]
        if starting:
            self.messages.append(str(stream.ts))
            log.info("slack answer in %s/%s streams natively (message %s)", self.channel, self.thread_ts, stream.ts)
            if len(self.messages) == 1 and self.on_start is not None:
                await self.on_start()

    async def _stop(self, closer: str, blocks: list[dict[str, Any]] | None) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        await self._call("chat.stopStream", self.limits.stop, lambda again: stream.stop(
            markdown_text=None if again or not closer else escape_markdown(closer), blocks=blocks or None))
        self._used = 0  # the next text starts a new message

    async def _call(self, method: str, window: CallWindow, call: Callable[[bool], Awaitable[Any]]) -> Any:
        """Make a call in its window; a 429 or a failure in transit waits and sends again what the helper kept; any
        other error, or one that persists `RETRIES` times, raises StreamRefused."""
        for attempt in range(RETRIES + 1):
            await window.turn()
            try:
                return await call(attempt > 0)
            except SlackApiError as exc:
                wait = retry_after(exc)
                if wait is None or attempt == RETRIES:
                    error = str(exc.response.get("error") or exc) if wait is None else "ratelimited"
                    raise StreamRefused(method, error, shown=bool(self.messages)) from exc
                log.warning("slack %s rate limited; retrying in %.1f s", method, wait)
            except _IN_TRANSIT as exc:
                # No answer: the helper still holds the text, and sending it again is the only way it arrives
                if attempt == RETRIES:
                    raise StreamRefused(method, f"failed in transit: {type(exc).__name__}",
                                        shown=bool(self.messages)) from exc
                wait = BACKOFF * 2 ** attempt
                log.warning("slack %s failed in transit (%r); retrying in %.1f s", method, exc, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")


def _within(text: str, room: int) -> str:
    """The longest beginning of `text` that weighs at most `room` once escaped."""
    used = 0
    for end, char in enumerate(text):
        used += markdown_chars(char)
        if used > room:
            return text[:end]
    return text
