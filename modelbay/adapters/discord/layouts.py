"""Discord rendering of a Reply as layout cards: Discord's components-v2 messages (discord.py's `LayoutView`).

A card is one message: a container with the reply's colour, its text in text displays that take the whole width
of the chat (code included, where an embed's description is a narrow box), the footer in small print under a
divider, and the buttons in action rows inside the container. Discord counts 4,000 characters across all text
displays of a message and 40 components (nested ones included); such a message has no content and no embeds, and
keeps its components-v2 flag for every later edit. A Reply that does not fit one card becomes several: the first
has the title, fields, progress, footer and buttons with as much of the text as fits; the rest of the text follows,
code blocks closed and reopened at each cut.

Which surfaces are cards: answers streamed into a chat, the chat card, and the cards of jobs followed in place
(their progress bar and the full-width text read better there, and their buttons sit with the text they belong to).
Command replies stay embeds: their fields sit side by side in an embed, which a card has no way to show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modelbay.adapters.discord.embeds import COLOURS, cut_body, progress_value
from modelbay.bot.reply import Button, Reply
from modelbay.bot.text import rewrite, table_lines

__all__ = [
    "CARD_BUTTONS", "ROW_BUTTONS", "TEXT_CHARS", "Card", "cards", "fit_notes", "small_print",
]

TEXT_CHARS = 4000  # characters across every text display of one message
ROW_BUTTONS = 5  # buttons in one action row
# Buttons a card shows: with their 4 rows, the container, at most 5 texts and the divider, 31 of the 40 components
# Discord allows in one message, nested ones included.
CARD_BUTTONS = 20
TITLE_CHARS = 256
PART_CHARS = 512  # the most a progress line, the files line or the footer takes of a card's text
_CONTINUED = " · continued below"


@dataclass(frozen=True)
class Card:
    """One components-v2 message: text displays in a coloured container, small print under a divider, buttons."""

    colour: int
    texts: tuple[str, ...]  # text displays, top to bottom (Markdown; none empty)
    notes: tuple[str, ...] = ()  # lines of small print under the divider: notices, the footer
    buttons: tuple[Button, ...] = ()

    @property
    def small_print(self) -> str:
        """The notes as one text display of subtext lines ('' without notes)."""
        return small_print(self.notes)

    def chars(self) -> int:
        """The characters Discord counts towards the message's 4,000: every text display's content."""
        return sum(map(len, self.texts)) + len(self.small_print)


def small_print(notes: tuple[str, ...] | list[str]) -> str:
    """Lines as Discord's subtext ('-# line'), one per line of each note."""
    return "\n".join(f"-# {line}" for note in notes for line in note.splitlines() if line.strip())


def _body(reply: Reply) -> str:
    """The reply's text, then its table as a code block, then its fields as bold names and values."""
    text = reply.text
    if reply.table:
        text = (text + "\n" if text else "") + "```\n" + "\n".join(table_lines(reply.table)) + "\n```"
    fields = "\n".join(f"**{f.name}**: {f.value}" if f.name else f.value for f in reply.fields)
    return "\n\n".join(t for t in (text, fields) if t)


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def cards(reply: Reply, change: Callable[[str], str] | None = None) -> list[Card]:
    """Render a reply as one or more cards, each within Discord's 4,000 characters and 40 components (`change`
    rewrites the text people read, e.g. command names as Discord shows them)."""
    if change is not None:
        reply = rewrite(reply, change)
    colour = COLOURS[reply.tone]
    head = [f"### {_cut(reply.title, TITLE_CHARS)}"] if reply.title else []
    tail = []
    if reply.progress:
        tail.append(_cut(f"**{reply.progress.label}**: {progress_value(reply.progress)}", PART_CHARS))
    if reply.attachments:
        tail.append(_cut("**Files**: " + ", ".join(a.filename for a in reply.attachments), PART_CHARS))
    footer = _cut(reply.footer or "", PART_CHARS - len(_CONTINUED))
    room = TEXT_CHARS - sum(map(len, head + tail)) - len(small_print([footer + _CONTINUED]))
    pieces = cut_body(_body(reply), room, TEXT_CHARS)
    notes = ((footer + _CONTINUED if len(pieces) > 1 else footer),) if footer else ()
    texts = tuple(head + pieces[:1] + tail) or ("\u200b",)
    shown = [Card(colour, texts, notes, tuple(reply.buttons[:CARD_BUTTONS]))]
    shown += [Card(colour, (piece,)) for piece in pieces[1:]]
    return shown


def fit_notes(notes: list[str], room: int) -> tuple[str, ...]:
    """Notes whose small print takes at most `room` characters: the longest is cut (ending in '…') until they fit."""
    notes = [n for n in notes if n.strip()]
    while notes and len(small_print(notes)) > room:
        over = len(small_print(notes)) - room
        longest = max(range(len(notes)), key=lambda i: len(notes[i]))
        if len(notes[longest]) <= over + 1:
            notes.pop(longest)
        else:
            notes[longest] = notes[longest][:len(notes[longest]) - over - 1] + "…"
    return tuple(notes)
