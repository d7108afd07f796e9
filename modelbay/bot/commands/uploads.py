"""/uploads list: the files (datasets) you uploaded, ready for fine-tuning."""

from __future__ import annotations

from datetime import datetime

from modelbay.bot.context import Context
from modelbay.bot.reply import Reply, Table
from modelbay.bot.spec import command
from modelbay.engine.units import ago, human_bytes


@command("uploads", "list", help="List the files (datasets) you uploaded.", role="user", aliases=(("uploads",),))
async def list_uploads(ctx: Context) -> Reply:
    """Show this person's uploads, newest first."""
    uploads = await ctx.call(ctx.runtime.uploads.list, ctx.actor.key)
    if not uploads:
        return Reply(text="You have no uploads. Send a .jsonl/.csv/.json/.txt/.parquet file to the bot in a direct "
                          "message (or use its upload form) to add one.", ephemeral=True)
    rows = [[u.id, u.filename, human_bytes(u.size_bytes), u.sha256[:12], ago(datetime.fromisoformat(u.created_at))]
            for u in uploads]
    return Reply(title="Your uploads", table=Table(["ID", "File", "Size", "SHA-256", "Uploaded"], rows),
                 ephemeral=True)
