"""The platform-neutral bot: command spec, dispatcher, permissions, replies and errors."""

from modelbay.bot.context import Actor, Context
from modelbay.bot.dispatcher import Dispatcher, Invocation
from modelbay.bot.errors import render_error
from modelbay.bot.reply import Ask, Attachment, Button, Field, Form, Progress, Reply, Table, form
from modelbay.bot.spec import COMMANDS, Arg, ArgType, Command, CommandSet, command

from modelbay import plugins  # noqa: E402, I001 - after the names a plugin's commands import from here

plugins.register_commands(COMMANDS)  # the built-in commands (modelbay/default_plugins/commands.py), then plugins'

__all__ = [
    "COMMANDS", "Actor", "Arg", "ArgType", "Ask", "Attachment", "Button", "Command", "CommandSet", "Context",
    "Dispatcher", "Field", "Form", "Invocation", "Progress", "Reply", "Table", "command", "form", "render_error",
]
