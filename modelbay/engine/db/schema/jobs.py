"""The jobs table: the record users see of every background job."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from modelbay.engine.db.schema.base import Base, enum_column, utcnow

__all__ = ["JobRow", "JobStatus"]


class JobStatus(str, enum.Enum):
    """A job's lifecycle as ModelBay reports it (RQ's own states map onto these)."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def active(self) -> bool:
        """Whether the job may still run."""
        return self in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.RETRYING)


# Stable constraint names so Alembic migrations read the same on SQLite and PostgreSQL.


class JobRow(Base):
    """A long operation (install, fine-tune, optimize, serve) as users see it, beside its RQ job."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_dedup_key", "kind", "dedup_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(enum_column(JobStatus), default=JobStatus.QUEUED, index=True)
    dedup_key: Mapped[str | None] = mapped_column(String(256))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    requester: Mapped[str] = mapped_column(String(128), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
