"""Web API calls out to Slack: retried after HTTP 429 as Retry-After asks, and messages edited in place, throttled."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from modelbay.adapters.slack.blocks import SlackMessage

__all__ = ["LiveMessage", "Outbox", "RateLimited"]

log = logging.getLogger(__name__)
MAX_RETRY_AFTER = 60.0  # seconds: a longer wait is Slack telling us to stop, not to pause


class RateLimited(Exception):
    """Slack answered 429: wait `retry_after` seconds before the next call of this kind."""

    def __init__(self, method: str, retry_after: float) -> None:
        self.method = method
        self.retry_after = retry_after
        super().__init__(f"{method} rate limited for {retry_after:g} s")


def _retry_after(error: SlackApiError) -> float | None:
    response = error.response
    if getattr(response, "status_code", None) != 429:
        return None
    headers = response.headers or {}
    raw = headers.get("Retry-After") or headers.get("retry-after") or "1"
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(raw)))
    except ValueError:
        return 1.0


class Outbox:
    """Every call ModelBay makes to the Slack Web API, with one rate-limit policy."""

    def __init__(self, client: AsyncWebClient, *, retries: int = 3) -> None:
        self.client = client
        self.retries = retries

    async def call(self, method: str, *, retry: bool = True, **kwargs: Any) -> AsyncSlackResponse:
        """Call a Web API method (`chat_postMessage`, ...); on 429 wait Retry-After and try again (or raise RateLimited)."""
        for attempt in range(self.retries + 1):
            try:
                return await getattr(self.client, method)(**kwargs)
            except SlackApiError as exc:
                wait = _retry_after(exc)
                if wait is None:
                    raise
                if not retry or attempt == self.retries:
                    raise RateLimited(method, wait) from None
                log.warning("slack %s rate limited; retrying in %.1f s", method, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def post(self, channel: str, message: SlackMessage, thread_ts: str | None = None) -> str:
        """Post a message (in a thread when thread_ts is given) and return its ts."""
        response = await self.call("chat_postMessage", channel=channel, thread_ts=thread_ts, blocks=message.blocks,
                                   text=message.text, unfurl_links=False, unfurl_media=False)
        return str(response["ts"])

    async def live(self, channel: str, message: SlackMessage, thread_ts: str | None = None, *,
                   interval: float = 1.0) -> LiveMessage:
        """Post a message that will be edited in place."""
        ts = await self.post(channel, message, thread_ts)
        return LiveMessage(self, channel, ts, message, interval=interval)


class LiveMessage:
    """A posted message kept up to date: at most one chat.update per interval, the newest content always wins.

    `show()` never waits for Slack; a background task sends the newest content once the interval has passed since
    the last edit (or once a 429's Retry-After has), so a fast producer (tokens, download progress) costs one edit
    a second whatever its rate.
    """

    def __init__(self, outbox: Outbox, channel: str, ts: str, shown: SlackMessage, *, interval: float = 1.0) -> None:
        self.outbox = outbox
        self.channel = channel
        self.ts = ts
        self.interval = interval
        self.edits = 0
        self._shown = shown
        self._wanted: SlackMessage | None = None
        self._next_at = time.monotonic() + interval  # the post itself counts as the first write
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    def show(self, message: SlackMessage) -> None:
        """Ask for the message to show this content (soon; nothing is sent if it is what is shown)."""
        self._wanted = message
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def settle(self, message: SlackMessage | None = None) -> None:
        """Show the final content and wait until Slack has it."""
        if message is not None:
            self.show(message)
        if self._task is not None:
            await self._task
        if self._failed is not None:
            raise self._failed

    async def _pump(self) -> None:
        while self._wanted is not None:
            wait = self._next_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            wanted, self._wanted = self._wanted, None
            if wanted is None or (wanted.blocks == self._shown.blocks and wanted.text == self._shown.text):
                continue
            try:
                await self.outbox.call("chat_update", retry=False, channel=self.channel, ts=self.ts,
                                       blocks=wanted.blocks, text=wanted.text)
            except RateLimited as exc:
                log.warning("slack chat.update rate limited; next edit in %.1f s", exc.retry_after)
                self._next_at = time.monotonic() + exc.retry_after
                if self._wanted is None:
                    self._wanted = wanted  # nothing newer came meanwhile: this content is still owed
                continue
            except Exception as exc:  # noqa: BLE001 - kept for settle(); a failed edit must not kill the producer
                log.warning("slack chat.update failed: %s", exc)
                self._failed = exc
                return
            self._shown = wanted
            self.edits += 1
            self._next_at = time.monotonic() + self.interval
