"""One answer per message (bot/deliveries.py): a message delivered again under any of its identities is a repeat,
on the machine's Redis. The text splitting and streaming tests are unit tests now (tests/unit/bot/)."""

from __future__ import annotations

import asyncio

from redis import Redis

from modelbay.bot.deliveries import first_delivery


def test_a_message_delivered_again_under_any_of_its_identities_is_a_repeat(redis: Redis) -> None:
    async def check() -> list[bool]:
        return [
            await first_delivery(redis, "slack", "event:Ev1", "message:C1:1.5", "client:abc"),
            await first_delivery(redis, "slack", "event:Ev1", "message:C1:1.5", "client:abc"),  # a retry
            await first_delivery(redis, "slack", "event:Ev2", "message:C1:1.5", "client:abc"),  # a new event id
            await first_delivery(redis, "slack", "event:Ev3", "message:C1:1.6", "client:abc"),  # same client id
            await first_delivery(redis, "slack", "event:Ev4", "message:C1:1.7", None),  # another message
            await first_delivery(redis, "discord", "message:1.5"),  # other platforms have their own names
            await first_delivery(redis, "discord", "message:1.5"),
        ]

    assert asyncio.run(check()) == [True, False, False, False, True, True, False]
    assert 3500 <= redis.ttl("modelbay:slack:seen:event:Ev4") <= 3600
