"""One message, one answer: a message delivered again is recognised and left alone, on every platform.

Platforms deliver a message again: Slack retries an event it thinks went unheard (same event id) and may deliver
the same message under a new event id; Discord's gateway replays events after a RESUME. A message is known by every
identity it has (the delivery id, the platform's id of the message itself); if any of them was seen in the last
hour, the delivery is a repeat.
"""

from __future__ import annotations

import asyncio

from redis import Redis

__all__ = ["SEEN_FOR", "first_delivery"]

SEEN_FOR = 3600  # seconds a delivery is remembered (Slack retries within minutes; Discord resumes within seconds)


def _first(redis: Redis, keys: list[str], seen_for: int) -> bool:
    pipe = redis.pipeline()  # one transaction: two deliveries at once cannot both be first
    for key in keys:
        pipe.set(key, 1, nx=True, ex=seen_for)
    return all(pipe.execute())


async def first_delivery(redis: Redis, platform: str, *identities: str | None, seen_for: int = SEEN_FOR) -> bool:
    """Whether a message is new: none of its identities (e.g. `event:Ev1`, `message:C1:1.5`) was seen before.

    Identities that are None (a field the delivery lacks) are skipped; all are remembered for `seen_for` seconds.
    """
    keys = [f"modelbay:{platform}:seen:{identity}" for identity in identities if identity]
    if not keys:
        return True
    return await asyncio.to_thread(_first, redis, keys, seen_for)
