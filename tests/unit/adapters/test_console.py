"""Console rendering: Markdown the bot writes (bold, code spans, fenced blocks) and attachments by their path."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from modelbay.adapters.console import attachment_lines, render
from modelbay.bot.reply import Attachment, Reply


def _shown(reply: Reply, saved: dict[str, Path] | None = None) -> str:
    out = Console(file=io.StringIO(), width=100, color_system=None)
    out.print(render(reply))
    for line in attachment_lines(reply, saved):
        out.print(line, soft_wrap=True)
    return out.file.getvalue()  # type: ignore[attr-defined]


def test_fenced_code_is_shown_as_written_and_bold_and_code_spans_as_styles() -> None:
    text = _shown(Reply(text="**Lengths** (`model:` counts)\n```\n 0–9 │██ 3 `x` **y** [z]\n```\nafter"))
    assert "Lengths (model: counts)" in text and "**" not in text.split("│")[0]
    assert " 0–9 │██ 3 `x` **y** [z]" in text and "```" not in text and "after" in text


def test_an_attachment_saved_to_a_file_shows_its_path() -> None:
    reply = Reply(text="chart", attachments=[Attachment("a.png", b"\x89PNG", "image/png")])
    assert "attachment: a.png (4 bytes)" in _shown(reply)
    assert "attachment: /tmp/home/files/a.png (4 bytes)" in _shown(reply, {"a.png": Path("/tmp/home/files/a.png")})
    # A path longer than the terminal is printed whole, on one line, below the card (inside it, the card's borders
    # split it into pieces that cannot be copied).
    long = Path("/tmp/pytest-of-root/pytest-143/popen-gw0/test_the_console_adds_a_dataset/home/files/train-loss.png")
    card = Reply(title="Results", text="done", attachments=[Attachment("a.png", b"\x89PNG", "image/png")])
    assert f"\nattachment: {long} (4 bytes)\n" in _shown(card, {"a.png": long})


def test_a_button_that_asks_first_shows_the_line_with_what_it_asks_for() -> None:
    # The dataset card's "Train on this" showed `/train start dataset:3`, which answers "model is missing".
    from modelbay.bot.commands.datasets import TRAIN_ON

    text = _shown(Reply(text="card", buttons=[TRAIN_ON.button("Train on this", 3, "primary")]))
    assert "/train start dataset:3 model:<model>" in text
