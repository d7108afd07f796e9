"""Chat turns for adapters: a message in a chat place becomes a stream of answer events, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from modelbay.bot.context import Context
from modelbay.bot.reply import Button, Reply
from modelbay.engine.chat import AnswerRecord, ChatEvent
from modelbay.engine.errors import NoChatHere, NotAllowed

__all__ = ["answer_footer", "answer_reply", "converse", "in_thread"]

T = TypeVar("T")
_END = object()


async def in_thread(make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run a blocking generator on a thread and yield its items on the event loop as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def pump() -> None:
        try:
            for item in make():
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the awaiting side
            loop.call_soon_threadsafe(queue.put_nowait, _Raised(exc))
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    done = loop.run_in_executor(None, pump)  # the loop's pool: no thread start on the way to the first token
    while (item := await queue.get()) is not _END:
        if isinstance(item, _Raised):
            raise item.exc
        yield item  # type: ignore[misc]
    await done


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def converse(ctx: Context, text: str) -> AsyncIterator[ChatEvent]:
    """Answer a plain message sent where a chat is open; errors before the answer starts are raised."""
    if not ctx.has_role("user"):
        raise NotAllowed("chatting with models", ctx.role, "user")
    chats, place = ctx.runtime.chats, ctx.where()

    def answer() -> Iterator[ChatEvent]:
        session = chats.current(place)  # on the same thread as the answer: one hand-off before the first token
        if session is None:
            raise NoChatHere()
        return chats.answer(session, ctx.actor.key, text)

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
    if answer.note:
        text = f"{text}\n\n_{answer.note}_" if text else answer.note
    tone = "info" if answer.status == "ok" else "warning"
    buttons = [Button("👍", f"/rate up message:{answer.message_id}", "success"),
               Button("👎", f"/rate down message:{answer.message_id}", "danger")]
    return Reply(text=text, tone=tone, footer=answer_footer(answer), buttons=buttons)
