"""bot/text.py: long answers cut into messages losslessly (`split_parts`), code blocks and tables closed and
reopened at each cut, never inside a fence line or a grapheme cluster, and the cut of a growing text never moving."""

from __future__ import annotations

import random
import re

import pytest
import regex

from modelbay.adapters.slack.blocks import escaped_chars
from modelbay.bot.text import Part, TableHead, fence_after, split_parts, split_text
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


def test_plain_splitting_keeps_every_word_within_the_limit_and_its_cuts_never_move() -> None:
    rng = random.Random(8)
    for _ in range(200):
        text = _random_text(rng, rng.randint(0, 5000))
        limit = rng.choice([40, 100, 333, 2000])
        pieces = split_text(text, limit)
        assert pieces and all(len(piece) <= limit for piece in pieces)  # an empty text is one empty piece
        # Only the white space a cut falls on is dropped: every other character stays, in order.
        assert "".join("".join(pieces).split()) == "".join(text.split())
        for size in range(0, len(text), max(1, len(text) // 7)):
            growing = split_text(text[:size], limit)
            assert growing[:-1] == pieces[:len(growing) - 1]
