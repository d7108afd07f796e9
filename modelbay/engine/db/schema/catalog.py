"""Catalog tables: models and their versions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from modelbay.engine.db.schema.base import Base, enum_column, utcnow

__all__ = ["Category", "InstallState", "Model", "ModelVersion"]


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




class Model(Base):
    """A model people can find: one catalog or hub entry, with any number of versions."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32), default="catalog")
    repo_id: Mapped[str | None] = mapped_column(String(200), index=True)
    category: Mapped[Category] = mapped_column(enum_column(Category), index=True)
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
    install_state: Mapped[InstallState] = mapped_column(enum_column(InstallState), default=InstallState.AVAILABLE)
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
