"""Analytics: every answer is an event; hourly rollups and latency histograms make per-model metrics cheap.

An answer writes its raw event and adds itself to two rollups in the same transaction: `usage_hourly`
(counts and sums per model version and hour) and `latency_hourly` (a histogram of response times in
log-spaced buckets 5% wide, kept per hour and per day). `/analytics model` then reads rollup rows instead of a
million events: sums in SQL, the histogram summed per bucket with running counts in SQL (percentiles exact to
the bucket, interpolated inside it), satisfaction as the 👍 share with a Wilson 95% interval.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from sqlalchemy import func, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import AnalyticsEvent, LatencyDaily, LatencyHourly, UsageHourly
from modelbay.engine.db.schema.chat import PrivacyOptout

__all__ = [
    "BUCKET_RATIO",
    "AnswerEvent",
    "Analytics",
    "Interval",
    "Metrics",
    "Rated",
    "bucket_bounds",
    "latency_bucket",
    "parse_period",
    "tokens_per_second",
    "wilson",
]

BUCKET_RATIO = 1.05  # each latency bucket is 5% wider than the one before: p50/p95 within about 2.5%
_LOG_RATIO = math.log(BUCKET_RATIO)
PERIODS = ("1h", "24h", "7d", "30d", "90d", "all")
_PERIOD = re.compile(r"(\d{1,4})([hdw])")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
Z95 = 1.959963984540054


class Interval(NamedTuple):
    """A range of values, low to high."""

    low: float
    high: float


def latency_bucket(ms: float) -> int:
    """The histogram bucket of a response time: bucket b holds [1.05^b, 1.05^(b+1)) ms; under 1 ms is 0."""
    return max(0, math.floor(math.log(max(ms, 1.0)) / _LOG_RATIO))


def bucket_bounds(bucket: int) -> Interval:
    """The response times (ms) a bucket covers."""
    return Interval(BUCKET_RATIO ** bucket, BUCKET_RATIO ** (bucket + 1))


def parse_period(period: str, now: datetime | None = None) -> datetime | None:
    """Return when a period like 24h, 7d, 2w starts (None for all)."""
    text = period.strip().lower()
    if text == "all":
        return None
    match = _PERIOD.fullmatch(text)
    if not match:
        raise ValueError(f"period must be like 24h, 7d, 2w or all (got {period!r})")
    return (now or datetime.now(timezone.utc)) - int(match.group(1)) * _UNIT[match.group(2)]


def wilson(ups: int, n: int, z: float = Z95) -> Interval:
    """The Wilson score interval of a proportion ups/n (95% by default)."""
    if n == 0:
        return Interval(0.0, 1.0)
    p = ups / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def tokens_per_second(output_tokens: int | None, total_ms: float) -> float | None:
    """Output tokens over the whole answer time (what the asker experiences), or None without tokens."""
    if not output_tokens or total_ms <= 0:
        return None
    return output_tokens / (total_ms / 1000)


def _hour(at: datetime) -> datetime:
    return at.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> datetime:
    return _hour(at).replace(hour=0)


_USAGE_SUMS = ("requests", "failures", "input_tokens", "output_tokens", "ttft_ms_sum", "ttft_count", "total_ms_sum",
               "tps_sum", "tps_count", "ups", "downs")
_INTEGER_SUMS = frozenset({"requests", "failures", "input_tokens", "output_tokens", "ttft_count", "tps_count", "ups",
                           "downs"})


@dataclass(frozen=True)
class AnswerEvent:
    """One answer's measurements."""

    model_version_id: int
    user_key: str | None
    session_id: int | None
    message_id: int | None
    backend: str
    input_tokens: int | None
    output_tokens: int | None
    ttft_ms: float | None
    total_ms: float
    failed: bool = False
    at: datetime | None = None
    details: dict[str, Any] | None = None  # more about the event, kept with it (a tracked event's source, session)
    # Whether ModelBay timed this answer itself. False for answers reported from outside (trackEvent): their
    # requests, response times and tokens count, but they have no tokens/s, so a caller cannot set the speed
    # shown as "measured here" (search's speed:, /models info, recommend).
    measured: bool = True

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed of this answer; None for an answer not measured here (`measured`)."""
        return tokens_per_second(self.output_tokens, self.total_ms) if self.measured else None


class Rated:
    """Figures that count 👍 (`ups`) and 👎 (`downs`): the ratings, the 👍 share and its Wilson interval."""

    ups: int
    downs: int

    @property
    def ratings(self) -> int:
        """How many answers were rated."""
        return self.ups + self.downs

    @property
    def satisfaction(self) -> float | None:
        """The 👍 share of ratings, or None without ratings."""
        return self.ups / self.ratings if self.ratings else None

    @property
    def satisfaction_interval(self) -> Interval | None:
        """The Wilson 95% interval of the 👍 share, or None without ratings."""
        return wilson(self.ups, self.ratings) if self.ratings else None


@dataclass(frozen=True)
class Metrics(Rated):
    """A model's numbers over a period."""

    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    mean_ttft_ms: float | None
    tokens_per_s: float | None
    output_tokens: int
    ups: int
    downs: int


class Analytics:
    """Records answers and ratings, and computes per-model metrics from the rollups."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._dialect = sqlite if db.url.startswith("sqlite") else postgresql

    # -- privacy -------------------------------------------------------------------------------------------
    def opted_out(self, user_key: str, session: Session | None = None) -> bool:
        """Whether a person asked not to be measured (read in the caller's transaction when given one)."""
        if session is not None:
            return session.get(PrivacyOptout, user_key) is not None
        with self._db.session() as own:
            return own.get(PrivacyOptout, user_key) is not None

    def set_opt_out(self, user_key: str, out: bool) -> None:
        """Stop (or resume) measuring a person."""
        with self._db.session() as session:
            row = session.get(PrivacyOptout, user_key)
            if out and row is None:
                session.add(PrivacyOptout(user_key=user_key))
            elif not out and row is not None:
                session.delete(row)

    # -- write ---------------------------------------------------------------------------------------------
    def record_answers(self, events: Sequence[AnswerEvent], session: Session | None = None) -> None:
        """Store answer events and add them to the rollups (in the caller's transaction when given one)."""
        if session is None:
            with self._db.session() as own:
                self._record(own, events)
        else:
            self._record(session, events)

    def _record(self, session: Session, events: Sequence[AnswerEvent]) -> None:
        now = datetime.now(timezone.utc)
        rows: list[dict[str, Any]] = []
        usage: dict[tuple[int, datetime], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        hourly: dict[tuple[int, datetime, int], int] = defaultdict(int)
        daily: dict[tuple[int, datetime, int], int] = defaultdict(int)
        for e in events:
            at = e.at or now
            bucket = latency_bucket(e.total_ms)
            tps = e.tokens_per_s
            rows.append(dict(
                event_type="answer", model_version_id=e.model_version_id, user_key=e.user_key,
                session_id=e.session_id, message_id=e.message_id, backend=e.backend, input_tokens=e.input_tokens,
                output_tokens=e.output_tokens, ttft_ms=e.ttft_ms, total_ms=e.total_ms, tokens_per_s=tps,
                latency_bucket=bucket, details={**(e.details or {}), **({"failed": True} if e.failed else {})},
                created_at=at,
            ))
            hour = _hour(at)
            sums = usage[(e.model_version_id, hour)]
            sums["requests"] += 1
            sums["failures"] += int(e.failed)
            sums["input_tokens"] += e.input_tokens or 0
            sums["output_tokens"] += e.output_tokens or 0
            if e.ttft_ms is not None:  # an answer that produced no token has no time to first token
                sums["ttft_ms_sum"] += e.ttft_ms
                sums["ttft_count"] += 1
            sums["total_ms_sum"] += e.total_ms
            if tps is not None:
                sums["tps_sum"] += tps
                sums["tps_count"] += 1
            hourly[(e.model_version_id, hour, bucket)] += 1
            daily[(e.model_version_id, _day(at), bucket)] += 1
        if rows:
            session.execute(AnalyticsEvent.__table__.insert(), rows)
        self._add_usage(session, [{"model_version_id": v, "hour": h, **sums} for (v, h), sums in usage.items()])
        for table, when, counts in ((LatencyHourly.__table__, "hour", hourly), (LatencyDaily.__table__, "day", daily)):
            if counts:
                stmt = self._dialect.insert(table)
                session.execute(
                    stmt.on_conflict_do_update(index_elements=["model_version_id", when, "bucket"],
                                               set_={"count": table.c.count + stmt.excluded["count"]}),
                    [{"model_version_id": v, when: t, "bucket": b, "count": n} for (v, t, b), n in counts.items()],
                )

    def _add_usage(self, session: Session, items: list[dict[str, Any]]) -> None:
        """Add sums to hourly usage rows, creating the rows that do not exist yet (one statement for all)."""
        if not items:
            return
        table = UsageHourly.__table__
        stmt = self._dialect.insert(table)
        rows = [{"model_version_id": item["model_version_id"], "hour": item["hour"],
                 **{c: (int(item.get(c, 0)) if c in _INTEGER_SUMS else float(item.get(c, 0.0))) for c in _USAGE_SUMS}}
                for item in items]
        session.execute(stmt.on_conflict_do_update(
            index_elements=["model_version_id", "hour"], set_={c: table.c[c] + stmt.excluded[c] for c in _USAGE_SUMS},
        ), rows)

    def add_rating(self, session: Session, version_id: int, answered_at: datetime, ups: int, downs: int) -> None:
        """Count a rating (or a change of one) against the hour its answer was given."""
        self._add_usage(session, [{"model_version_id": version_id, "hour": _hour(answered_at), "ups": ups,
                                   "downs": downs}])

    # -- read ----------------------------------------------------------------------------------------------
    def metrics(self, version_ids: Iterable[int], since: datetime | None) -> Metrics:
        """Requests, p50/p95 response time, mean time to first token, tokens/s and 👍 counts, in SQL.

        Periods count whole hours: `since` is rounded down to the start of its hour.
        """
        ids = list(version_ids)
        start = _hour(since) if since is not None else None
        u = UsageHourly
        with self._db.session() as session:
            totals = session.execute(select(
                func.coalesce(func.sum(u.requests), 0), func.coalesce(func.sum(u.failures), 0),
                func.sum(u.ttft_ms_sum), func.coalesce(func.sum(u.output_tokens), 0), func.sum(u.tps_sum),
                func.coalesce(func.sum(u.tps_count), 0), func.coalesce(func.sum(u.ups), 0),
                func.coalesce(func.sum(u.downs), 0), func.coalesce(func.sum(u.ttft_count), 0),
            ).where(u.model_version_id.in_(ids), *([u.hour >= start] if start else []))).one()
            # PostgreSQL sums BIGINT columns as NUMERIC: plain numbers from here on.
            requests, failures, output, tps_count, ups, downs, ttft_count = (int(totals[i])
                                                                             for i in (0, 1, 3, 5, 6, 7, 8))
            ttft_sum, tps_sum = (float(totals[i]) if totals[i] is not None else None for i in (2, 4))
            p50 = p95 = None
            if requests:
                p50, p95 = _percentiles(self._histogram(session, ids, start), (0.50, 0.95))
        return Metrics(
            requests=requests, failures=failures, p50_ms=p50, p95_ms=p95,
            mean_ttft_ms=ttft_sum / ttft_count if ttft_count and ttft_sum is not None else None,
            tokens_per_s=tps_sum / tps_count if tps_count and tps_sum is not None else None, output_tokens=output,
            ups=ups, downs=downs,
        )

    @staticmethod
    def _histogram(session: Session, ids: list[int], start: datetime | None) -> list[tuple[int, int, int, int]]:
        """(bucket, count, running count, total) of response times since start, summed in SQL.

        Whole days come from the daily histogram; the ragged hours before the first whole day and after the
        last come from the hourly one, so a 30-day period reads about 30 daily rows per bucket, not 720.
        """
        h, d = LatencyHourly, LatencyDaily
        hours = select(h.bucket.label("bucket"), h.count.label("n")).where(h.model_version_id.in_(ids))
        days = select(d.bucket.label("bucket"), d.count.label("n")).where(d.model_version_id.in_(ids))
        now = datetime.now(timezone.utc)
        if start is None:
            parts = [days]
        else:
            first_day, today = _day(start) + (timedelta(days=1) if start != _day(start) else timedelta(0)), _day(now)
            if first_day >= today:
                parts = [hours.where(h.hour >= start)]
            else:
                parts = [hours.where(h.hour >= start, h.hour < first_day), days.where(d.day >= first_day, d.day < today),
                         hours.where(h.hour >= today)]
        rows = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        per_bucket = select(rows.c.bucket, func.sum(rows.c.n).label("n")).group_by(rows.c.bucket).subquery()
        return [tuple(int(x) for x in row) for row in session.execute(select(
            per_bucket.c.bucket, per_bucket.c.n,
            func.sum(per_bucket.c.n).over(order_by=per_bucket.c.bucket), func.sum(per_bucket.c.n).over(),
        ).order_by(per_bucket.c.bucket))]


def _percentiles(histogram: list[tuple[int, int, int, int]], quantiles: tuple[float, ...]) -> list[float | None]:
    """Each quantile: the first bucket whose running count reaches it, interpolated geometrically inside."""
    found: list[float | None] = []
    for q in quantiles:
        value = None
        for bucket, n, upto, total in histogram:
            if upto >= q * total:
                low, high = bucket_bounds(bucket)
                inside = (q * total - (upto - n)) / n
                value = low * (high / low) ** min(max(inside, 0.0), 1.0)
                break
        found.append(value)
    return found
