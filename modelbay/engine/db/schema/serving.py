"""The servers table: vLLM servers started for installed models."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from modelbay.engine.db.schema.base import Base, enum_column, utcnow

__all__ = ["Server", "ServerState"]


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




class Server(Base):
    """A model server (vLLM's OpenAI-compatible server) started by a serve job on a gpu worker."""

    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[ServerState] = mapped_column(enum_column(ServerState), default=ServerState.STARTING, index=True)
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
