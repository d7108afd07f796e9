"""Web API calls out to Slack, retried after HTTP 429 as Retry-After asks; posted messages edited in place."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from modelbay.adapters.slack.blocks import SlackMessage
from modelbay.bot.live import LiveMessage, RateLimited

__all__ = ["Outbox", "Posted", "retry_after"]

log = logging.getLogger(__name__)
MAX_RETRY_AFTER = 60.0  # seconds: a longer wait is Slack telling us to stop, not to pause


@dataclass(frozen=True)
class Posted:
    """A message ModelBay posted: its channel and ts."""

    channel: str
    ts: str


def retry_after(error: SlackApiError) -> float | None:
    """Seconds Slack asks to wait before calling again (a 429's Retry-After, at most a minute); None if not a 429."""
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
                wait = retry_after(exc)
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
                   interval: float = 1.0) -> LiveMessage[SlackMessage]:
        """Post a message that will be edited in place (chat.update at most once per interval)."""
        ts = await self.post(channel, message, thread_ts)
        return LiveMessage(partial(self._update, channel, ts), message, Posted(channel, ts), interval=interval)

    async def _update(self, channel: str, ts: str, message: SlackMessage) -> None:
        await self.call("chat_update", retry=False, channel=channel, ts=ts, blocks=message.blocks, text=message.text)
