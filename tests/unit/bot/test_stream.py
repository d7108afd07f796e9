"""bot/stream.py: a streamed answer shows all of itself across messages and never rewrites a full message."""

from __future__ import annotations

import asyncio
import random

from modelbay.bot.live import LiveMessage
from modelbay.bot.reply import Reply
from modelbay.bot.stream import StreamedAnswer
from modelbay.bot.text import Part
from tests.support.answers import long_answer, untile


class _Recorder:
    """An AnswerSurface that keeps every version of every message it showed."""

    limit = 1000

    def __init__(self) -> None:
        self.versions: list[list[str]] = []

    @staticmethod
    def weigh(text: str) -> int:
        return len(text)

    async def post(self, shown: str) -> LiveMessage[str]:
        index = len(self.versions)
        self.versions.append([shown])

        async def edit(content: str) -> None:
            self.versions[index].append(content)

        return LiveMessage(edit, shown, ref=index, interval=0.0)

    def draw(self, part: Part, *, writing: bool) -> str:
        return str(part) + (" ▍" if writing else "")

    def draw_final(self, part: Part, reply: Reply, notices: list[str]) -> str:
        return str(part)


def test_a_streamed_answer_shows_all_of_itself_and_never_rewrites_a_full_message() -> None:
    async def stream(text: str, rng: random.Random) -> _Recorder:
        surface = _Recorder()
        answer = StreamedAnswer(surface, await surface.post("Thinking…"))
        at = 0
        while at < len(text):
            step = rng.randint(1, 40)
            await answer.add(text[at:at + step])
            at += step
        await answer.finish(Reply(text=text, footer="#1"))
        return surface

    rng = random.Random(5)
    for size in (3344, 5244, 16164):
        text = long_answer(size, seed=size, long_block=size // 100, fence_at=(998, 1996))
        surface = asyncio.run(stream(text, rng))
        final = [versions[-1] for versions in surface.versions]
        assert untile(final, text) >= (1 if size > 5000 else 0)
        for versions in surface.versions[:-1]:  # a message once full is settled and then left as it is
            settled = [v for v in versions if not v.endswith("▍") and v != "Thinking…"]
            assert len(set(settled)) == 1, "a full message changed after it was settled"
