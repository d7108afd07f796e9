"""The `/analytics model` query over 1,000,000 answer events, against the exact query over the raw events.

Events are written through `Analytics.record_answers` (the path every answer takes: raw event plus hourly rollup
and latency histogram) for two versions of one model over 90 days, with a share of them rated. Then, in the
same run, each period is measured both ways: ModelBay's rollup query (`Analytics.metrics`) and the baseline, the
same numbers computed exactly from the raw events in SQL (count, sums, and p50/p95 by ORDER BY ... OFFSET).
Goal: the metrics query at or under 200 ms. The percentile error against the exact values is printed too.

    python bench/analytics.py                      # SQLite in a temporary folder
    python bench/analytics.py --postgres URL       # also PostgreSQL (uses and drops schema modelbay_bench)

Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import median_ms  # noqa: E402 - after the path is set

EVENTS = 1_000_000
CHUNK = 20_000
DAYS = 90
REPEATS = 7
GOAL_MS = 200.0


def _fill(analytics, version_ids: list[int], now: datetime) -> float:  # noqa: ANN001
    from modelbay.engine.analytics.analytics import AnswerEvent

    rng = random.Random(0)
    start = time.perf_counter()
    for offset in range(0, EVENTS, CHUNK):
        batch = []
        for _ in range(min(CHUNK, EVENTS - offset)):
            total = rng.lognormvariate(7.0, 0.6)  # ~1.1 s median, a long tail
            ttft = total * rng.uniform(0.05, 0.2)
            tokens = max(1, int(total / 1000 * rng.uniform(20, 60)))
            batch.append(AnswerEvent(
                model_version_id=rng.choice(version_ids), user_key=f"bench:U{rng.randrange(500)}", session_id=None,
                message_id=None, backend="vllm", input_tokens=rng.randrange(20, 400), output_tokens=tokens,
                ttft_ms=ttft, total_ms=total, failed=rng.random() < 0.01,
                at=now - timedelta(seconds=rng.uniform(0, DAYS * 86400)),
            ))
        analytics.record_answers(batch)
    return time.perf_counter() - start


def _rate(db, analytics, version_ids: list[int], now: datetime) -> None:  # noqa: ANN001
    rng = random.Random(1)
    with db.session() as session:
        for _ in range(20_000):
            analytics.add_rating(session, rng.choice(version_ids), now - timedelta(seconds=rng.uniform(0, DAYS * 86400)),
                                 ups=int(rng.random() < 0.8), downs=0)
        for _ in range(5_000):
            analytics.add_rating(session, rng.choice(version_ids), now - timedelta(seconds=rng.uniform(0, DAYS * 86400)),
                                 ups=0, downs=1)


def _exact(db, version_ids: list[int], since: datetime | None) -> dict:  # noqa: ANN001
    """The baseline: every figure straight from the raw events."""
    from sqlalchemy import func, select

    from modelbay.engine.db.schema.analytics import AnalyticsEvent as E

    where = [E.model_version_id.in_(version_ids), E.event_type == "answer"] + ([E.created_at >= since] if since else [])
    with db.session() as session:
        n, ttft, tps = session.execute(select(func.count(), func.avg(E.ttft_ms), func.avg(E.tokens_per_s))
                                       .where(*where)).one()
        result = {"requests": n, "mean_ttft_ms": ttft, "tokens_per_s": tps}
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95)):
            rank = max(0, int(q * n + 0.999999) - 1)  # nearest-rank percentile
            result[name] = session.execute(select(E.total_ms).where(*where).order_by(E.total_ms).offset(rank)
                                           .limit(1)).scalar()
    return result


def run(url: str, label: str) -> dict:
    from modelbay.engine.analytics.analytics import Analytics, parse_period
    from modelbay.engine.db.database import Database
    from modelbay.engine.catalog.registry import Registry

    db = Database(url)
    db.upgrade()
    registry = Registry(db)
    model = registry.upsert({"name": "bench-model", "display_name": "Bench", "category": "chat"}, source="local")
    version_ids = [registry.add_version(model.id, rev).id for rev in ("main", "v2")]
    analytics = Analytics(db)
    now = datetime.now(timezone.utc)
    fill_s = _fill(analytics, version_ids, now)
    _rate(db, analytics, version_ids, now)
    out: dict = {"backend": label, "events": EVENTS, "fill_s": round(fill_s, 1), "periods": {}}
    for period in ("24h", "7d", "30d", "all"):
        since = parse_period(period, now)
        ours_ms, ours = median_ms(lambda: analytics.metrics(version_ids, since), REPEATS)
        # Periods count whole hours; the baseline starts at the same hour so both count the same answers.
        hour = since.replace(minute=0, second=0, microsecond=0) if since else None
        base_ms, exact = median_ms(lambda: _exact(db, version_ids, hour), 3)
        err = max(abs(ours.p50_ms - exact["p50_ms"]) / exact["p50_ms"], abs(ours.p95_ms - exact["p95_ms"]) / exact["p95_ms"])
        out["periods"][period] = {
            "requests": ours.requests, "metrics_ms": round(ours_ms, 2), "exact_baseline_ms": round(base_ms, 1),
            "speedup": round(base_ms / ours_ms, 1), "p50_ms": round(ours.p50_ms, 1), "exact_p50_ms": round(exact["p50_ms"], 1),
            "p95_ms": round(ours.p95_ms, 1), "exact_p95_ms": round(exact["p95_ms"], 1),
            "max_percentile_error": round(err, 4), "requests_match": ours.requests == exact["requests"],
        }
    out["worst_metrics_ms"] = max(p["metrics_ms"] for p in out["periods"].values())
    out["goal_ms"] = GOAL_MS
    db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="also run on this PostgreSQL URL (schema modelbay_bench)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run(f"sqlite:///{tmp}/bench.db", "sqlite"))
    if args.postgres:
        from sqlalchemy import create_engine, text

        engine = create_engine(args.postgres)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS modelbay_bench CASCADE"))
            connection.execute(text("CREATE SCHEMA modelbay_bench"))
        sep = "&" if "?" in args.postgres else "?"
        try:
            results.append(run(f"{args.postgres}{sep}options=-csearch_path%3Dmodelbay_bench", "postgresql"))
        finally:
            with engine.begin() as connection:
                connection.execute(text("DROP SCHEMA IF EXISTS modelbay_bench CASCADE"))
            engine.dispose()
    for result in results:
        print(f"{result['backend']}: worst metrics query {result['worst_metrics_ms']} ms (goal {GOAL_MS} ms)",
              file=sys.stderr)
    print(json.dumps({"results": results, "worst_metrics_ms": max(r["worst_metrics_ms"] for r in results),
                      "goal_ms": GOAL_MS}))


if __name__ == "__main__":
    main()
