"""The built-in commands plus a few of the tests' own, for front-end tests: slow ones and one with a file."""

from __future__ import annotations

import asyncio

from modelbay.bot import COMMANDS, Attachment, CommandSet, Reply, command
from modelbay.bot.context import Context

__all__ = ["COMMANDS_HERE", "REPORT"]

REPORT = b"model,requests\ntiny,3\n"
COMMANDS_HERE = CommandSet()
for _cmd in COMMANDS:
    COMMANDS_HERE.add(_cmd)


@command("slowpoke", help="Takes its time (marked slow).", slow=True, registry=COMMANDS_HERE)
async def _slowpoke(ctx: Context) -> Reply:
    await asyncio.sleep(4.5)
    return Reply(text="Finally done.", tone="success")


@command("dawdle", help="Not marked slow, but takes three seconds.", registry=COMMANDS_HERE)
async def _dawdle(ctx: Context) -> Reply:
    await asyncio.sleep(3)
    return Reply(text="Dawdled.")


@command("report", help="Answers with a file.", registry=COMMANDS_HERE)
async def _report(ctx: Context) -> Reply:
    return Reply(text="Here is the report.", attachments=[Attachment("report.csv", REPORT, "text/csv")])
