"""The Reply model: what a command answers, rendered by each adapter in its platform's own form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Attachment", "Button", "Field", "Progress", "Reply", "Table"]

Tone = Literal["info", "success", "warning", "error"]


@dataclass(frozen=True)
class Field:
    """A labelled value (an embed field, a Block Kit field, a console key/value row)."""

    name: str
    value: str
    inline: bool = True


@dataclass(frozen=True)
class Table:
    """Rows under column headings."""

    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Button:
    """A button that runs a command line when pressed; the line is all it needs, so it survives restarts."""

    label: str
    command: str
    style: Literal["primary", "secondary", "success", "danger"] = "secondary"


@dataclass(frozen=True)
class Progress:
    """A job whose progress the adapter follows and shows, updating in place."""

    job_id: str
    label: str
    fraction: float = 0.0
    status: str = "queued"
    detail: str | None = None  # the latest progress message: file, bytes, speed, time left
    done: tuple[Button, ...] = ()  # buttons that replace the reply's own once the job finished (or is ready)


@dataclass(frozen=True)
class Attachment:
    """An image or a file sent with the reply."""

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"

    @property
    def is_image(self) -> bool:
        """Whether platforms should show it inline."""
        return self.content_type.startswith("image/")


@dataclass
class Reply:
    """A platform-neutral answer: text, fields, a table, progress, buttons and attachments."""

    text: str = ""
    title: str | None = None
    tone: Tone = "info"
    fields: list[Field] = field(default_factory=list)
    table: Table | None = None
    progress: Progress | None = None
    buttons: list[Button] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    footer: str | None = None
    ephemeral: bool = False

    def plain(self) -> str:
        """Render as plain text: for logs, tests and platforms without rich formatting."""
        lines = [f"**{self.title}**"] if self.title else []
        if self.text:
            lines.append(self.text)
        lines += [f"{f.name}: {f.value}" for f in self.fields]
        if self.table:
            lines.append(" | ".join(self.table.columns))
            lines += [" | ".join(row) for row in self.table.rows]
        if self.progress:
            lines.append(f"{self.progress.label}: {self.progress.status} {self.progress.fraction:.0%}")
        lines += [f"[{b.label}] {b.command}" for b in self.buttons]
        lines += [f"(attachment {a.filename})" for a in self.attachments]
        if self.footer:
            lines.append(self.footer)
        return "\n".join(lines)
