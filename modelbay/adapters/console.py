"""The terminal console: the same slash commands in a REPL, rendered with rich; scriptable on stdin."""

from __future__ import annotations

import asyncio
import getpass
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from rich.console import Console as RichConsole
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from rich.text import Text

from modelbay.bot import COMMANDS, Actor, CommandSet, Dispatcher, Reply
from modelbay.bot.conversation import answer_footer, converse
from modelbay.bot.errors import render_error
from modelbay.bot.progress import describe, events_of, finished, following
from modelbay.bot.reply import Button
from modelbay.bot.spec import ArgType
from modelbay.engine.chat.records import Answered, AnswerRecord, Delta, Notice, Place
from modelbay.engine.jobs.progress import ProgressEvent

__all__ = ["ConsoleApp", "render"]

_TONES = {"info": "cyan", "success": "green", "warning": "yellow", "error": "red"}
_QUIT = {"/quit", "/exit", "/q"}


_FENCED = re.compile(r"```[^\n`]*\n(.*?)\n?```", re.S)


def _inline(text: str) -> str:
    return re.sub(r"\*\*([^*\n]+)\*\*", r"[bold]\1[/]", re.sub(r"`([^`]+)`", r"[bold cyan]\1[/]", escape(text)))


def _markup(text: str) -> str:
    """Escape rich markup in text, then show `code` spans in bold cyan, **bold** in bold and fenced code as it is."""
    parts, last = [], 0
    for block in _FENCED.finditer(text):
        parts += [_inline(text[last:block.start()]), escape(block.group(1))]
        last = block.end()
    return "".join([*parts, _inline(text[last:])])


def _typed(button: Button) -> str:
    """The line to type for a button: one that opens a form (no forms here) shows what the form asks, `arg:<arg>`."""
    asks = button.form.asks if button.form is not None else ()
    return " ".join([button.command, *(f"{ask.arg}:<{ask.arg}>" for ask in asks if not ask.optional)])


def render(reply: Reply) -> RenderableType:
    """Render a Reply as rich renderables (its attachments are `attachment_lines`, printed below it)."""
    colour = _TONES[reply.tone]
    parts: list[RenderableType] = []
    if reply.text:
        parts.append(_markup(reply.text))
    if reply.fields:
        grid = RichTable.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for f in reply.fields:
            grid.add_row(escape(f.name), _markup(f.value))
        parts.append(grid)
    if reply.table:
        table = RichTable(header_style="bold", show_edge=False)
        for column in reply.table.columns:
            table.add_column(column, overflow="fold")  # scripts need whole names, never an ellipsis
        for row in reply.table.rows:
            table.add_row(*(_markup(cell) for cell in row))
        parts.append(table)
    if reply.buttons:
        parts.append("  ".join(f"[reverse] {escape(b.label)} [/] [dim]{escape(_typed(b))}[/]" for b in reply.buttons))
    if reply.footer:
        parts.append(f"[dim]{_markup(reply.footer)}[/]")
    body = Group(*parts) if parts else ""
    if reply.title:
        return Panel(body, title=f"[bold {colour}]{escape(reply.title)}[/]", title_align="left", border_style=colour,
                     expand=False)
    return Group(*[f"[{colour}]{p}[/]" if isinstance(p, str) and reply.tone != "info" else p for p in parts])


def attachment_lines(reply: Reply, saved: dict[str, Path] | None = None) -> list[Text]:
    """One line per attachment: its path once `saved` to a file (else its name) and size. Print them with
    `soft_wrap=True`: a path is never cut or split inside a card's borders, so it can be copied whole."""
    return [Text(f"attachment: {(saved or {}).get(a.filename) or a.filename} ({len(a.data):,} bytes)", style="dim")
            for a in reply.attachments]


@contextmanager
def _on_ctrl_c(action: Callable[[], None]) -> Iterator[None]:
    """Make Ctrl-C run action (each time it is pressed) instead of interrupting the console, for the block.

    asyncio.run's own handler cancels the whole console on Ctrl-C and raises KeyboardInterrupt at the second one
    in a session; an answer or a job being followed needs Ctrl-C to mean "stop that" every time.
    """
    if threading.current_thread() is not threading.main_thread():  # signals arrive only on the main thread
        yield
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    # The handler runs between two bytecodes of the main thread: hand the action to the loop, which it wakes.
    signal.signal(signal.SIGINT, lambda signum, frame: loop.call_soon_threadsafe(action))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _CommandCompleter(Completer):
    """Completes command names, argument names, choices, model names and job ids."""

    def __init__(self, commands: CommandSet, dispatcher: Dispatcher, actor: Actor) -> None:
        self._commands = commands
        self._dispatcher = dispatcher
        self._actor = actor

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        words = text[1:].split(" ")
        if len(words) <= 2:
            typed = " ".join(words)
            for cmd in self._commands:
                name = " ".join(cmd.path)
                if name.startswith(typed) and name != typed:
                    yield Completion("/" + name, start_position=-len(text))
        cmd = self._commands.get(tuple(w.lower() for w in words[:2])) or self._commands.get((words[0].lower(),))
        if cmd is None or not words[-1:]:
            return
        current = words[-1]
        key, sep, prefix = current.partition(":")
        if sep:  # name:value - complete the value of that argument
            for arg in cmd.args:
                if arg.name == key:
                    yield from (Completion(v, start_position=-len(prefix)) for v in self._values(arg)
                                if v.startswith(prefix) and v != prefix)
            return
        for arg in cmd.args:
            for value in self._values(arg):
                if value.startswith(current) and value != current:
                    yield Completion(value, start_position=-len(current))
            option = f"{arg.name}:"
            if option.startswith(current) and current != option and len(words) > len(cmd.path):
                yield Completion(option, start_position=-len(current))

    def _values(self, arg) -> list[str]:  # noqa: ANN001
        runtime = self._dispatcher.runtime
        if arg.choices:
            return list(arg.choices)
        if arg.type is ArgType.BOOLEAN:
            return []
        if arg.autocomplete == "model":
            return runtime.registry.names()
        if arg.autocomplete == "job":
            return [j.id for j in runtime.jobs.list(requester=self._actor.key, active=True)]
        return []


class _ProgressDisplay:
    """A live bar on a terminal; on a pipe, one line per status change or quarter of progress."""

    def __init__(self, out: RichConsole, label: str) -> None:
        self._out = out
        self._label = label
        self._bar: Progress | None = None
        self._seen: tuple[str, int] | None = None

    def __enter__(self) -> _ProgressDisplay:
        if self._out.is_terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=self._out,
                                 transient=True)
            self._bar.start()
            self._task = self._bar.add_task(escape(self._label), total=1.0, message="")
        return self

    def update(self, event: ProgressEvent, line: str) -> None:
        """Show one progress event, described in one line (its message and measurements)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=event.progress, message=escape(line))
            return
        mark = (event.status, int(event.progress * 4))
        if mark != self._seen:
            self._seen = mark
            self._out.print(f"{self._label}: {event.status} {event.progress:.0%} {line}".rstrip(),
                            markup=False, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


class ConsoleApp:
    """A REPL over the dispatcher: interactive with history and completion on a TTY, line by line otherwise."""

    def __init__(self, dispatcher: Dispatcher, *, stdin: TextIO | None = None, out: RichConsole | None = None,
                 history: Path | None = None) -> None:
        self.dispatcher = dispatcher
        self.stdin = stdin or sys.stdin
        self.out = out or RichConsole(width=None if sys.stdout.isatty() else 120)
        self.history = history
        self.actor = Actor("console", getpass.getuser(), getpass.getuser())
        self.place = Place("console", "terminal")

    @property
    def interactive(self) -> bool:
        """Whether a person is typing (stdin is a terminal)."""
        return self.stdin.isatty()

    def run(self) -> int:
        """Read and run commands until EOF or /quit; return the exit status."""
        return asyncio.run(self._loop())

    async def _loop(self) -> int:
        session = None
        if self.interactive:
            session = PromptSession(
                history=FileHistory(str(self.history)) if self.history else None,
                completer=_CommandCompleter(COMMANDS, self.dispatcher, self.actor),
                complete_while_typing=False,
            )
        while True:
            try:
                line = await self._read(session)
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.lower() in _QUIT:
                return 0
            await self.handle(line)

    async def _read(self, session: PromptSession | None) -> str:
        if session is not None:
            return await session.prompt_async("modelbay> ")
        line = await asyncio.to_thread(self.stdin.readline)
        if not line:
            raise EOFError
        return line

    async def handle(self, line: str) -> None:
        """Run one command line (or send a chat message) and print its reply, following any job it starts."""
        if not line.startswith("/"):
            await self.say(line)
            return
        reply = await self.dispatcher.prepare_line(line, self.actor, self.place).run()
        await self.show(reply)
        if following(reply):
            await self.follow(reply)

    async def show(self, reply: Reply) -> None:
        """Print a reply, then its attachments, saved under HOME/files, by their paths."""
        saved = await asyncio.to_thread(self.keep, reply)
        self.out.print(render(reply))
        for line in attachment_lines(reply, saved):
            self.out.print(line, soft_wrap=True)

    def keep(self, reply: Reply) -> dict[str, Path]:
        """Write a reply's attachments (a chart) under HOME/files, where a terminal can open them; their paths."""
        if not reply.attachments:
            return {}
        folder = self.dispatcher.runtime.settings.home / "files"
        folder.mkdir(parents=True, exist_ok=True)
        saved = {}
        for attachment in reply.attachments:
            path = folder / Path(attachment.filename).name
            path.write_bytes(attachment.data)
            saved[attachment.filename] = path
        return saved

    async def say(self, text: str) -> None:
        """Send a message to the chat open here and print the answer as it streams in; Ctrl-C stops the answer."""
        ctx = self.dispatcher.context(self.actor, self.place)
        stop = threading.Event()
        started = False
        try:
            with _on_ctrl_c(stop.set):
                async for event in converse(ctx, text, stop):
                    if isinstance(event, Notice):
                        self.out.print(f"[yellow]{escape(event.text)}[/]", highlight=False)
                    elif isinstance(event, Delta):
                        started = True
                        self.out.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
                        self.out.file.flush()
                    elif isinstance(event, Answered):
                        self._answered(event.answer, started)
        except Exception as exc:  # nothing streamed yet: the chat could not start (not served, no chat here)
            if started:
                self.out.print()
            self.out.print(render(render_error(exc, reraise_unknown=self.dispatcher.reraise_unknown)))

    def _answered(self, answer: AnswerRecord, started: bool) -> None:
        if started:
            self.out.print()
        if answer.note:
            self.out.print(f"[yellow]{escape(answer.note)}[/]", highlight=False)
        self.out.print(f"[dim]{escape(answer_footer(answer))} · /rate up|down [reason][/]", highlight=False)

    async def follow(self, reply: Reply) -> None:
        """Show the progress of a reply's job until it ends, then the reply that replaces it (a training run's
        results, its files saved); Ctrl-C asks to cancel it."""
        assert reply.progress is not None
        job_id, label = reply.progress.job_id, reply.progress.label
        last = None
        task = asyncio.current_task()
        try:
            with _on_ctrl_c(task.cancel if task is not None else lambda: None), \
                    _ProgressDisplay(self.out, label) as display:
                async for event in events_of(self.dispatcher.runtime.jobs, reply.progress):
                    last = event
                    display.update(event, describe(event))
        except (KeyboardInterrupt, asyncio.CancelledError):
            if task is not None:
                task.uncancel()  # Ctrl-C means "cancel the job", not "leave the console"
            if reply.progress.events is None:  # not a job (an arena battle): leaving its events stopped it
                await self.handle(f"/jobs cancel {job_id}")
        except Exception as exc:  # the queue or database went away: say so and keep the console running
            self.out.print(render(render_error(exc, reraise_unknown=self.dispatcher.reraise_unknown)))
        if last is not None and last.detail.ready and not last.terminal:
            self.out.print(f"[green]{escape(label)} {job_id}: {escape(last.message or 'ready')}[/]", highlight=False)
        if last is not None and last.terminal:
            tone = {"finished": "green", "failed": "red", "canceled": "yellow"}[last.status]
            said = last.message and last.message.lower() not in (last.status, "done")
            message = f" - {escape(last.message)}" if said else ""
            self.out.print(f"[{tone}]{escape(label)} {job_id}: {last.status}{message}[/]", highlight=False)
            try:
                final = await finished(reply, last)
            except Exception as exc:  # noqa: BLE001 - the job ended; only its last card is missing
                final = render_error(exc, reraise_unknown=self.dispatcher.reraise_unknown)
            if final is not None:
                await self.show(final)
