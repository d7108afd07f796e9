"""/help: every command, or one command's usage and arguments."""

from __future__ import annotations

from modelbay.bot.context import Context
from modelbay.bot.reply import Field, Reply, Table
from modelbay.bot.spec import COMMANDS, Arg, UnknownCommand, command


@command(
    "help",
    help="List the commands, or show how to use one.",
    args=(Arg("command", "A command, e.g. `models list`.", rest=True),),
)
async def show_help(ctx: Context, command: str | None) -> Reply:
    """Show all commands the caller may use, or one command's details."""
    if command:
        words = tuple(command.lstrip("/").lower().split())
        cmd = COMMANDS.get(words) or COMMANDS.get(words[:1])
        if cmd is None:
            raise UnknownCommand("/" + " ".join(words), COMMANDS.suggest(" ".join(words)))
        fields = [Field(a.name, f"{a.help} ({'required' if a.required else 'optional'}; {a.expected()})", False)
                  for a in cmd.args]
        return Reply(title=cmd.name, text=f"{cmd.help}\nUsage: `{cmd.usage}`\nRole: {cmd.role}", fields=fields)
    rows = [[cmd.usage, cmd.help] for cmd in COMMANDS if ctx.has_role(cmd.role)]
    return Reply(
        title="ModelBay commands",
        table=Table(["Command", "What it does"], rows),
        footer=f"Your role: {ctx.role}. `/help <command>` shows one command in detail.",
    )
