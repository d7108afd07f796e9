"""Long answers cut into messages losslessly (bot/text.py `split_parts`, bot/stream.py), Slack's mrkdwn leaving code
alone, and one answer per message (bot/deliveries.py). Pure logic, no services, except Redis for deliveries."""

from __future__ import annotations

import asyncio
import json
import random
import re

import pytest
import regex
from redis import Redis

from modelbay.adapters.slack import views
from modelbay.adapters.slack.blocks import escape, escaped_chars, fallback, mrkdwn
from modelbay.bot.deliveries import first_delivery
from modelbay.bot.live import LiveMessage
from modelbay.bot.reply import Reply
from modelbay.bot.stream import StreamedAnswer
from modelbay.bot.text import Part, TableHead, fence_after, split_parts
from tests.support.answers import _open_after, long_answer, untile

_FENCE_LINE = re.compile(r"[ \t>]*(`{3,}|~{3,})")
# Prose never starts a line with a fence (a fence line longer than a message cannot be kept whole); ``` and ~~~
# appear inside lines, where they open nothing.
_WORDS = ["word", "**bold**", "`x**2`", "<@U1>", "&", "a < b", "\n", "\n\n", "  ", "``", "a```b", "c~~~"]
_CODE = ["def f(**kwargs):", "    return x**2", "        deep = a < b & c > d", "", "\t tab", "y = '```'",
         "```python", "x" * 700]


def _random_text(rng: random.Random, size: int) -> str:
    """Markdown-ish text with fences of every kind (```, ````, ~~~, languages, indented as in list items, inside
    quotes, unclosed) and long lines."""
    out: list[str] = []
    while sum(map(len, out)) < size:
        kind = rng.random()
        if kind < 0.35:
            fence = rng.choice(["```", "````", "~~~", "  ```", "    ```", "\t~~~", "> ```", ">     ````", "> > ~~~"])
            language = rng.choice(["python", "", "js", "c++ {.numberLines}"])
            quote = fence[:fence.rfind(">") + 1]
            body = "".join(quote + rng.choice(_CODE) + "\n" for _ in range(rng.randint(0, 40)))
            closer = rng.choice([fence, fence.lstrip(" \t"), ""]) if rng.random() < 0.9 else ""
            out.append(f"{fence}{language}\n{body}{closer}\n")
        elif kind < 0.7:
            out.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 200))) + "\n\n")
        elif kind < 0.75:
            out.append("z" * rng.randint(100, 6000))  # a line longer than a message
        else:
            out.append(rng.choice(["\n", "    indented\n", "```\n", "```py\n", "- item\n", "\r\n"]))
    return "".join(out)[:size]


def _cut_in_fence_line(parts: list[Part], limit: int) -> bool:
    """Whether a cut falls inside a fence line (anywhere but at its start) that is short enough to keep whole."""
    text, at = "".join(p.text for p in parts), 0
    for part in parts[:-1]:
        at += len(part.text)
        start, end = text.rfind("\n", 0, at) + 1, text.find("\n", at)
        line = text[start:end if end >= 0 else len(text)]
        if start != at and _FENCE_LINE.match(line) and len(line) < limit // 4:
            return True
    return False


@pytest.mark.parametrize("weigh", [len, escaped_chars], ids=["plain", "slack-escaped"])
def test_any_text_splits_losslessly_with_code_blocks_whole_in_every_part(weigh) -> None:  # noqa: ANN001
    rng = random.Random(12)
    for _ in range(400):
        text = _random_text(rng, rng.randint(0, 14000))
        limit = rng.choice([80, 150, 500, 1999, 3000, 3500, 4094])
        parts = split_parts(text, limit, weigh)
        assert "".join(p.text for p in parts) == text  # every character, in order, exactly once
        shown = [str(p) for p in parts]
        for piece in shown:
            assert weigh(piece) <= limit
            assert fence_after(piece) is None and _open_after(piece) is None  # every part's blocks are closed
        for before, after in zip(parts, parts[1:]):
            assert before.close == after.reopen  # a block cut is reopened with its own opening line
        assert not _cut_in_fence_line(parts, limit)
        untile(shown, text)  # and what is shown, fence lines undone, is the text


def test_cuts_keep_indentation_and_reopen_code_with_its_language() -> None:
    code = "".join(f"    line_{i} = x**2  # **kwargs\n" for i in range(300))
    text = f"Intro.\n\n```python\ndef f(**kwargs):\n{code}```\n\nAfter."
    parts = split_parts(text, 1000)
    assert len(parts) > 5 and "".join(p.text for p in parts) == text
    for part in parts[1:-1]:
        shown = str(part)
        assert shown.startswith("```python\n    line_") and shown.endswith("\n```")  # indentation kept at the cut
        assert part.text.endswith("\n")  # cut between lines of code, not inside one


def test_a_fence_line_at_the_cut_goes_whole_to_one_side() -> None:
    for offset in range(-12, 12):
        before = "a" * (500 + offset) + "\n"
        text = before + "```python\nprint(x**2)\n```\n" + "b" * 400
        parts = split_parts(text, 512)
        assert "".join(p.text for p in parts) == text and not _cut_in_fence_line(parts, 512)
        assert all(str(p).count("```") % 2 == 0 for p in parts)


def test_code_blocks_in_list_items_and_quotes_are_closed_and_reopened_with_their_prefix() -> None:
    for opening, line, closing in [("    ```python", "    x = a**2\n", "    ```"),
                                   ("> ```python", "> x = a**2\n", "> ```"),
                                   (">   ~~~~ sh", ">   echo $HOME\n", ">   ~~~~"),
                                   ("\t```", "\tx = a**2\n", "\t```")]:
        text = f"1. Run:\n\n{opening}\n{line * 100}{closing}\n\nDone.\n"
        parts = split_parts(text, 300)
        assert len(parts) > 3 and "".join(p.text for p in parts) == text
        for before, after in zip(parts, parts[1:-1]):
            assert before.close == after.reopen and after.reopen is not None and after.reopen.opening == opening
            assert str(after).startswith(f"{opening}\n{line}") and str(after).endswith(f"\n{closing}")
        untile([str(p) for p in parts], text)
    # Indented 4 columns past a top-level block's fence, a fence line is code (CommonMark): it closes nothing.
    text = "```\n" + "    ```\n" * 80 + "```\nafter\n"
    parts = split_parts(text, 100)
    assert all(p.close is not None for p in parts[:-1]) and "".join(p.text for p in parts) == text


def _grapheme_ends(text: str) -> set[int]:
    return {m.end() for m in regex.finditer(r"\X", text)}


@pytest.mark.parametrize("weigh", [len, escaped_chars], ids=["plain", "slack-escaped"])
def test_cuts_never_split_a_grapheme_cluster(weigh) -> None:  # noqa: ANN001
    clusters = ["\U0001F1FA\U0001F1F8", "\U0001F468\u200d\U0001F469\u200d\U0001F467", "e\u0301", "\u2764\ufe0f",
                "\U0001F44D\U0001F3FD", "a\u0308\u0301", "&", "x", "\r\n"]
    rng = random.Random(4)
    for _ in range(200):
        text = "".join(rng.choice(clusters) for _ in range(rng.randint(1, 400)))
        if rng.random() < 0.3:
            text = "```\n" + text
        limit = rng.choice([20, 33, 64, 301])
        parts = split_parts(text, limit, weigh)
        assert "".join(p.text for p in parts) == text and all(weigh(str(p)) <= limit for p in parts)
        at, ends = 0, _grapheme_ends(text)
        for part in parts[:-1]:
            at += len(part.text)
            assert at in ends, f"cut inside a grapheme cluster: {text[at - 3:at + 3]!r}"


def test_a_limit_too_small_for_a_reopen_a_character_and_a_closer_is_refused_and_no_part_is_empty() -> None:
    code = "```python\n" + "    x0 = 0**2\n" * 40 + "```\n"
    with pytest.raises(ValueError, match="raise the limit"):
        split_parts(code, 13)  # "```python\n" + one character + "\n```" is 15
    assert all(len(str(p)) <= 15 for p in split_parts(code, 15))
    rng = random.Random(3)
    for _ in range(20000):
        text = "".join(rng.choice(["a", " ", "\n", "```\n", "bb ", "  ~~~~ py\n", "e\u0301"])
                       for _ in range(rng.randint(1, 60)))
        limit = rng.randint(1, 40)
        longest = max((len(line) for line in text.splitlines() if _FENCE_LINE.match(line)), default=0)
        try:
            parts = split_parts(text, limit)
        except ValueError:
            assert limit < 2 * longest + 4, (text, limit)  # reopen line + "\n" + a cluster of 2 + "\n" + closer
            continue
        assert "".join(p.text for p in parts) == text
        assert all(p.text for p in parts) and all(len(str(p)) <= limit for p in parts), (text, limit)


def test_the_cut_of_a_growing_text_never_moves() -> None:
    text = long_answer(16164, seed=3, long_block=150)
    final = split_parts(text, 3500, escaped_chars)
    for size in range(3000, len(text), 997):
        growing = split_parts(text[:size], 3500, escaped_chars)
        assert growing[:-1] == final[:len(growing) - 1]


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


def test_slack_mrkdwn_leaves_code_alone_and_escapes_everything() -> None:
    text = "**Bold** and `**kwargs` and `x**2`.\n```python\ndef f(**kwargs):\n    return x**2 ** 3\n```\n**End**"
    assert mrkdwn(text) == ("*Bold* and `**kwargs` and `x**2`.\n```python\ndef f(**kwargs):\n    return x**2 ** 3\n"
                            "```\n*End*")
    assert mrkdwn("3**2 is 9 and **x**") == "3**2 is 9 and *x*"  # the nearest pair of stars is the bold one
    assert mrkdwn("**a\n\nb**") == "**a\n\nb**"  # bold never spans paragraphs
    hostile = "Hi <!channel> <@U0123> <http://evil.example|click> & <#C1>"
    for shown in (mrkdwn(hostile), escape(hostile), fallback(Reply(text=hostile)),
                  mrkdwn(f"```\n{hostile}\n```"), mrkdwn(f"`{hostile}`")):
        assert "<" not in shown and ">" not in shown and "&lt;!channel&gt;" in shown
    assert escaped_chars(hostile) == len(hostile) + 4 * 3 + 4 * 3 + 4  # &lt; and &gt; add 3 each, &amp; adds 4
    browse = json.dumps(views.browse_modal([], query="x", category=None, notices=[hostile], may_install=False))
    assert "<!channel>" not in browse and "&lt;!channel&gt;" in browse  # a source's notice is shown, escaped


def test_a_message_delivered_again_under_any_of_its_identities_is_a_repeat(redis: Redis) -> None:
    async def check() -> list[bool]:
        return [
            await first_delivery(redis, "slack", "event:Ev1", "message:C1:1.5", "client:abc"),
            await first_delivery(redis, "slack", "event:Ev1", "message:C1:1.5", "client:abc"),  # a retry
            await first_delivery(redis, "slack", "event:Ev2", "message:C1:1.5", "client:abc"),  # a new event id
            await first_delivery(redis, "slack", "event:Ev3", "message:C1:1.6", "client:abc"),  # same client id
            await first_delivery(redis, "slack", "event:Ev4", "message:C1:1.7", None),  # another message
            await first_delivery(redis, "discord", "message:1.5"),  # other platforms have their own names
            await first_delivery(redis, "discord", "message:1.5"),
        ]

    assert asyncio.run(check()) == [True, False, False, False, True, True, False]
    assert 3500 <= redis.ttl("modelbay:slack:seen:event:Ev4") <= 3600


def _table(rows: int, header: str = "| model | params | fits |") -> str:
    body = "".join(f"| m-{i} | {i}B | {'yes' if i % 2 else 'no'} |\n" for i in range(rows))
    return f"{header}\n|---|--:|:-:|\n{body}"


def test_a_table_cut_across_parts_repeats_its_header_as_a_reopen() -> None:
    text = "Models:\n\n" + _table(120) + "\nThat is all.\n\n```\n" + _table(3) + "```\n"
    parts = split_parts(text, 500)
    assert len(parts) > 4 and "".join(p.text for p in parts) == text and all(len(str(p)) <= 500 for p in parts)
    head = "| model | params | fits |\n|---|--:|:-:|"
    for before, after in zip(parts, parts[1:]):
        assert before.close == after.reopen  # what a part ends inside is what the next reopens
        if isinstance(after.reopen, TableHead):
            assert after.reopen.opening == head and str(after) == f"{head}\n{after.text}"
            assert after.text.startswith("| m-") and before.text.endswith("|\n")  # cut between rows only
    assert sum(isinstance(p.reopen, TableHead) for p in parts) >= 3
    assert not isinstance(parts[-1].close, TableHead)  # the table ended; one inside code is code, not a table
    # A header too wide for a quarter of a part is not repeated: the rows keep their room
    wide = _table(60, "| " + " | ".join(["column"] * 30) + " |")
    assert all(p.reopen is None for p in split_parts(wide, 500))


def test_the_cut_of_a_growing_table_never_moves() -> None:
    text = "Intro.\n\n" + _table(300) + "\nDone.\n"
    final = split_parts(text, 700, escaped_chars)
    for size in range(50, len(text), 61):
        growing = split_parts(text[:size], 700, escaped_chars)
        assert growing[:-1] == final[:len(growing) - 1]


def test_only_a_line_feed_ends_a_line_for_cuts_and_for_the_block_open_at_the_end_alike() -> None:
    for brk in ("\r", "\x0c", "\x85", "\u2028"):  # str.splitlines() would end a line at each of these
        text = f"text{brk}```python\n" + "a line\n" * 100
        for limit in (120, 2000):
            parts = split_parts(text, limit)
            assert all(p.close is None and p.reopen is None for p in parts), (brk, limit)
            assert fence_after(text) is None and "".join(p.text for p in parts) == text
