"""A bot command from a plugin: `/hello [name]`, answered the same on Discord, Slack, the console and HTTP.

Run it with `python examples/command.py`. A command is an async handler `handler(ctx, **args) -> Reply`,
declared with `@command(path..., help=, args=(Arg(...),), role=)` into the command set the `register_commands`
hook is given. Every front end parses, checks the role and converts the arguments the same way, then calls it;
`ctx.runtime` reaches the engine (run blocking engine calls with `await ctx.call(fn, ...)`).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from modelbay import plugins
from modelbay.bot import Actor, Arg, CommandSet, Context, Dispatcher, Reply, command
from modelbay.config import load_settings
from modelbay.hookspecs import hookimpl
from modelbay.runtime import Runtime


class HelloPlugin:
    """The plugin: one hook implementation, declaring one command."""

    @hookimpl
    def register_commands(self, commands: CommandSet) -> None:
        @command("hello", help="Say hello.", args=(Arg("name", "Who to greet.", rest=True),), registry=commands)
        async def hello(ctx: Context, name: str | None) -> Reply:
            """Greet someone, or the caller, and say how many models the registry holds."""
            total = (await ctx.call(ctx.runtime.registry.list_models, limit=1)).total
            return Reply(title="Hello", text=f"Hello, {name or ctx.actor.display_name}! "
                                             f"The registry holds {total} models.", tone="success")


def main() -> None:
    plugins.register(HelloPlugin())  # an installed package would be found through its entry point instead
    with tempfile.TemporaryDirectory() as home:
        runtime = Runtime(load_settings(home=Path(home)))
        runtime.prepare()  # an SQLite database with the shipped catalog
        try:
            dispatcher = Dispatcher(runtime)
            me = Actor("console", "me", "Ada")
            for line in ("/hello", "/hello Grace Hopper", "/help hello"):
                reply = asyncio.run(dispatcher.dispatch_line(line, me))
                print(f"{line} -> {reply.plain()}")
        finally:
            runtime.close()


if __name__ == "__main__":
    main()
