"""Chat tables: sessions, messages, feedback and privacy opt-outs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from modelbay.engine.db.schema.base import Base, utcnow

__all__ = ["ChatSession", "Feedback", "Message", "PrivacyOptout"]


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
    # The experiment variant this chat was assigned to (its answers and ratings count for the variant).
    variant_id: Mapped[int | None] = mapped_column(ForeignKey("experiment_variants.id", ondelete="SET NULL"))
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




class PrivacyOptout(Base):
    """A person who asked that their use of ModelBay is not measured."""

    __tablename__ = "privacy_optouts"

    user_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
