"""What chat hands to other layers: places, sessions, streamed deltas and notices, answers and ratings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from modelbay.engine.analytics.analytics import tokens_per_second

__all__ = [
    "AnswerRecord", "Answered", "DOWN_REASONS", "Delta", "Notice", "Place", "RatingRecord", "SessionRecord",
    "UP_REASONS",
]


UP_REASONS = ("helpful", "accurate", "followed_instructions", "creative")
DOWN_REASONS = ("wrong", "didnt_follow", "refused", "too_verbose", "other")


@dataclass(frozen=True)
class Place:
    """Where a chat lives: a platform, a channel, and a thread in it (if the platform has threads)."""

    platform: str
    channel_id: str
    thread_id: str | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A chat session as the bot sees it."""

    id: int
    place: Place
    user_key: str
    model_name: str
    model_display_name: str
    model_version_id: int
    system_prompt: str | None
    created_at: datetime
    closed: bool = False
    notices: tuple[str, ...] = ()  # what the person should know as the chat opens (set by Chats.open)
    # experiments: the variant this chat was assigned to, and that variant's serving parameters (None: the defaults)
    variant_id: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    # experiments: the running experiment this chat is a variant of; while set, replies never name the model
    experiment: str | None = None


@dataclass(frozen=True)
class Delta:
    """A new piece of the answer."""

    text: str


@dataclass(frozen=True)
class Notice:
    """Something the asker should know about this answer (history trimmed, input cut)."""

    text: str


@dataclass(frozen=True)
class AnswerRecord:
    """A finished answer: its message id (for ratings), text, how it ended and its measurements."""

    message_id: int
    session_id: int
    text: str
    status: str  # ok | partial | failed | canceled
    note: str | None
    backend: str
    input_tokens: int | None
    output_tokens: int | None
    ttft_ms: float | None
    total_ms: float
    notices: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed of this answer."""
        return tokens_per_second(self.output_tokens, self.total_ms)


@dataclass(frozen=True)
class Answered:
    """The last event of an answer."""

    answer: AnswerRecord


ChatEvent = Delta | Notice | Answered


@dataclass(frozen=True)
class RatingRecord:
    """A stored rating."""

    message_id: int
    up: bool
    reason: str | None
    comment: str | None
    changed: bool  # it replaced an earlier rating by the same person
