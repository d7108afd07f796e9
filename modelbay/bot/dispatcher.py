"""The dispatcher: turns a command line or a platform's typed options into a handler call and a Reply."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelbay.bot.context import Actor, Context
from modelbay.bot.errors import render_error
from modelbay.bot.reply import Reply
from modelbay.bot.spec import COMMANDS, Command, CommandSet, UnknownCommand
from modelbay.engine.chat.records import Place
from modelbay.engine.errors import NotAllowed

if TYPE_CHECKING:
    from modelbay.runtime import Runtime

__all__ = ["Dispatcher"]


class Dispatcher:
    """Checks the role, runs the handler and renders any error through the error table."""

    def __init__(self, runtime: Runtime, commands: CommandSet = COMMANDS, *, reraise_unknown: bool = False) -> None:
        self.runtime = runtime
        self.commands = commands
        self.reraise_unknown = reraise_unknown

    def context(self, actor: Actor, place: Place | None = None) -> Context:
        """Return the handler context for an actor, with the role the settings grant them."""
        settings = self.runtime.settings
        return Context(self.runtime, actor, actor.role(settings.roles, settings.default_role), place)

    async def dispatch_line(self, line: str, actor: Actor, place: Place | None = None) -> Reply:
        """Run a typed line such as '/models info qwen2.5-0.5b-instruct'."""
        try:
            cmd, values = self.commands.parse(line)
        except Exception as exc:
            return render_error(exc, reraise_unknown=self.reraise_unknown)
        return await self._run(cmd, values, actor, place)

    async def dispatch(self, path: tuple[str, ...], options: dict[str, Any], actor: Actor,
                       place: Place | None = None) -> Reply:
        """Run a command from a platform's typed options (Discord app commands, REST bodies)."""
        try:
            cmd = self.commands.get(path)
            if cmd is None:
                raise UnknownCommand("/" + " ".join(path), self.commands.suggest(" ".join(path)))
            values = cmd.bind([], {k: v for k, v in options.items() if v is not None})
        except Exception as exc:
            return render_error(exc, reraise_unknown=self.reraise_unknown)
        return await self._run(cmd, values, actor, place)

    async def _run(self, cmd: Command, values: dict[str, Any], actor: Actor, place: Place | None) -> Reply:
        ctx = self.context(actor, place)
        try:
            if not ctx.has_role(cmd.role):
                raise NotAllowed(cmd.name, ctx.role, cmd.role)
            return await cmd.handler(ctx, **values)
        except Exception as exc:
            return render_error(exc, reraise_unknown=self.reraise_unknown)
