"""Discord rendering of a Reply: embeds and buttons within Discord's limits.

An embed holds a 256-char title, a 4,096-char description, 25 fields (1,024 chars each), a 2,048-char footer and
6,000 characters in all; a message holds 2,000 chars of content and 25 buttons in 5 rows. A Reply that does not
fit one message becomes several: the first has the title, fields, progress, footer and buttons with as much of
the text as fits; the rest of the text follows in more messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelbay.bot.reply import Button, Progress, Reply
from modelbay.bot.text import bar, rewrite, split_parts, table_lines

if TYPE_CHECKING:
    from modelbay.adapters.discord.layouts import Card

__all__ = [
    "COLOURS", "CONTENT_CHARS", "DESCRIPTION_CHARS", "EMBED_CHARS", "FIELD_LIMIT", "FIELD_VALUE_CHARS",
    "FOOTER_CHARS", "DiscordMessage", "cut_body", "embed_chars", "progress_value", "render",
]

TITLE_CHARS = 256
DESCRIPTION_CHARS = 4096
FIELD_LIMIT = 25
FIELD_NAME_CHARS = 256
FIELD_VALUE_CHARS = 1024
FOOTER_CHARS = 2048
EMBED_CHARS = 6000
CONTENT_CHARS = 2000
BUTTONS = 25
BUTTON_LABEL_CHARS = 80
COLOURS = {"info": 0x5865F2, "success": 0x57F287, "warning": 0xFEE75C, "error": 0xED4245}


@dataclass(frozen=True)
class DiscordMessage:
    """One message to send or show: plain content, embeds (as Discord's JSON) and buttons, or a layout card."""

    content: str = ""
    embeds: tuple[dict[str, Any], ...] = ()
    buttons: tuple[Button, ...] = field(default_factory=tuple)
    card: Card | None = None  # a components-v2 message: no content, no embeds, its buttons inside the card


def embed_chars(embed: dict[str, Any]) -> int:
    """The characters Discord counts towards an embed's 6,000: title, description, fields, footer, author."""
    total = len(embed.get("title", "")) + len(embed.get("description", ""))
    total += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    total += len(embed.get("footer", {}).get("text", "")) + len(embed.get("author", {}).get("name", ""))
    return total


def progress_value(progress: Progress) -> str:
    """A progress field: '`▰▰▰▱▱▱▱▱▱▱` 30% · started · 1.2 GB of 3.9 GB · 12 MB/s'."""
    parts = [f"`{bar(progress)}` {progress.fraction:.0%}", progress.status]
    if progress.detail:
        parts.append(progress.detail)
    return " · ".join(parts)[:FIELD_VALUE_CHARS]


def _body(reply: Reply) -> str:
    text = reply.text
    if reply.table:
        lines = table_lines(reply.table)
        text = (text + "\n" if text else "") + "```\n" + "\n".join(lines) + "\n```"
    return text


def cut_body(body: str, first_room: int, limit: int = DESCRIPTION_CHARS) -> list[str]:
    """The body cut into pieces of at most `limit` (the first with less room, `first_room`), code blocks closed and
    reopened at each cut; embeds' descriptions and cards' text displays alike."""
    if not body:
        return []
    first = split_parts(body, first_room)[0]
    rest = body[len(first.text):]
    return [str(first)] + ([str(p) for p in split_parts(rest, limit, fence=first.close)] if rest else [])


def render(reply: Reply, change: Callable[[str], str] | None = None) -> list[DiscordMessage]:
    """Render a reply as one or more messages of one embed each, within every limit (`change` rewrites the text
    people read, e.g. command names as Discord shows them)."""
    if change is not None:
        reply = rewrite(reply, change)
    colour = COLOURS[reply.tone]
    head: dict[str, Any] = {"type": "rich", "color": colour}
    if reply.title:
        head["title"] = reply.title[:TITLE_CHARS]
    fields = [{"name": f.name[:FIELD_NAME_CHARS] or "\u200b", "value": (f.value or "-")[:FIELD_VALUE_CHARS],
               "inline": f.inline} for f in reply.fields]
    if reply.progress:
        fields.append({"name": reply.progress.label[:FIELD_NAME_CHARS], "value": progress_value(reply.progress),
                       "inline": False})
    if reply.attachments:
        names = ", ".join(a.filename for a in reply.attachments)
        fields.append({"name": "Files", "value": names[:FIELD_VALUE_CHARS], "inline": False})
    if reply.footer:
        head["footer"] = {"text": reply.footer[:FOOTER_CHARS]}
    groups = _pack(fields, EMBED_CHARS - embed_chars(head) - 500)  # the first embed keeps room for some text
    head["fields"] = groups[0] if groups else []
    room = min(DESCRIPTION_CHARS, EMBED_CHARS - embed_chars(head) - 40)
    pieces = cut_body(_body(reply), max(200, room))
    first = dict(head)
    if pieces:
        first["description"] = pieces[0]
    if len(pieces) > 1 and "footer" in first:
        first["footer"] = {"text": (reply.footer or "")[:FOOTER_CHARS - 30] + " · continued below"}
    messages = [DiscordMessage(embeds=(first,), buttons=tuple(reply.buttons[:BUTTONS]))]
    for piece in pieces[1:]:
        messages.append(DiscordMessage(embeds=({"type": "rich", "color": colour, "description": piece},)))
    for group in groups[1:]:
        messages.append(DiscordMessage(embeds=({"type": "rich", "color": colour, "fields": group},)))
    return messages


def _pack(fields: list[dict[str, Any]], first_room: int) -> list[list[dict[str, Any]]]:
    """Group fields into embeds of at most 25 fields and the character budget (the first has less room)."""
    groups: list[list[dict[str, Any]]] = [[]]
    used, room = 0, first_room
    for f in fields:
        size = len(f["name"]) + len(f["value"])
        if groups[-1] and (len(groups[-1]) == FIELD_LIMIT or used + size > room):
            groups.append([])
            used, room = 0, EMBED_CHARS - 100
        groups[-1].append(f)
        used += size
    return groups if groups[0] else []
