"""bot/live.py: a live message edits at most once an interval, the newest content wins, a rate limit postpones the
next edit, and a shared `Pace` spaces the edits of every message of a bot. Real time, in short intervals."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelbay.bot.live import LiveMessage, Pace, RateLimited

INTERVAL = 0.05  # seconds
SLACK = 0.005  # the event loop may wake a timer up to its clock's resolution early


class Platform:
    """Records each edit it accepts with the time it came; refuses the first `limited` with a rate limit."""

    def __init__(self, limited: int = 0, retry_after: float = 0.2, fail: BaseException | None = None) -> None:
        self.edits: list[tuple[float, str]] = []
        self.attempts: list[float] = []
        self.limited = limited
        self.retry_after = retry_after
        self.fail = fail

    async def edit(self, content: str) -> None:
        self.attempts.append(time.monotonic())
        if self.fail is not None:
            raise self.fail
        if self.limited:
            self.limited -= 1
            raise RateLimited("chat.update", self.retry_after)
        self.edits.append((time.monotonic(), content))


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def test_a_fast_producer_costs_one_edit_an_interval_and_the_newest_content_wins() -> None:
    async def produce() -> tuple[Platform, LiveMessage[str], float, float]:
        platform = Platform()
        posted = time.monotonic()
        live = LiveMessage(platform.edit, "0", interval=INTERVAL)
        for i in range(1, 201):
            live.show(str(i))
            await asyncio.sleep(0.001)
        await live.settle("final")
        return platform, live, posted, time.monotonic()

    platform, live, posted, ended = asyncio.run(produce())
    times = [at for at, _ in platform.edits]
    assert platform.edits[-1][1] == "final" and live.shown == "final" and live.edits == len(platform.edits)
    assert times[0] - posted >= INTERVAL - SLACK  # posting the message counts as its first write
    assert all(gap >= INTERVAL - SLACK for gap in _gaps(times))
    assert len(times) <= (ended - posted) / INTERVAL + 1  # 201 contents, one edit an interval whatever the rate
    shown = [int(content) for _, content in platform.edits[:-1]]
    assert shown == sorted(shown)  # what is shown only moves forward: each edit sends the newest content


def test_content_already_shown_is_not_sent_again() -> None:
    async def run() -> Platform:
        platform = Platform()
        live = LiveMessage(platform.edit, "same", interval=0.0)
        live.show("other")
        live.show("same")  # the newest wins, and it is what the message shows already
        await live.settle()
        await live.settle("same")
        return platform

    assert asyncio.run(run()).attempts == []


def test_a_rate_limit_postpones_the_next_edit_and_the_content_owed_is_still_sent() -> None:
    async def run() -> tuple[Platform, LiveMessage[str]]:
        platform = Platform(limited=1, retry_after=0.2)
        live = LiveMessage(platform.edit, "", interval=0.0)
        await live.settle("hello")
        return platform, live

    platform, live = asyncio.run(run())
    assert [content for _, content in platform.edits] == ["hello"] and live.shown == "hello" and live.edits == 1
    assert _gaps(platform.attempts)[0] >= 0.2 - SLACK


def test_a_shared_pace_spaces_the_edits_of_every_message_and_a_rate_limit_holds_them_all() -> None:
    async def run() -> tuple[Platform, Platform]:
        pace = Pace(INTERVAL)
        first, second = Platform(limited=1, retry_after=0.2), Platform()
        one = LiveMessage(first.edit, "", interval=0.0, pace=pace)
        two = LiveMessage(second.edit, "", interval=0.0, pace=pace)
        for i in range(20):
            one.show(f"a{i}")
            two.show(f"b{i}")
            await asyncio.sleep(0.005)
        await asyncio.gather(one.settle("a-final"), two.settle("b-final"))
        return first, second

    first, second = asyncio.run(run())
    assert first.edits[-1][1] == "a-final" and second.edits[-1][1] == "b-final"
    attempts = sorted(first.attempts + second.attempts)
    assert all(gap >= INTERVAL - SLACK for gap in _gaps(attempts))  # one edit an interval for the whole bot
    limited_at = first.attempts[0]
    assert all(at - limited_at >= 0.2 - SLACK for at in attempts if at > limited_at)  # the bot waited it out


def test_a_failed_edit_does_not_stop_the_producer_and_settle_raises_it() -> None:
    async def run() -> None:
        live = LiveMessage(Platform(fail=ConnectionError("gone")).edit, "", interval=0.0)
        live.show("x")  # never raises: the producer goes on
        await asyncio.sleep(0.01)
        live.show("y")
        with pytest.raises(ConnectionError, match="gone"):
            await live.settle()
        assert live.shown == ""

    asyncio.run(run())
