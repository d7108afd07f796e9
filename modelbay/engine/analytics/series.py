"""Time series from the rollups: requests, p50/p95 response time and the 👍 share per hour or per day, in SQL.

Nothing here reads answer events. Usage per bucket is `usage_hourly` summed by hour (or by UTC day); the
percentiles come from the latency histograms (`latency_hourly` by hour, `latency_daily` by day): SQL sums each
time bucket's histogram, adds running counts with a window per time bucket, and returns only the one or two
histogram buckets where a quantile is crossed, which are interpolated geometrically inside as
`Analytics.metrics` does. Satisfaction per time bucket is the 👍 share of the ratings given to answers of that
bucket, with its Wilson 95% interval. Times are UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from modelbay.engine.analytics.analytics import Rated, bucket_bounds
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import LatencyDaily, LatencyHourly, UsageHourly

__all__ = ["HOURLY_UP_TO", "QUANTILES", "Grain", "Point", "Series", "grain_for", "series"]

Grain = Literal["hour", "day"]
HOURLY_UP_TO = timedelta(hours=72)  # periods up to this long are drawn hour by hour; longer ones day by day
QUANTILES = (0.50, 0.95)


@dataclass(frozen=True)
class Point(Rated):
    """One time bucket of a series: its start (UTC) and what was answered and rated in it."""

    start: datetime
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    ups: int
    downs: int


@dataclass(frozen=True)
class Series:
    """A model's buckets over a period, oldest first; buckets with no answer and no rating are absent."""

    grain: Grain
    since: datetime | None  # the first bucket's start as asked (rounded down to the grain); None: all time
    points: tuple[Point, ...]

    @property
    def requests(self) -> int:
        """Answers over the whole series."""
        return sum(p.requests for p in self.points)


def grain_for(since: datetime | None, now: datetime | None = None) -> Grain:
    """Hours for periods up to `HOURLY_UP_TO`, days for longer ones and for all time."""
    if since is None:
        return "day"
    return "hour" if (now or datetime.now(timezone.utc)) - since <= HOURLY_UP_TO else "day"


def _floor(at: datetime, grain: Grain) -> datetime:
    at = at.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if grain == "day" else at


def _utc(value: Any) -> datetime:
    """A time bucket as SQL returned it (a datetime, or SQLite's text) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def series(db: Database, version_ids: Iterable[int], since: datetime | None, grain: Grain | None = None) -> Series:
    """Requests, failures, p50/p95 response time (ms) and 👍/👎 per hour or per day since `since` (None: all time),
    for the answers of these model versions together, computed in SQL from the rollups.

    `since` is rounded down to the start of its hour (or day); the grain defaults to `grain_for(since)`. Day buckets
    are UTC days and the current hour or day is included as far as it went.

    Raises:
        ValueError: an unknown grain.
    """
    grain = grain or grain_for(since)
    if grain not in ("hour", "day"):
        raise ValueError(f"grain must be hour or day (got {grain!r})")
    ids = list(version_ids)
    start = _floor(since, grain) if since is not None else None
    if not ids:
        return Series(grain, start, ())
    with db.session() as session:
        usage = _usage(session, ids, start, grain, db.url.startswith("sqlite"))
        percentiles = _percentiles(session, ids, start, grain)
    points = [Point(t, requests, failures, *percentiles.get(t, (None, None)), ups, downs)
              for t, (requests, failures, ups, downs) in sorted(usage.items())]
    return Series(grain, start, tuple(points))


def _usage(session: Session, ids: list[int], start: datetime | None, grain: Grain,
           on_sqlite: bool) -> dict[datetime, tuple[int, int, int, int]]:
    """(requests, failures, ups, downs) per time bucket, summed in SQL from `usage_hourly`."""
    u = UsageHourly
    if grain == "hour":
        when: Any = u.hour
    elif on_sqlite:
        when = func.strftime("%Y-%m-%d 00:00:00", u.hour)  # SQLite keeps the UTC time as text
    else:
        when = func.date_trunc("day", func.timezone("UTC", u.hour))  # the UTC day, whatever the session's zone
    bucket = when.label("t")
    rows = session.execute(
        select(bucket, func.sum(u.requests), func.sum(u.failures), func.sum(u.ups), func.sum(u.downs))
        .where(u.model_version_id.in_(ids), *([u.hour >= start] if start is not None else []))
        .group_by(bucket)
    )
    # PostgreSQL sums BIGINT columns as NUMERIC: plain ints from here on.
    return {_utc(t): (int(r or 0), int(f or 0), int(up or 0), int(down or 0)) for t, r, f, up, down in rows}


def _percentiles(session: Session, ids: list[int], start: datetime | None,
                 grain: Grain) -> dict[datetime, tuple[float | None, float | None]]:
    """p50 and p95 (ms) per time bucket: each bucket's histogram summed and run through in SQL; only the histogram
    buckets where a quantile is crossed come back, and are interpolated geometrically inside."""
    table, column = (LatencyHourly, LatencyHourly.hour) if grain == "hour" else (LatencyDaily, LatencyDaily.day)
    summed = (select(column.label("t"), table.bucket.label("bucket"), func.sum(table.count).label("n"))
              .where(table.model_version_id.in_(ids), *([column >= start] if start is not None else []))
              .group_by(column, table.bucket).subquery())
    running = select(
        summed.c.t, summed.c.bucket, summed.c.n,
        func.sum(summed.c.n).over(partition_by=summed.c.t, order_by=summed.c.bucket).label("upto"),
        func.sum(summed.c.n).over(partition_by=summed.c.t).label("total"),
    ).subquery()
    crossed = or_(*(and_(running.c.upto - running.c.n < q * running.c.total, running.c.upto >= q * running.c.total)
                    for q in QUANTILES))
    found: dict[datetime, list[float | None]] = {}
    for t, bucket, n, upto, total in session.execute(select(running).where(crossed)):
        n, upto, total = int(n), int(upto), int(total)
        values = found.setdefault(_utc(t), [None] * len(QUANTILES))
        for i, q in enumerate(QUANTILES):
            if upto - n < q * total <= upto:
                low, high = bucket_bounds(int(bucket))
                inside = (q * total - (upto - n)) / n
                values[i] = low * (high / low) ** min(max(inside, 0.0), 1.0)
    return {t: (v[0], v[1]) for t, v in found.items()}
