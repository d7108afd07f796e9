"""Chat: sessions in a thread, answers streamed in order by the right backend, stored turns and ratings."""

from modelbay.engine.chat.chats import Chats
from modelbay.engine.chat.records import (
    AnswerRecord,
    Answered,
    DOWN_REASONS,
    Delta,
    Notice,
    Place,
    RatingRecord,
    SessionRecord,
    UP_REASONS,
)

__all__ = [
    "Answered", "AnswerRecord", "Chats", "Delta", "DOWN_REASONS", "Notice", "Place", "RatingRecord", "SessionRecord",
    "UP_REASONS",
]
