"""Text helpers every chat front end shares: splitting long text, tables as aligned lines, progress bars.

`split_parts` cuts Markdown into messages losslessly: every character lands in exactly one part, in order, and a
fenced code block a cut falls inside is closed at the end of one part and reopened (with its opening line, so its
language, indentation and quote markers) at the start of the next, so each part renders on its own. Cuts prefer
paragraph and line breaks outside code, then line breaks inside code, then a space, and never fall inside a fence line
or a grapheme cluster (a flag, an emoji sequence, a letter and its accents stay in one message). A Markdown table cut
across parts is continued the same way: its header and delimiter rows start the next part (`TableHead`, a reopen with
nothing to close), so the rest still renders as a table where the platform renders tables (Slack's markdown block).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import regex

from modelbay.bot.reply import Progress, Reply, Table

__all__ = ["Fence", "Part", "TableHead", "bar", "fence_after", "fenced_blocks", "rewrite", "split_parts", "split_text",
           "table_lines"]

CELL_CHARS = 40  # a table cell wider than this is cut, so rows stay readable in a chat window
# A fence line: any indentation and block-quote markers (a code block inside a list item or a quote), 3 or more
# backticks or tildes, then the info string.
_FENCE = re.compile(r"([ \t>]*)(`{3,}|~{3,})(.*)")
_GRAPHEME = regex.compile(r"\X")  # one user-perceived character (Unicode's extended grapheme cluster)
# A table's delimiter row (GFM): cells of dashes with optional alignment colons, at least one pipe.
_DELIMITER = re.compile(r" {0,3}(?=[^|]*\|)\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*")
HEADER_SHARE = 4  # a table header repeated at a cut takes at most 1/4 of a part; a wider one is not repeated


@dataclass(frozen=True)
class Fence:
    """A fenced code block left open: the line that opened it (`opening`) and the line that closes it."""

    opening: str  # as written, e.g. "```python" or ">     ```python"
    closing: str  # the opening's indentation, quote markers and run, e.g. "```" or ">     ```"

    def closes(self, line: str) -> bool:
        """Whether a line (without its newline) closes this block: the same character, a run at least as long, in
        the same quote, indented at most 3 columns more than the opening (as CommonMark's closing fence)."""
        match = _FENCE.fullmatch(line.rstrip("\r"))
        opener = _FENCE.fullmatch(self.closing)
        if match is None or opener is None or match[3].strip():
            return False
        prefix, run = opener[1], opener[2]
        return (match[2][0] == run[0] and len(match[2]) >= len(run) and match[1].count(">") == prefix.count(">")
                and _indent(match[1]) <= _indent(prefix) + 3)


@dataclass(frozen=True)
class TableHead(Fence):
    """A Markdown table open at a cut: `opening` is its header and delimiter rows, shown again at the start of the
    next part; `closing` is empty (a table needs no closing line)."""

    def closes(self, line: str) -> bool:
        """Whether a line (without its newline) ends the table: a blank line or one with no cell separator."""
        return not _table_row(line)


def _table_row(line: str) -> bool:
    return "|" in line and bool(line.strip())


def _indent(prefix: str) -> int:
    """The columns of indentation after a fence prefix's last quote marker (a tab counts 4)."""
    return len(prefix.rsplit(">", 1)[-1].expandtabs(4))


@dataclass(frozen=True)
class Part:
    """One message's share of a text: `text` is the share itself; `reopen` and `close` are the code block open
    where it starts and where it ends, whose fence lines `str()` adds so the part renders on its own."""

    text: str
    reopen: Fence | None = None
    close: Fence | None = None

    def __str__(self) -> str:
        head = self.reopen.opening + "\n" if self.reopen else ""
        return head + self.text + _closer(self.text, self.close)


def _closer(text: str, fence: Fence | None) -> str:
    """The fence line that closes a part ending inside `fence` (on a line of its own)."""
    if fence is None or not fence.closing:
        return ""
    return fence.closing if text.endswith("\n") or not text else "\n" + fence.closing


def _fence_line(line: str) -> bool:
    return _FENCE.fullmatch(line.rstrip("\r\n")) is not None


def _after(fence: Fence | None, line: str) -> Fence | None:
    """The code block open after one more line (with or without its newline)."""
    line = line.rstrip("\n")
    if fence is not None:
        return None if fence.closes(line) else fence
    match = _FENCE.fullmatch(line.rstrip("\r"))
    if match is None or (match[2][0] == "`" and "`" in match[3]):  # a backtick fence's info has no backtick
        return None
    return Fence(line.rstrip("\r"), match[1] + match[2])


def _next(state: Fence | None, previous: str | None, line: str) -> Fence | None:
    """The code block or table open after one more line, given the line before it (None if unknown)."""
    if isinstance(state, TableHead):
        if not state.closes(line.rstrip("\r\n")):
            return state
        state = None
    after = _after(state, line)
    if state is None and after is None and previous is not None and _table_row(previous.rstrip("\r\n")) \
            and _DELIMITER.fullmatch(line.rstrip("\r\n")):
        return TableHead(previous.rstrip("\r\n") + "\n" + line.rstrip("\r\n"), "")
    return after


def _open_at_end(text: str, fence: Fence | None) -> Fence | None:
    """The code block or table open at the end of `text` (which starts inside `fence`)."""
    previous = None
    for line in _lines(text):
        fence, previous = _next(fence, previous, line), line
    return fence


def _lines(text: str) -> list[str]:
    """A text's lines with their line breaks: only "\n" ends a line (as where `_cut` cuts; not splitlines()' lone
    "\r", "\x0c" or "\u2028")."""
    return [line for line in re.split(r"(?<=\n)", text) if line]


def fence_after(text: str, fence: Fence | None = None) -> Fence | None:
    """The code block open at the end of `text` (which starts inside `fence`), or None."""
    for line in _lines(text):
        fence = _after(fence, line)
    return fence


def split_parts(text: str, limit: int, weigh: Callable[[str], int] = len, *,
                fence: Fence | None = None) -> list[Part]:
    """Cut text (which starts inside `fence`) into parts whose `str()` weighs at most `limit` each.

    `weigh` says what a text costs once sent (its length by default; Slack's escaped length); it must add up:
    weigh(a + b) == weigh(a) + weigh(b). Joining the parts' `text` gives back `text` exactly; no part is empty unless
    `text` is. The cut of a text's beginning never moves as more text is appended, so a streamed answer can be cut
    into messages as it grows. Raises ValueError when `limit` cannot hold a part's least: its reopening fence line,
    one grapheme cluster and its closing fence line (15 characters for a 3-backtick python block; a limit of 80 or
    more is safe for any answer whose fence lines are short).
    """
    parts: list[Part] = []
    while True:
        if isinstance(fence, TableHead) and weigh(fence.opening + "\n") * HEADER_SHARE > limit:
            fence = None  # a header this wide would crowd out the rows it heads
        head = weigh(fence.opening + "\n") if fence else 0
        end_fence = _open_at_end(text, fence)
        if head + weigh(text) + weigh(_closer(text, end_fence)) <= limit:
            parts.append(Part(text, fence, end_fence))
            return parts
        cut, after = _cut(text, fence, limit - head, weigh)
        parts.append(Part(text[:cut], fence, after))
        text, fence = text[cut:], after


def _cut(text: str, fence: Fence | None, room: int, weigh: Callable[[str], int]) -> tuple[int, Fence | None]:
    """Where the first part of a text too long for `room` ends, and the code block open there."""
    lines: list[tuple[int, int, int, Fence | None]] = []  # cuts at line starts: (rank, index, weight before, fence)
    used, start, state, previous = 0, 0, fence, None
    while (newline := text.find("\n", start)) >= 0:  # the last line, maybe still being written, is never taken whole
        line = text[start:newline + 1]
        after = _next(state, previous, line)
        if used + weigh(line) + weigh(_closer("\n", after)) > room:
            break
        state, used, start, previous = after, used + weigh(line), newline + 1, line
        if start < len(text):
            lines.append((_rank(text, start, state), start, used, state))
    half = room // 2
    late = [c for c in lines if c[2] >= half]
    if late:
        _, index, _, after = min(late, key=lambda c: (c[0], -c[1]))
        return index, after
    # No line break in the second half: cut inside the line that does not fit, at a space late enough; else at the
    # last line break; else where the room ends. Never inside a fence line, never inside a grapheme cluster, and
    # never after the whole line (its line break may change the code block open after it).
    end = text.find("\n", start)
    line = text[start:] if end < 0 else text[start:end + 1]
    ends = [e for e in _fitting(line, room - used - weigh(_closer("x", state)), weigh) if e < len(line)]
    # A cut that leaves a fence-like rest would start the next message with a fence line that opens a block
    ends = [e for e in ends if not _fence_line(line[e:])] or ends
    spaces = [e for e in ends if line[e - 1] == " "]
    if isinstance(state, TableHead):
        state = None  # a row cut in two: the rest of it cannot follow a repeated header
    if not _fence_line(line) and spaces and used + weigh(line[:spaces[-1]]) >= half:
        return start + spaces[-1], state
    if lines:
        _, index, _, after = max(lines, key=lambda c: c[1])
        return index, after
    if not ends:
        reopen = f" after reopening {fence.opening!r}" if fence else ""
        raise ValueError(f"A part of {room} more units{reopen} cannot hold {line[:20]!r}'s first character and a "
                         "closing fence line: raise the limit.")
    return start + ends[-1], state


def _fitting(line: str, room: int, weigh: Callable[[str], int]) -> list[int]:
    """The ends of a line's first grapheme clusters, as many as weigh at most `room` together."""
    ends, used = [], 0
    for cluster in _GRAPHEME.finditer(line):
        used += weigh(cluster[0])
        if used > room:
            break
        ends.append(cluster.end())
    return ends


def _rank(text: str, start: int, fence: Fence | None) -> int:
    """How good a cut before the line at `start` is: 0 between paragraphs or next to a code block, 1 between lines,
    2 between lines of code, 3 right after a block's opening line or right before its closing line (either would
    leave an empty block in one of the two messages)."""
    newline = text.find("\n", start)
    line = text[start:] if newline < 0 else text[start:newline]
    previous = text[text.rfind("\n", 0, start - 1) + 1:start].rstrip("\r\n")
    if isinstance(fence, TableHead):  # between rows; not right after the header, which would show it twice
        return 3 if previous == fence.opening.rsplit("\n", 1)[-1] else 2
    if fence is None:
        if _DELIMITER.fullmatch(line.rstrip("\r")) and _table_row(previous):
            return 3  # between a table's header and its delimiter row
        return 0 if text.endswith("\n\n", 0, start) or _fence_line(line) or _fence_line(previous) else 1
    return 3 if previous == fence.opening or (newline >= 0 and fence.closes(line)) else 2


def split_text(text: str, limit: int) -> list[str]:
    """Split text into pieces of at most limit characters, at a paragraph, line or word break when there is one.

    The split of a text's beginning never changes as more text is appended, so a streamed answer can be cut into
    messages as it grows.
    """
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = window.rfind("\n\n")
        if cut < limit // 2:
            cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip("\n ") if cut < len(text) else ""
    if text or not pieces:
        pieces.append(text)
    return pieces


def table_lines(table: Table) -> list[str]:
    """A table as monospaced lines: header, a rule, then the rows, columns aligned (backticks removed)."""
    cells = [[c.replace("`", "") for c in table.columns],
             *[[str(c).replace("`", "") for c in row] for row in table.rows]]
    widths = [min(CELL_CHARS, max(len(row[i]) for row in cells)) for i in range(len(table.columns))]
    lines = ["  ".join(c[:CELL_CHARS].ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def bar(progress: Progress, width: int = 10) -> str:
    """A text progress bar: '▰▰▰▱▱▱▱▱▱▱'."""
    filled = max(0, min(width, round(progress.fraction * width)))
    return "▰" * filled + "▱" * (width - filled)


def rewrite(reply: Reply, change: Callable[[str], str]) -> Reply:
    """The reply with `change` applied to every text people read (not to button commands): a platform writing
    command names the way its users type them."""
    fields = [replace(f, value=change(f.value)) for f in reply.fields]
    table = reply.table and Table(reply.table.columns, [[change(c) for c in row] for row in reply.table.rows])
    return replace(reply, text=change(reply.text), fields=fields, table=table,
                   footer=reply.footer and change(reply.footer))


def fenced_blocks(text: str) -> list[tuple[int, int]]:
    """Where each fenced code block of `text` lies, its fence lines included: (start, end) offsets, read as
    `split_parts` reads fences (``` or ~~~, three or more, at any indentation or quote depth, only `\\n` ending a
    line); a block never closed runs to the end."""
    spans: list[tuple[int, int]] = []
    fence: Fence | None = None
    at = start = 0
    for line in _lines(text):  # only a line feed ends a line, as for the cuts
        after = _after(fence, line)
        if fence is None and after is not None:
            start = at
        elif fence is not None and after is None:
            spans.append((start, at + len(line)))
        fence, at = after, at + len(line)
    if fence is not None:
        spans.append((start, len(text)))
    return spans
