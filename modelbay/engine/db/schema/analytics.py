"""Analytics tables: answer events and hourly/daily roll-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelbay.engine.db.schema.base import Base, utcnow

__all__ = ["AnalyticsEvent", "LatencyDaily", "LatencyHourly", "UsageHourly"]


class AnalyticsEvent(Base):
    """One measured thing that happened: an answer's timings and tokens, an install, a rating."""

    __tablename__ = "analytics_events"
    __table_args__ = (Index("ix_analytics_events_version_time", "model_version_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    user_key: Mapped[str | None] = mapped_column(String(128), index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("chat_sessions.id", ondelete="SET NULL"))
    backend: Mapped[str | None] = mapped_column(String(32))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    total_ms: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    latency_bucket: Mapped[int | None] = mapped_column(Integer)  # analytics.latency_bucket(total_ms)
    message_id: Mapped[int | None] = mapped_column(Integer)  # the answer, while it exists (no FK: erasable)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageHourly(Base):
    """Answers of one model version in one hour, summed: what /analytics reads instead of every event."""

    __tablename__ = "usage_hourly"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    ttft_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_count: Mapped[int] = mapped_column(BigInteger, default=0)  # answers with a first token (ttft_ms_sum's)
    total_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    tps_sum: Mapped[float] = mapped_column(Float, default=0.0)  # sum of per-answer tokens/s
    tps_count: Mapped[int] = mapped_column(BigInteger, default=0)
    ups: Mapped[int] = mapped_column(BigInteger, default=0)
    downs: Mapped[int] = mapped_column(BigInteger, default=0)


class LatencyHourly(Base):
    """A response-time histogram per model version and hour (log-spaced buckets), for p50/p95 in SQL."""

    __tablename__ = "latency_hourly"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class LatencyDaily(Base):
    """The same histogram per day: long periods read whole days here and only their ragged ends by the hour."""

    __tablename__ = "latency_daily"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[datetime] = mapped_column(primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
