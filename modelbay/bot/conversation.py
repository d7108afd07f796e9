"""Chat turns for adapters: a message in a chat place becomes a stream of answer events, off the event loop."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

from modelbay.bot.bridge import in_thread
from modelbay.bot.commands.chat import RATE_DOWN
from modelbay.bot.context import Context
from modelbay.bot.reply import Button, Reply
from modelbay.bot.text import Part, fence_after
from modelbay.engine.chat.records import Answered, AnswerRecord, ChatEvent, Delta, Notice
from modelbay.engine.errors import NoChatHere, NotAllowed

__all__ = ["AnswerSink", "answer_footer", "answer_reply", "converse", "relay"]


class AnswerSink(Protocol):
    """Where a platform shows an answer as it is written (messages it edits)."""

    notices: list[str]

    async def add(self, piece: str) -> None:
        """Show a new piece of the answer."""

    async def finish(self, reply: Reply) -> None:
        """Show the finished answer (its text, note, facts and rating buttons)."""

async def converse(ctx: Context, text: str, stop: threading.Event | None = None) -> AsyncIterator[ChatEvent]:
    """Answer a plain message sent where a chat is open; errors before the answer starts are raised.

    Setting `stop` ends the answer early, keeping what arrived (`Chats.answer`).
    """
    if not ctx.has_role("user"):
        raise NotAllowed("chatting with models", ctx.role, "user")
    chats, place = ctx.runtime.chats, ctx.where()

    def answer() -> Iterator[ChatEvent]:
        session = chats.current(place)  # on the same thread as the answer: one hand-off before the first token
        if session is None:
            raise NoChatHere()
        return chats.answer(session, ctx.actor.key, text, stop)

    async for event in in_thread(answer):
        yield event


def answer_footer(answer: AnswerRecord) -> str:
    """One line of facts about an answer: its id, backend, tokens and timings."""
    parts = [f"#{answer.message_id}", answer.backend]
    if answer.output_tokens is not None:
        parts.append(f"{answer.output_tokens} tokens")
    if answer.ttft_ms is not None:
        parts.append(f"first token {answer.ttft_ms:.0f} ms")
    if answer.tokens_per_s:
        parts.append(f"{answer.tokens_per_s:.1f} tokens/s")
    return " · ".join(parts)


def answer_reply(answer: AnswerRecord) -> Reply:
    """A finished answer as a Reply: its text, any note, the facts and 👍/👎 buttons."""
    text = answer.text
    if answer.note:  # after the answer's code block, if it stopped inside one
        text = f"{Part(text, close=fence_after(text))}\n\n_{answer.note}_" if text else answer.note
    tone = "info" if answer.status == "ok" else "warning"
    buttons = [Button("👍", f"/rate up message:{answer.message_id}", "success"),
               RATE_DOWN.button("👎", answer.message_id, "danger")]
    return Reply(text=text, tone=tone, footer=answer_footer(answer), buttons=buttons)


async def relay(ctx: Context, text: str, sink: AnswerSink) -> None:
    """Answer a message into a platform's sink; errors before the answer starts are raised."""
    async for event in converse(ctx, text):
        if isinstance(event, Notice):
            sink.notices.append(event.text)
        elif isinstance(event, Delta):
            await sink.add(event.text)
        elif isinstance(event, Answered):
            await sink.finish(answer_reply(event.answer))
