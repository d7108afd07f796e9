"""Text helpers every chat front end shares: splitting long text, tables as aligned lines, progress bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from modelbay.bot.reply import Progress, Reply, Table

__all__ = ["bar", "rewrite", "split_text", "table_lines"]

CELL_CHARS = 40  # a table cell wider than this is cut, so rows stay readable in a chat window


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
