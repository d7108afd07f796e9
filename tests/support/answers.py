"""Long model answers with code, and a check that what a chat shows of one is the answer, losslessly.

`long_answer(n)` writes an answer of exactly n characters: prose with characters Slack escapes, and fenced python
blocks whose code holds `**kwargs`, `x**2`, indentation and comparisons (no **bold** outside code: Slack's mrkdwn
rewrites that, which is not what this checks). `untile(shown, answer)` checks that the
texts a chat finally shows (each message's, or each Slack section's, in order) are the answer cut into pieces, each
piece maybe wrapped in the fence lines that close and reopen a code block at a cut, and returns how many cuts fell
inside code. Its fence reading is written here on its own (CommonMark's, with fences at any indentation or inside
block quotes, as in list items and quotes), not borrowed from ModelBay.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable

__all__ = ["long_answer", "untile"]

_FENCE = re.compile(r"([ \t>]*)(`{3,}|~{3,})(.*)")

_PROSE = [
    "The function below takes every keyword argument & passes it on; a < b and b > c hold here.",
    "Note how `**kwargs` collects the rest, and `x**2` squares a number (so `3**2` is 9).",
    "Mentions such as <!channel>, <@U0123ABC> or links like <http://evil.example|click here> stay plain text.",
    "Indentation matters in Python: the body of each block is indented by four spaces, nested ones by eight.",
]
_CODE = [
    "def call(fn, *args, **kwargs):",
    "    \"\"\"Call fn with every argument it was given.\"\"\"",
    "    if len(args) < 2 and kwargs.get('x', 0) > 1:",
    "        return fn(*args, **kwargs)",
    "    squares = [x**2 for x in args if x & 1]",
    "    for key, value in kwargs.items():",
    "        print(f\"{key} -> {value!r}\")  # a <tag> & more",
    "",
    "class Point:",
    "    def __init__(self, **kwargs):",
    "        self.x = kwargs.pop('x', 0) ** 2",
    "        self.y = kwargs.pop('y', 0)",
    "            # deeply indented comment",
]


def _code_block(rng: random.Random, lines: int) -> str:
    language = rng.choice(["python", "python", "py", ""])
    body = "\n".join(rng.choice(_CODE) for _ in range(lines))
    return f"```{language}\n{body}\n```\n"


def long_answer(n: int, *, seed: int = 0, fence_at: tuple[int, ...] = (), long_block: int = 0) -> str:
    """An answer of exactly n characters that ends in a code block, with a code block's opening fence line starting
    at each position in `fence_at` (so a cut near there meets a fence), and first a block of `long_block` lines."""
    rng = random.Random(seed)
    ending = _code_block(rng, 12)
    target, pending = n - len(ending), sorted(fence_at)
    text = f"{_PROSE[0]}\n\n{_code_block(rng, long_block)}\n" if long_block else ""
    while True:
        chunk = (" ".join(rng.choice(_PROSE) for _ in range(rng.randint(1, 4))) + "\n\n" if rng.random() < 0.5
                 else _code_block(rng, rng.randint(4, 60)) + "\n")
        if pending and len(text) + len(chunk) > pending[0]:  # fill up to the place, then a code block there
            chunk = _filler(pending.pop(0) - len(text)) + _code_block(rng, rng.randint(6, 30)) + "\n"
        if len(text) + len(chunk) > target:
            break
        text += chunk
    answer = text + _filler(target - len(text)) + ending
    assert len(answer) == n and _open_after(answer) is None
    return answer


def _filler(size: int) -> str:
    """Prose of exactly `size` characters ending in a line break (nothing for 0)."""
    return ("Some more words, and a few & more. " * (size // 35 + 1))[:max(0, size - 1)] + "\n" if size > 0 else ""


def _step(fence: tuple[str, str] | None, line: str) -> tuple[str, str] | None:
    """The code block open after one more line: (opening line, closing run), or None."""
    line = line.rstrip("\n")
    match = _FENCE.fullmatch(line)
    if fence is None:
        if match and not (match[2][0] == "`" and "`" in match[3]):
            return line, match[1] + match[2]
        return None
    opener = _FENCE.fullmatch(fence[1])
    assert opener is not None
    if match is None or match[3].strip() or match[1].count(">") != opener[1].count(">"):
        return fence

    def columns(prefix: str) -> int:
        return len(prefix.split(">")[-1].expandtabs(4))

    same_run = match[2][0] == opener[2][0] and len(match[2]) >= len(opener[2])
    return None if same_run and columns(match[1]) <= columns(opener[1]) + 3 else fence


def _open_after(text: str, fence: tuple[str, str] | None = None) -> tuple[str, str] | None:
    for line in re.split(r"(?<=\n)", text):  # only "\n" ends a line, as where split_parts cuts
        fence = _step(fence, line)
    return fence


def _prefix_fences(text: str) -> Callable[[int], tuple[str, str] | None]:
    """`_open_after(text[:end])` for any end, each in one step: the block open at every line start is read once."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    open_at = [None]
    for start, end in zip(starts, starts[1:]):
        open_at.append(_step(open_at[-1], text[start:end]))

    def after(end: int) -> tuple[str, str] | None:
        line = bisect.bisect_right(starts, end) - 1
        return _step(open_at[line], text[starts[line]:end])  # the line cut at `end` (maybe "", as re.split gives)

    return after


def untile(shown: list[str], answer: str) -> int:
    """Check that `shown` is `answer` cut into pieces, each wrapped in the fence lines of the code block open at its
    start and end; return how many cuts fell inside a code block. Raises AssertionError naming the furthest mismatch.

    A piece ending in a fence line may be the answer's own closing line or one added at a cut; both readings are
    tried (the next piece tells them apart)."""
    failures: list[tuple[int, str]] = [(0, "nothing shown")]
    open_after = _prefix_fences(answer)  # _open_after(answer[:at]), without reading the answer again each time

    def rest(i: int, at: int) -> int | None:
        if i == len(shown):
            if at == len(answer):
                return 0
            failures.append((at, f"only {at} of {len(answer)} characters shown; missing {answer[at:at + 200]!r}"))
            return None
        piece, start = shown[i], open_after(at)
        if start is not None:
            if not piece.startswith(start[0] + "\n"):
                failures.append((at, f"piece {i} does not reopen {start[0]!r}: {piece[:80]!r}"))
                return None
            piece = piece[len(start[0]) + 1:]
        for end in sorted({at + len(piece) - k for k in range(0, 12)}, reverse=True):
            if end < at:
                continue
            body, fence = answer[at:end], open_after(end)
            closer = "" if fence is None else (fence[1] if body.endswith("\n") or not body else "\n" + fence[1])
            if piece == body + closer and (inside := rest(i + 1, end)) is not None:
                return inside + (start is not None)
        same = next((k for k, (a, b) in enumerate(zip(piece, answer[at:])) if a != b), min(len(piece), len(answer) - at))
        failures.append((at, f"piece {i} differs from the answer at {at + same}: {piece[max(0, same - 60):same + 60]!r} "
                             f"vs {answer[at + max(0, same - 60):at + same + 60]!r}"))
        return None

    found = rest(0, 0)
    assert found is not None, max(failures)[1]
    return found
