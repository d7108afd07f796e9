"""Application commands built from the bot's command spec: groups, typed options, choices and autocomplete.

`/models list` becomes the `list` subcommand of a `models` group, with its arguments as typed options. A bare
command whose name is also a group (`/chat <model>` beside `/chat end`) is that group's `start` subcommand,
because Discord cannot have both. Aliases are not registered: Discord's command picker makes them needless.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import discord
from discord import app_commands

from modelbay.bot.spec import Arg, ArgType, Command, CommandSet

__all__ = ["BARE", "DiscordName", "app_command", "build", "discord_name", "discord_text"]

BARE = "start"  # the subcommand name of a bare command that shares its name with a group
CHOICES = 25  # Discord's most choices (and autocomplete results) per option
Run = Callable[[discord.Interaction, Command, dict[str, Any]], Awaitable[None]]
Complete = Callable[[discord.Interaction, Arg, str], Awaitable[list[app_commands.Choice[str]]]]


class DiscordName(NamedTuple):
    """Where a command sits in Discord's tree: its group (None at the top level) and its name there."""

    group: str | None
    name: str


def discord_name(cmd: Command, groups: set[str]) -> DiscordName:
    """The group and name a spec command has in Discord."""
    if len(cmd.path) == 2:
        return DiscordName(cmd.path[0], cmd.path[1])
    return DiscordName(cmd.path[0], BARE) if cmd.path[0] in groups else DiscordName(None, cmd.path[0])


def _annotation(arg: Arg) -> Any:
    if arg.type is ArgType.BOOLEAN:
        return bool
    if arg.type is ArgType.INTEGER:
        low = int(arg.min) if arg.min is not None else None
        high = int(arg.max) if arg.max is not None else None
        return app_commands.Range[int, low, high] if low is not None or high is not None else int
    if arg.type is ArgType.NUMBER:  # discord.py wants both bounds of one type: 0.01 to 1000 becomes 0.01 to 1000.0
        low = float(arg.min) if arg.min is not None else None
        high = float(arg.max) if arg.max is not None else None
        return app_commands.Range[float, low, high] if low is not None or high is not None else float
    return app_commands.Range[str, None, arg.max_length]


def _callback(cmd: Command, run: Run, file: str | None = None) -> Callable[..., Awaitable[None]]:
    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        await run(interaction, cmd, options)

    parameters = [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=discord.Interaction)]
    for arg in cmd.args:
        if arg.name == file:  # a required attachment, first (Discord lists required options first)
            parameters.insert(1, inspect.Parameter(arg.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   annotation=discord.Attachment))
            continue
        default = inspect.Parameter.empty if arg.required else None
        parameters.append(inspect.Parameter(arg.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                            annotation=_annotation(arg)))
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return callback


def _completer(arg: Arg, complete: Complete) -> Callable[..., Awaitable[list[app_commands.Choice[str]]]]:
    async def autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return (await complete(interaction, arg, current))[:CHOICES]

    return autocomplete


def app_command(cmd: Command, name: str, run: Run, complete: Complete, *, file: str | None = None,
                help: str | None = None) -> app_commands.Command:  # noqa: A002 - the description's name
    """The app command of a spec command: typed options, descriptions, choices, autocomplete.

    `file` names an argument taken as a required attachment instead (the adapter reads it: `/datasets add`'s file
    where the console takes a path); the options `run` gets then hold a `discord.Attachment` under that name.
    """
    app_cmd = app_commands.Command(name=name, description=(help or cmd.help)[:100],
                                   callback=_callback(cmd, run, file))
    described = {a.name: a.help[:100] for a in cmd.args}
    if described:
        app_commands.describe(**described)(app_cmd)
    choices = {a.name: [app_commands.Choice(name=c, value=c) for c in a.choices] for a in cmd.args
               if a.choices and len(a.choices) <= CHOICES and a.name != file}
    if choices:
        app_commands.choices(**choices)(app_cmd)
    for arg in cmd.args:
        if arg.name != file and (arg.autocomplete or (arg.choices and len(arg.choices) > CHOICES)):
            app_cmd.autocomplete(arg.name)(_completer(arg, complete))
    return app_cmd


def build(tree: app_commands.CommandTree, commands: CommandSet, run: Run, complete: Complete) -> dict[str, Any]:
    """Add every spec command to the tree; return the groups and top-level commands by name."""
    groups_named = {c.path[0] for c in commands if len(c.path) == 2}
    groups: dict[str, app_commands.Group] = {}
    top: dict[str, Any] = {}
    for cmd in commands:
        group_name, name = discord_name(cmd, groups_named)
        app_cmd = app_command(cmd, name, run, complete)
        if group_name is None:
            tree.add_command(app_cmd)
            top[name] = app_cmd
            continue
        if group_name not in groups:
            groups[group_name] = app_commands.Group(name=group_name, description=f"ModelBay {group_name} commands")
        groups[group_name].add_command(app_cmd)
    for group in groups.values():
        tree.add_command(group)
        top[group.name] = group
    return top


def discord_text(commands: CommandSet) -> Callable[[str], str]:
    """Rewrite command names in text as Discord users find them: `/chat <model>` is `/chat start <model>`."""
    groups = {c.path[0]: {c.path[1] for c in commands if len(c.path) == 2} for c in commands if len(c.path) == 2}
    bare = sorted({c.path[0] for c in commands if len(c.path) == 1 and c.path[0] in groups}, key=len, reverse=True)
    if not bare:
        return lambda text: text
    names = "|".join(map(re.escape, bare))
    subcommands = "|".join(sorted({re.escape(s) for subs in groups.values() for s in subs}, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w/.-])/({names})\b(?!\s+({subcommands})\b)")
    return lambda text: pattern.sub(rf"/\1 {BARE}", text)
