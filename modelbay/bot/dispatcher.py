"""The dispatcher: turns a command line or a platform's typed options into a prepared Invocation, run for a Reply.

Every front end goes one way: `prepare_line` (typed lines, button payloads) or `prepare` (typed options) parses,
converts and checks the role once; the adapter reads what the invocation declares (`defer`, `opens_thread`) to
shape its answer, then awaits `Invocation.run()`, which renders any error through the error table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelbay.bot.context import Actor, Context
from modelbay.bot.errors import render_error
from modelbay.bot.reply import Reply
from modelbay.bot.spec import COMMANDS, Command, CommandSet, UnknownCommand
from modelbay.engine.chat.records import Place
from modelbay.engine.errors import NotAllowed

if TYPE_CHECKING:
    from modelbay.runtime import Runtime

__all__ = ["Dispatcher", "Invocation"]


@dataclass(frozen=True)
class Invocation:
    """A command ready to run: looked up, its values converted and the caller's role known, all once.

    `command` is None when the line named no command; `error` holds what went wrong while preparing (an unknown
    command, a bad argument), which `run` renders instead of calling the handler.
    """

    command: Command | None
    values: dict[str, Any]
    context: Context
    error: Exception | None = None
    reraise_unknown: bool = field(default=False, repr=False)

    @property
    def allowed(self) -> bool:
        """Whether the caller's role may run the command."""
        return self.command is not None and self.context.has_role(self.command.role)

    @property
    def ready(self) -> bool:
        """Whether running it calls its handler (prepared without error, and allowed)."""
        return self.error is None and self.allowed

    @property
    def defer(self) -> bool:
        """Whether adapters show that it is working before running it (a slow command; refusals are quick)."""
        return self.ready and self.command is not None and self.command.slow

    @property
    def opens_thread(self) -> bool:
        """Whether adapters open a thread for it and run it there (a refusal or a mistake needs no thread)."""
        return self.ready and self.command is not None and self.command.opens_thread

    def at(self, place: Place) -> Invocation:
        """The same invocation run at another place (the thread an adapter opened for it)."""
        return dataclasses.replace(self, context=dataclasses.replace(self.context, place=place))

    async def run(self) -> Reply:
        """Call the handler and return its Reply; any error, from preparing or from the handler, as its Reply."""
        try:
            if self.error is not None:
                raise self.error
            assert self.command is not None  # no error: the command was found
            if not self.allowed:
                raise NotAllowed(self.command.name, self.context.role, self.command.role)
            return await self.command.handler(self.context, **self.values)
        except Exception as exc:
            return render_error(exc, reraise_unknown=self.reraise_unknown)


class Dispatcher:
    """Prepares invocations of the command set for actors: parsing, conversion and the role, in one place."""

    def __init__(self, runtime: Runtime, commands: CommandSet = COMMANDS, *, reraise_unknown: bool = False) -> None:
        self.runtime = runtime
        self.commands = commands
        self.reraise_unknown = reraise_unknown

    def context(self, actor: Actor, place: Place | None = None) -> Context:
        """Return the handler context for an actor, with the role the settings grant them."""
        settings = self.runtime.settings
        return Context(self.runtime, actor, actor.role(settings.roles, settings.default_role), place)

    def prepare_line(self, line: str, actor: Actor, place: Place | None = None,
                     more: dict[str, Any] | None = None) -> Invocation:
        """Prepare a typed line such as '/models info qwen2.5-0.5b-instruct' (or a button's line, with the values
        its form asked for in `more`)."""
        ctx = self.context(actor, place)
        try:
            cmd, values = self.commands.parse(line, more)
        except Exception as exc:  # noqa: BLE001 - rendered by run()
            return Invocation(None, {}, ctx, exc, self.reraise_unknown)
        return Invocation(cmd, values, ctx, None, self.reraise_unknown)

    def prepare(self, path: tuple[str, ...], options: dict[str, Any], actor: Actor,
                place: Place | None = None) -> Invocation:
        """Prepare a command from a platform's typed options (Discord app commands, REST bodies); None is unset."""
        ctx = self.context(actor, place)
        cmd = self.commands.get(path)
        try:
            if cmd is None:
                raise UnknownCommand("/" + " ".join(path), self.commands.suggest(" ".join(path)))
            values = cmd.bind([], {k: v for k, v in options.items() if v is not None})
        except Exception as exc:  # noqa: BLE001 - rendered by run()
            return Invocation(cmd, {}, ctx, exc, self.reraise_unknown)
        return Invocation(cmd, values, ctx, None, self.reraise_unknown)

    async def dispatch_line(self, line: str, actor: Actor, place: Place | None = None) -> Reply:
        """Prepare and run a typed line: its Reply (an error's Reply when it fails)."""
        return await self.prepare_line(line, actor, place).run()

    async def dispatch(self, path: tuple[str, ...], options: dict[str, Any], actor: Actor,
                       place: Place | None = None) -> Reply:
        """Prepare and run a command from typed options: its Reply (an error's Reply when it fails)."""
        return await self.prepare(path, options, actor, place).run()
