"""Database tables (SQLAlchemy 2.x ORM); rows stay inside engine/, other layers get plain records."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AnalyticsEvent",
    "Base",
    "Category",
    "ChatSession",
    "Feedback",
    "InstallState",
    "JobRow",
    "JobStatus",
    "Message",
    "LatencyDaily",
    "LatencyHourly",
    "Model",
    "ModelVersion",
    "PrivacyOptout",
    "Server",
    "ServerState",
    "UsageHourly",
]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class Category(str, enum.Enum):
    """What a model is for, as the catalog groups it."""

    CHAT = "chat"
    CODE = "code"
    CREATIVE = "creative"
    ANALYSIS = "analysis"
    EMBEDDING = "embedding"
    DOMAIN = "domain"


class InstallState(str, enum.Enum):
    """Where a model version is on its way to (or from) the model store."""

    AVAILABLE = "available"
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLED = "installed"
    FAILED = "failed"
    UNINSTALLED = "uninstalled"


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
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native PG enum) so adding a value needs no type migration.
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class ServerState(str, enum.Enum):
    """Where a model server is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DOWN = "down"  # it crashed or its worker was lost

    @property
    def live(self) -> bool:
        """Whether the server may answer (or soon will)."""
        return self in (ServerState.STARTING, ServerState.RUNNING, ServerState.STOPPING)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


class Model(Base):
    """A model people can find: one catalog or hub entry, with any number of versions."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32), default="catalog")
    repo_id: Mapped[str | None] = mapped_column(String(200), index=True)
    category: Mapped[Category] = mapped_column(_enum(Category), index=True)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(String(128))
    license: Mapped[str | None] = mapped_column(String(64))
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    context_length: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(32))
    dtype: Mapped[str | None] = mapped_column(String(32))
    pipeline_tag: Mapped[str | None] = mapped_column(String(64))
    gated: Mapped[bool] = mapped_column(Boolean, default=False)
    trust_remote_code: Mapped[bool] = mapped_column(Boolean, default=False)
    languages: Mapped[list[Any]] = mapped_column(default=list)
    requirements: Mapped[dict[str, Any]] = mapped_column(default=dict)
    performance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    downloads: Mapped[int] = mapped_column(BigInteger, default=0, index=True)  # the default order of searches
    likes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Derived from the columns above on every registry write, so searches filter in plain SQL on both backends.
    # Server defaults let migration 0002 add them NOT NULL on SQLite without rebuilding the table.
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")  # lowercased name, tags, text
    tags_text: Mapped[str] = mapped_column(Text, default=",", server_default=",")  # ",chat,code,": LIKE '%,code,%'
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", cascade="all, delete-orphan", order_by="ModelVersion.id"
    )


class ModelVersion(Base):
    """One revision of a model, installed or not; fine-tuned and optimized variants point at a parent."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "revision", name="uq_model_versions_model_revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    revision: Mapped[str] = mapped_column(String(128), default="main")
    revision_sha: Mapped[str | None] = mapped_column(String(64))
    install_state: Mapped[InstallState] = mapped_column(_enum(InstallState), default=InstallState.AVAILABLE)
    local_path: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(32))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    files: Mapped[list[Any]] = mapped_column(default=list)  # [{"path", "size", "sha256"}]
    parent_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), index=True
    )
    lineage: Mapped[str | None] = mapped_column(String(32))  # finetune | quantize | prune | onnx
    lineage_params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    installed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")
    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])


class JobRow(Base):
    """A long operation (install, fine-tune, optimize, serve) as users see it, beside its RQ job."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_dedup_key", "kind", "dedup_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.QUEUED, index=True)
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


class ChatSession(Base):
    """A conversation with one model version, bound to a platform thread or channel."""

    __tablename__ = "chat_sessions"
    __table_args__ = (Index("ix_chat_sessions_place", "platform", "channel_id", "thread_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[str | None] = mapped_column(String(64))
    user_key: Mapped[str] = mapped_column(String(128), index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()

    messages: Mapped[list[Message]] = relationship(cascade="all, delete-orphan", order_by="Message.id")


class Message(Base):
    """One turn of a chat; its text is kept only when the operator stores transcripts."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_sessions.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # system | user | assistant
    user_key: Mapped[str | None] = mapped_column(String(128), index=True)  # who asked (answers: the asker)
    content: Mapped[str | None] = mapped_column(Text)
    tokens: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")  # ok | partial | failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A 👍/👎 rating of one answer, with an optional reason and comment."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("message_id", "user_key", name="uq_feedback_message_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    user_key: Mapped[str] = mapped_column(String(128))
    rating: Mapped[int] = mapped_column(Integer)  # +1 or -1
    reason: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


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


class PrivacyOptout(Base):
    """A person who asked that their use of ModelBay is not measured."""

    __tablename__ = "privacy_optouts"

    user_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Server(Base):
    """A model server (vLLM's OpenAI-compatible server) started by a serve job on a gpu worker."""

    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[ServerState] = mapped_column(_enum(ServerState), default=ServerState.STARTING, index=True)
    engine: Mapped[str] = mapped_column(String(32), default="vllm")
    endpoint: Mapped[str | None] = mapped_column(String(256))  # base URL, e.g. http://gpu1:8101/v1
    served_name: Mapped[str] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    api_key: Mapped[str | None] = mapped_column(String(128))  # the bearer token this server requires
    adapters: Mapped[list[Any]] = mapped_column(default=list)  # LoRA adapter names loaded at runtime
    error: Mapped[str | None] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
