"""Measured answers for analytics tests: two versions of one registered model, and seeded random answer events
spread over a period (response times log-normal, 5% failed), as `Analytics.record_answers` takes them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from modelbay.engine.analytics.analytics import AnswerEvent
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.database import Database

__all__ = ["random_events", "two_versions"]


def two_versions(database: Database) -> list[int]:
    """The ids of versions `main` and `v2` of a registered model `m`."""
    registry = Registry(database)
    model = registry.upsert({"name": "m", "display_name": "M", "category": "chat"}, source="local")
    return [registry.add_version(model.id, rev).id for rev in ("main", "v2")]


def random_events(version_ids: list[int], now: datetime, count: int, days: float, *, seed: int) -> list[AnswerEvent]:
    """`count` answers of the given versions by 9 people, at random times in the `days` before `now`."""
    rng = random.Random(seed)
    return [
        AnswerEvent(model_version_id=rng.choice(version_ids), user_key=f"t:U{rng.randrange(9)}", session_id=None,
                    message_id=None, backend="vllm", input_tokens=rng.randrange(10, 90),
                    output_tokens=rng.randrange(1, 60), ttft_ms=rng.uniform(5, 50),
                    total_ms=rng.lognormvariate(6, 0.8), failed=rng.random() < 0.05,
                    at=now - timedelta(seconds=rng.uniform(0, days * 86400)))
        for _ in range(count)
    ]
