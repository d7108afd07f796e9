"""A streamed answer, for every chat platform: one message per part of the answer, each edited as it grows.

The answer is cut into parts with `split_parts` (every character in exactly one part, code blocks closed and
reopened at each cut), within the platform's limit for one message. A part that is complete is never cut again:
its message is settled with its final text and the next part gets a new message, so nothing already shown moves.
The finished answer's last part carries the reply's footer, notices and buttons. A platform supplies the small
`AnswerSurface`: how to post a message, how to draw a part, and how to draw the final part.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from modelbay.bot.live import LiveMessage
from modelbay.bot.reply import Reply
from modelbay.bot.text import Fence, Part, split_parts

__all__ = ["CURSOR", "AnswerSurface", "StreamedAnswer", "with_cursor"]

T = TypeVar("T")
CURSOR = "▍"  # shown at the end of an answer still being written


class AnswerSurface(Protocol[T]):
    """What a platform provides to show an answer: its limit per message, and how to post and draw parts."""

    limit: int  # the most a drawn part may weigh (room for the cursor already taken off)

    def weigh(self, text: str) -> int:
        """What a text costs once sent (its length, or more where the platform escapes characters)."""

    async def post(self, shown: T) -> LiveMessage[T]:
        """Post a new message showing this, to be edited in place."""

    def draw(self, part: Part, *, writing: bool) -> T:
        """A part of the answer as the platform shows it (with a cursor while still being written)."""

    def draw_final(self, part: Part, reply: Reply, notices: list[str]) -> T:
        """The answer's last part with the reply's footer and buttons and the notices."""


def with_cursor(text: str) -> str:
    """Text with the writing cursor after it (on a line of its own after a closing code fence)."""
    return f"{text}\n{CURSOR}" if text.endswith(("```", "~~~")) else f"{text} {CURSOR}"


class StreamedAnswer(Generic[T]):
    """One answer streaming into a chat (the `AnswerSink` of `bot.conversation.relay`)."""

    def __init__(self, surface: AnswerSurface[T], first: LiveMessage[T]) -> None:
        self.surface = surface
        self.messages = [first]
        self.notices: list[str] = []
        self.text = ""
        self._done = 0  # characters of text in settled parts (all messages but the last)
        self._fence: Fence | None = None  # the code block open where the last message's part starts

    def _parts(self, text: str) -> list[Part]:
        return split_parts(text, self.surface.limit, self.surface.weigh, fence=self._fence)

    async def add(self, piece: str) -> None:
        """Show a new piece of the answer: the last message grows; a full one is settled and the next posted."""
        self.text += piece
        parts = self._parts(self.text[self._done:])
        for part, following in zip(parts, parts[1:], strict=False):
            await self.messages[-1].settle(self.surface.draw(part, writing=False))
            self._done += len(part.text)
            self._fence = part.close
            self.messages.append(await self.surface.post(self.surface.draw(following, writing=True)))
        self.messages[-1].show(self.surface.draw(parts[-1], writing=True))

    async def finish(self, reply: Reply) -> None:
        """Show the finished answer: every part settled in its message, the last with footer, notices and buttons."""
        text = reply.text
        first = len(self.messages) - 1
        if text.startswith(self.text[:self._done]):
            parts = self._parts(text[self._done:])
        else:  # not what was streamed (never expected): draw it all again from the first message
            first, self._fence = 0, None
            parts = self._parts(text)
        for i, part in enumerate(parts, start=first):
            last = i == first + len(parts) - 1
            shown = self.surface.draw_final(part, reply, self.notices) if last else self.surface.draw(part,
                                                                                                     writing=False)
            if i < len(self.messages):
                await self.messages[i].settle(shown)
            else:
                self.messages.append(await self.surface.post(shown))
        for extra in self.messages[first + len(parts):]:
            await extra.settle(self.surface.draw(Part(""), writing=False))
