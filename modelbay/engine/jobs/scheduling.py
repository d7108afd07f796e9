"""Delayed retries over RQ: who schedules them, taking over from a dead scheduler, and enqueueing overdue ones.

A retry with a delay waits in RQ's scheduled registry until a scheduler moves it to its queue. One scheduler per
queue holds that queue's lock (`rq:scheduler-lock:<queue>`); rq writes it for 61 s and its scheduler process
refreshes it, with its own heartbeat, every second. When a worker dies with its scheduler, the lock outlives them
for a minute, and rq's other workers try to take it only at their maintenance, every 10 minutes. Here a lock
whose holder has been silent longer than a worker's TTL is freed, so a live worker (or, failing that, the engine
when it reads an overdue job) takes over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timezone

from redis import Redis
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import release_lock
from rq.utils import utcparse

__all__ = ["enqueue_overdue", "free_dead_locks"]

log = logging.getLogger(__name__)

# rq's RQScheduler takes each lock for its interval (1 s) + 60 s and refreshes it to that every second.
LOCK_TTL = 61


def _silent_for(redis: Redis, lock_key: str, holder: str) -> float:
    """Seconds since the lock's holder last showed life: its heartbeat, or else the last refresh of the lock."""
    beat = redis.hget(SCHEDULER_KEY_TEMPLATE % holder, "last_heartbeat")
    if beat is not None:
        return (datetime.now(timezone.utc) - utcparse(beat.decode()).replace(tzinfo=timezone.utc)).total_seconds()
    # No heartbeat hash: a holder that is starting (it writes the hash just after taking the lock), or a dead one.
    ttl = redis.ttl(lock_key)
    return LOCK_TTL - ttl if ttl >= 0 else 0.0


def free_dead_locks(redis: Redis, queues: Iterable[str], silent_after: float) -> list[str]:
    """Free the scheduler locks whose holder is silent longer than silent_after seconds; return those queues."""
    freed = []
    for queue in queues:
        key = RQScheduler.get_locking_key(queue)
        holder = redis.get(key)
        if holder is None or _silent_for(redis, key, holder.decode()) <= silent_after:
            continue
        # Deleted only if that same holder still has it: a scheduler that took it meanwhile keeps it.
        if release_lock(redis, key, holder.decode()):
            log.warning("freed the retry scheduler lock of queue %s: its holder %s stopped", queue, holder.decode())
            freed.append(queue)
    return freed


def enqueue_overdue(redis: Redis, queue: str, silent_after: float) -> bool:
    """Enqueue a queue's due retries as a one-off scheduler unless a live one holds its lock; return whether it did."""
    free_dead_locks(redis, [queue], silent_after)
    scheduler = RQScheduler([queue], connection=redis)
    try:
        scheduler.register_birth()  # before the lock, so nobody takes this holder for a dead one
        if not scheduler.acquire_locks():
            return False
        scheduler.enqueue_scheduled_jobs()
        log.warning("enqueued overdue retries of queue %s: no worker was scheduling them", queue)
        return True
    finally:
        scheduler.release_locks()
        scheduler.register_death()
        scheduler.connection.connection_pool.disconnect()  # it opened a pool of its own
