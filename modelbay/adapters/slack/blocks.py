"""Block Kit rendering of a Reply, within Slack's limits: 50 blocks, 3,000 characters a section, ~4,000 a message.

A Reply that does not fit one message becomes several: the first carries the title, progress, buttons and footer
and as much body as fits; the rest of the body follows as thread messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelbay.bot.reply import Button, Progress, Reply, Table
from modelbay.bot.spec import CommandSet
from modelbay.bot.text import bar, fenced_blocks, rewrite, split_parts, split_text, table_lines

__all__ = [
    "BLOCK_LIMIT", "FEEDBACK_ACTION", "MARKDOWN_CHARS", "MESSAGE_CHARS", "SECTION_CHARS", "STREAM_CHARS",
    "SlackMessage", "answer_tail", "button", "context", "escape", "escape_markdown", "escaped_chars", "feedback",
    "markdown_chars", "mrkdwn",
    "progress_line", "render", "section", "slack_text", "tail",
]

BLOCK_LIMIT = 50
SECTION_CHARS = 3000
FIELD_CHARS = 2000
FIELDS_PER_SECTION = 10
HEADER_CHARS = 150
BUTTON_CHARS = 75
VALUE_CHARS = 2000
BUTTONS_PER_ROW = 5
# chat.update refuses long messages (`msg_too_long`) well before the documented 40,000 characters: every message
# ModelBay may edit later stays under this many characters of block text.
MESSAGE_CHARS = 3800
STREAM_CHARS = 3500  # an answer streams into one message up to this, then continues in the next
FALLBACK_CHARS = 3000  # the notification text that goes with blocks
ACTION_PREFIX = "mb_run_"
FEEDBACK_ACTION = f"{ACTION_PREFIX}feedback"  # 👍/👎 feedback buttons: the pressed one's value is its payload
MARKDOWN_CHARS = 12000  # markdown_text in one streaming call, as documented
_RATE = re.compile(r"/rate (up|down) ")
_ICONS = {"success": ":white_check_mark: ", "warning": ":warning: ", "error": ":x: ", "info": ""}
# **bold** as Markdown reads it: the stars hug the words, the nearest pair wins, and it stays in one paragraph.
_BOLD = re.compile(r"\*\*(?=[^\s*])((?:(?!\*\*|\n[ \t]*\n).)*?[^\s*])\*\*", re.S)
# Code inside a paragraph, left as written: an inline span (a run of backticks to the next run as long, as
# CommonMark reads it), or a line indented by four spaces or a tab (an indented block, or code under a list item).
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(?:(?!\n[ \t]*\n).)+?(?<!`)\1(?!`)|^(?: {4}|\t)[^\n]*", re.S | re.M)
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
# Standard Markdown (a streamed answer's markdown_text, what markdown blocks take) escapes only & and <. Slack's
# formatting reference (docs.slack.dev, "Formatting message text", Escaping text) names &, < and > as its control
# characters, and every mention, channel link, special mention (<!channel>) and link (<url|text>) is a sequence
# that opens with <: with < escaped none can form, and with & escaped no &lt; of the model's can turn into one.
# A > alone starts nothing, and in Markdown it is the block quote marker (the markdown block reference lists
# "> this is a block quote"), so it stays as written: quotes render, and code keeps its > even where Slack would
# not decode an entity inside code (CommonMark leaves entities in code undecoded). The markdown block reference
# documents no entity handling at all, so &amp; and &lt; remain the one unverified cost inside code.
_MARKDOWN_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;"})


@dataclass
class SlackMessage:
    """One message to post: blocks and the notification text that goes with them."""

    blocks: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def chars(self) -> int:
        """Characters of text its blocks carry (what chat.update's length limit counts)."""
        return len(json.dumps(self.blocks, ensure_ascii=False))


def escape(text: str) -> str:
    """Text with &, < and > escaped as Slack asks, so it can never mention people or make links."""
    return text.translate(_ESCAPES)


def escaped_chars(text: str) -> int:
    """The characters a text takes once escaped (adds up over pieces of a text, as `split_parts` needs)."""
    return len(escape(text))


def escape_markdown(text: str) -> str:
    """Standard Markdown with & and < escaped, so it can never mention people or make Slack links (> stays: quotes)."""
    return text.translate(_MARKDOWN_ESCAPES)


def markdown_chars(text: str) -> int:
    """The characters Markdown takes once `escape_markdown`d (adds up over pieces of a text)."""
    return len(escape_markdown(text))


def mrkdwn(text: str) -> str:
    """Turn ModelBay's markdown into Slack mrkdwn: escape &, <, > (no stray mentions or links); **b** becomes *b*
    outside code. Code (fenced blocks as `split_parts` reads them, inline spans, indented lines) stays as written."""
    out, at = [], 0
    for start, end in fenced_blocks(text):
        out += [_prose(text[at:start]), escape(text[start:end])]
        at = end
    out.append(_prose(text[at:]))
    return "".join(out)


def _prose(text: str) -> str:
    """Text outside fenced code, escaped, with **bold** made *bold* except inside inline or indented code."""
    out, at = [], 0
    for code in _INLINE_CODE.finditer(text):
        out += [_BOLD.sub(r"*\1*", escape(text[at:code.start()])), escape(code.group())]
        at = code.end()
    out.append(_BOLD.sub(r"*\1*", escape(text[at:])))
    return "".join(out)


def slack_text(commands: CommandSet, command: str) -> Callable[[str], str]:
    """Rewrite ModelBay's command names as Slack users type them: `/models list` becomes `/modelbay models list`."""
    words = "|".join(sorted({re.escape(c.path[0]) for c in commands}, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.-])/({words})\b")
    return lambda text: pattern.sub(rf"{command} \1", text)


def section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    """A mrkdwn section block (cut to Slack's 3,000 characters), with an optional accessory such as a button."""
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_CHARS]}}
    if accessory:
        block["accessory"] = accessory
    return block


def feedback(up: Button, down: Button) -> dict[str, Any]:
    """Slack's 👍/👎 feedback buttons (a context_actions block); pressing one runs its line or opens its form."""
    def side(b: Button) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": b.label[:BUTTON_CHARS]}, "value": b.payload[:VALUE_CHARS],
                "accessibility_label": ("Good answer" if b is up else "Bad answer")}

    return {"type": "context_actions", "elements": [{"type": "feedback_buttons", "action_id": FEEDBACK_ACTION,
                                                     "positive_button": side(up), "negative_button": side(down)}]}


def context(text: str) -> dict[str, Any]:
    """A small-print context block."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_CHARS]}]}


def button(b: Button, action_id: str) -> dict[str, Any]:
    """A Block Kit button that runs its command line (or opens its form) when pressed: its payload is its value."""
    element: dict[str, Any] = {"type": "button", "action_id": action_id, "value": b.payload[:VALUE_CHARS],
                               "text": {"type": "plain_text", "text": b.label[:BUTTON_CHARS], "emoji": True}}
    if b.style in ("primary", "danger"):
        element["style"] = b.style
    return element


def progress_line(progress: Progress) -> str:
    """A text progress bar with status and detail: '▰▰▰▱▱▱▱▱▱▱ 30% · started · 1.2 GB of 3.9 GB · 12 MB/s'."""
    parts = [f"`{bar(progress)}` {progress.fraction:.0%}", progress.status]
    if progress.detail:
        parts.append(mrkdwn(progress.detail))
    return f"*{mrkdwn(progress.label)}* " + " · ".join(parts)


def _table_sections(table: Table) -> list[str]:
    """A table as monospaced text, cut into code blocks that each fit a section."""
    chunks, current = [], ""
    for line in table_lines(table):
        if current and len(current) + len(line) + 8 > SECTION_CHARS:
            chunks.append(current)
            current = ""
        current += mrkdwn(line)[:SECTION_CHARS - 8] + "\n"
    if current:
        chunks.append(current)
    return [f"```{chunk.rstrip()}```" for chunk in chunks]


def _body(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    icon = "" if reply.title else _ICONS[reply.tone]
    if reply.text:
        blocks += [section(mrkdwn(str(part))) for part in split_parts(icon + reply.text, SECTION_CHARS, escaped_chars)]
    inline = [f for f in reply.fields if f.inline]
    for start in range(0, len(inline), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{mrkdwn(f.name)}*\n{mrkdwn(f.value)}"[:FIELD_CHARS]}
            for f in inline[start:start + FIELDS_PER_SECTION]]})
    for f in reply.fields:
        if not f.inline:
            blocks += [section(p) for p in split_text(f"*{mrkdwn(f.name)}*\n{mrkdwn(f.value)}", SECTION_CHARS)]
    if reply.table:
        blocks += [section(chunk) for chunk in _table_sections(reply.table)]
    return blocks


def tail(reply: Reply, *, first_action: int = 0) -> list[dict[str, Any]]:
    """The blocks that end a reply: progress, buttons, footer and attachment names."""
    blocks: list[dict[str, Any]] = []
    if reply.progress:
        blocks.append(context(progress_line(reply.progress)))
    for row in range(0, len(reply.buttons), BUTTONS_PER_ROW):
        chunk = reply.buttons[row:row + BUTTONS_PER_ROW]
        blocks.append({"type": "actions", "elements": [
            button(b, f"{ACTION_PREFIX}{first_action + row + i}") for i, b in enumerate(chunk)]})
    if reply.footer:
        blocks.append(context(mrkdwn(reply.footer)))
    for attachment in reply.attachments:
        blocks.append(context(f":paperclip: {mrkdwn(attachment.filename)} ({len(attachment.data):,} bytes)"))
    return blocks


def answer_tail(reply: Reply, notices: list[str]) -> list[dict[str, Any]]:
    """The blocks under a streamed answer: its notices, 👍/👎 as feedback buttons, other buttons and the footer."""
    rating = [b for b in reply.buttons if _RATE.match(b.command)]
    blocks = [context(":information_source: " + mrkdwn(" ".join(notices)))] if notices else []
    if len(rating) == 2:
        up, down = sorted(rating, key=lambda b: not b.command.startswith("/rate up"))
        blocks.append(feedback(up, down))
    rest = [b for b in reply.buttons if b not in rating] if len(rating) == 2 else reply.buttons
    return blocks + tail(Reply(buttons=rest, footer=reply.footer, progress=reply.progress,
                               attachments=reply.attachments))


def fallback(reply: Reply) -> str:
    """The plain notification text of a reply (what Slack shows in notifications and to screen readers), escaped."""
    return escape(reply.plain()[:FALLBACK_CHARS]) or "ModelBay"


def render(reply: Reply, change: Callable[[str], str] | None = None, *,
           budget: int = MESSAGE_CHARS) -> list[SlackMessage]:
    """Render a reply as one or more messages: the first whole (header, body that fits, tail), the rest continuing.

    `change` rewrites the text people read (command names as Slack users type them, `slack_text`).
    """
    if change is not None:
        reply = rewrite(reply, change)
    head = []
    if reply.title:
        head.append({"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                "text": (_ICONS[reply.tone] + reply.title)[:HEADER_CHARS]}})
    ending = tail(reply)[:BLOCK_LIMIT - len(head) - 1]
    messages = [SlackMessage(list(head), fallback(reply))]
    first = True
    for block in _body(reply):
        current = messages[-1]
        reserve = (len(ending) + 1, SlackMessage(ending).chars() + 200) if first else (0, 0)
        fits = (len(current.blocks) + 1 + reserve[0] <= BLOCK_LIMIT
                and current.chars() + SlackMessage([block]).chars() + reserve[1] <= budget)
        if not fits and current.blocks:
            if first:
                current.blocks += [*ending, context(":thread: Continued in the thread.")]
                first = False
            messages.append(SlackMessage([], "(continued)"))
        messages[-1].blocks.append(block)
    if first:
        messages[0].blocks += ending
    if not messages[0].blocks:
        messages[0].blocks.append(section(" "))
    return messages
