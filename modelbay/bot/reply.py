"""The Reply model: what a command answers, rendered by each adapter in its platform's own form."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from modelbay.engine.jobs.progress import ProgressEvent

__all__ = ["FORMS", "Ask", "Attachment", "Button", "Field", "Form", "Progress", "Reply", "Table", "form"]

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
class Ask:
    """One value a form asks for: an argument of the command it completes, picked from choices or typed."""

    arg: str  # the argument of the command it fills, e.g. "reason"
    label: str  # the question, e.g. "What was wrong?"
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) pairs to pick from; none: free text
    placeholder: str | None = None
    optional: bool = False
    skip: str | None = None  # where a platform asks for the choice alone (a menu): the label of choosing none
    long: bool = False  # several lines of text
    max_length: int = 4000


@dataclass(frozen=True)
class Form:
    """What a button asks for before it runs: the line it completes (with `{}` for the button's value) and asks.

    Forms are registered by name (`form`), and a button that opens one carries only the form's name and its value
    (`Button.payload`), so a form works after a restart.
    """

    name: str  # short and stable: it travels in button payloads ("down", "sys")
    line: str  # e.g. "/rate down message:{}"; the value fills a named argument, so it is never read as another
    title: str  # with `{}` for the value, e.g. "Rate answer #{}"
    asks: tuple[Ask, ...]
    submit: str = "Send"
    legacy: bool = False  # buttons sent before forms existed carry the whole line: pressing one opens the form
    question: str | None = None  # asked in one message (a menu) instead of title and first label, `{}` = value

    def question_for(self, value: str) -> str:
        """The one line a platform asks in a message (a menu) for this value: `question`, else title: first label."""
        return self.question.format(value) if self.question else f"{self.title.format(value)}: {self.asks[0].label}"

    def line_for(self, value: str) -> str:
        """The command line that a button with this value completes (the value quoted as one word)."""
        return self.line.format(shlex.quote(value))

    def button(self, label: str, value: object,
               style: Literal["primary", "secondary", "success", "danger"] = "secondary") -> Button:
        """A button that opens this form for `value` and then runs the completed line."""
        return Button(label, self.line_for(str(value)), style, self, str(value))

    def value_of(self, line: str) -> str | None:
        """The value of a line this form completes, as a legacy button carries it (one word), or None."""
        before, _, after = self.line.partition("{}")
        if not (self.legacy and line.startswith(before) and line.endswith(after)):
            return None
        value = line[len(before):len(line) - len(after)]
        return value if value and not any(c.isspace() for c in value) else None


FORMS: dict[str, Form] = {}
PAYLOAD_PREFIX = "mb:"  # a payload that opens a form: mb:<form>:<value>; any other payload is a command line


def form(name: str, line: str, title: str, asks: tuple[Ask, ...], *, submit: str = "Send",
         legacy: bool = False, question: str | None = None) -> Form:
    """Declare and register a form (names are unique: a later one replaces an earlier one)."""
    FORMS[name] = Form(name, line, title, asks, submit, legacy, question)
    return FORMS[name]


@dataclass(frozen=True)
class Button:
    """A button that runs a command line when pressed, or first opens a form that completes the line.

    What it carries (`payload`) is all it needs, so it survives restarts: its command line, or its form's name and
    its value.
    """

    label: str
    command: str
    style: Literal["primary", "secondary", "success", "danger"] = "secondary"
    form: Form | None = None  # asks for something first (`Form.button` makes these)
    value: str = ""  # what fills the form's line: a message number, a model name

    @property
    def payload(self) -> str:
        """What a platform stores in the button: `mb:<form>:<value>` for a form, else the command line."""
        return f"{PAYLOAD_PREFIX}{self.form.name}:{self.value}" if self.form is not None else self.command

    @classmethod
    def pressed(cls, payload: str) -> Button:
        """The button a pressed payload stands for (a form's, or one running a line); its label is unknown.

        A line that a legacy form completes opens that form, as the button did before it carried the form.
        """
        name, sep, value = payload.removeprefix(PAYLOAD_PREFIX).partition(":")
        if payload.startswith(PAYLOAD_PREFIX) and sep and name in FORMS:
            return FORMS[name].button("", value)
        for legacy in FORMS.values():
            if (old := legacy.value_of(payload)) is not None:
                return legacy.button("", old)
        return cls("", payload)


@dataclass(frozen=True)
class Progress:
    """A job whose progress the adapter follows and shows, updating in place."""

    job_id: str
    label: str
    fraction: float = 0.0
    status: str = "queued"
    detail: str | None = None  # the latest progress message: file, bytes, speed, time left
    done: tuple[Button, ...] = ()  # buttons that replace the reply's own once the job finished (or is ready)
    # How a kind shows more than the progress line, without any adapter knowing the kind: `view` redraws the reply
    # for each event (a training run's step, loss and sparkline), `finish` builds the reply that replaces it once
    # the job ended, with its files (a training run's results and loss chart). Both stay in memory, with the follow.
    view: Callable[[Reply, ProgressEvent], Reply] | None = field(default=None, compare=False, repr=False)
    finish: Callable[[ProgressEvent], Awaitable[Reply]] | None = field(default=None, compare=False, repr=False)
    # Where the events come from when it is not a job (an arena battle streaming in this process): followed instead
    # of the job's channel, and ended (not canceled as a job) when the reader leaves.
    events: Callable[[], AsyncIterator[ProgressEvent]] | None = field(default=None, compare=False, repr=False)


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

    @classmethod
    def png(cls, path: Path | None, filename: str) -> Attachment | None:
        """A PNG file a job drew (a chart), or None when there is none or this host cannot read it."""
        if path is None:
            return None
        try:
            return cls(filename, path.read_bytes(), "image/png")
        except OSError:
            return None


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
