"""The built-in bot commands: one module per command group in `modelbay/bot/commands/`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelbay.hookspecs import hookimpl

if TYPE_CHECKING:
    from modelbay.bot.spec import CommandSet


@hookimpl(tryfirst=True)
def register_commands(commands: CommandSet) -> None:
    """Add the built-in command groups to `commands`.

    Each group module declares its commands with `@command` as it is imported, into the bot's COMMANDS (the set
    this hook is given in every process); another set gets a copy of them.
    """
    from modelbay.bot import commands as groups
    from modelbay.bot.spec import COMMANDS

    if commands is not COMMANDS:
        for cmd in COMMANDS:
            if cmd.handler.__module__.startswith(groups.__name__ + "."):
                commands.add(cmd)
