"""/privacy: what ModelBay keeps about you, opting out of analytics, and erasing your data."""

from __future__ import annotations

from modelbay.bot.context import Context
from modelbay.bot.reply import Reply
from modelbay.bot.spec import command


@command("privacy", "status", help="Show what ModelBay keeps about you.")
async def privacy_status(ctx: Context) -> Reply:
    """Explain the storage policy and this person's choice."""
    out = await ctx.call(ctx.runtime.analytics.opted_out, ctx.actor.key)
    text = "prompt and answer text, timings and ratings" if ctx.runtime.settings.store_transcripts else \
        "timings and ratings (no prompt or answer text)"
    choice = "You opted out: your answers are not measured and no text is kept." if out else \
        "You are counted in analytics. `/privacy optout` stops that; `/privacy delete` erases what is kept."
    return Reply(title="Privacy", text=f"This deployment keeps {text}. {choice}", ephemeral=True)


@command("privacy", "optout", help="Stop analytics for you (no events, no stored text).", role="viewer")
async def opt_out(ctx: Context) -> Reply:
    """Record the opt-out."""
    await ctx.call(ctx.runtime.analytics.set_opt_out, ctx.actor.key, True)
    return Reply(text="Done: your chats are no longer measured and their text is never stored. Ratings you give "
                      "still count for the model. `/privacy optin` undoes this.", tone="success", ephemeral=True)


@command("privacy", "optin", help="Count your use in analytics again.")
async def opt_in(ctx: Context) -> Reply:
    """Remove the opt-out."""
    await ctx.call(ctx.runtime.analytics.set_opt_out, ctx.actor.key, False)
    return Reply(text="Done: your chats are measured again.", tone="success", ephemeral=True)


@command("privacy", "delete", help="Erase your chats, messages, ratings, analytics events, experiment "
                                    "assignments, arena votes and battle text, and datasets.")
async def delete_data(ctx: Context) -> Reply:
    """Erase everything stored under this person's identity."""
    counts = await ctx.call(ctx.runtime.chats.forget, ctx.actor.key)
    counts["datasets"] = await ctx.call(ctx.runtime.datasets.forget, ctx.actor.key)
    summary = ", ".join(f"{what}: {n}" for what, n in counts.items())
    return Reply(text=f"Erased {summary}. Anonymous totals (counts without who or what) remain, and arena battles "
                      "you started stay, without you or their text, for the votes others gave them.",
                 tone="success", ephemeral=True)
