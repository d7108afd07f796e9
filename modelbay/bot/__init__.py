"""The platform-neutral bot: command spec, dispatcher, permissions, replies and errors."""

from modelbay.bot.context import Actor, Context
from modelbay.bot.dispatcher import Dispatcher
from modelbay.bot.errors import render_error
from modelbay.bot.reply import Attachment, Button, Field, Progress, Reply, Table
from modelbay.bot.spec import COMMANDS, Arg, ArgType, Command, CommandSet, command

from modelbay import plugins  # noqa: E402, I001 - after the names a plugin's commands import from here

plugins.register_commands(COMMANDS)  # the built-in commands (modelbay/default_plugins/commands.py), then plugins'

__all__ = [
    "COMMANDS", "Actor", "Arg", "ArgType", "Attachment", "Button", "Command", "CommandSet", "Context",
    "Dispatcher", "Field", "Progress", "Reply", "Table", "command", "render_error",
]
