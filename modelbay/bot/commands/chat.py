"""/chat, /chat end and /rate: talk with an installed model where you are, and rate its answers."""

from __future__ import annotations

from dataclasses import replace

from modelbay.bot.commands._args import MODEL, ROW_ID_MAX
from modelbay.bot.context import Context
from modelbay.bot.reply import Ask, Button, Field, Reply, form
from modelbay.bot.spec import Arg, ArgType, command
from modelbay.engine.chat.records import DOWN_REASONS, UP_REASONS

__all__ = ["RATE_DOWN", "SYSTEM_PROMPT", "end_chat", "rate", "start_chat"]

SYSTEM_MAX = 4000  # characters of a system prompt
COMMENT_MAX = 1000  # characters of a rating's comment


def _reason(reason: str) -> str:
    return reason.replace("_", " ").capitalize().replace("Didnt", "Didn't")


RATE_DOWN = form(
    "down", "/rate down message:{}", "Rate answer #{}",
    (Ask("reason", "What was wrong?", tuple((r, _reason(r)) for r in DOWN_REASONS), placeholder="Pick a reason",
         skip="No reason, just 👎"),
     Ask("comment", "Anything else?", optional=True, long=True, max_length=COMMENT_MAX)),
    legacy=True,  # 👎 buttons sent before forms carry "/rate down message:N"
    question="What was wrong with answer #{}?",
)
"""👎 on an answer: what was wrong with it (and, where the platform asks more than one thing, a comment)."""

SYSTEM_PROMPT = form(
    "sys", "/chat model:{}", "System prompt",
    (Ask("system", "How should the model behave?", placeholder="You are a concise assistant who answers in plain "
         "English.", long=True, max_length=SYSTEM_MAX),),
)
"""Restart the chat with a model with a system prompt (the value is the model's name)."""


@command(
    "chat",
    help="Chat with an installed model here: your next messages go to it and answers stream in.",
    args=(replace(MODEL, help="Model name, or exp:<experiment>."),
          Arg("system", "A system prompt for the whole chat.", rest=True, max_length=SYSTEM_MAX)),
    role="user",
    slow=True,  # the first in-process chat loads the model
    opens_thread=True,  # a chat lives in a thread: its messages go to the model
)
async def start_chat(ctx: Context, model: str, system: str | None) -> Reply:
    """Open a session bound to this thread or channel."""
    chats = ctx.runtime.chats
    # experiments: `exp:<name>`, or an alias an experiment owns, opens the person's variant (or the shipped winner)
    opened = await ctx.call(ctx.runtime.experiments.open, ctx.where(), ctx.actor.key, model, system)
    session = opened.session
    backend = await ctx.call(chats.backend_of, session)  # chosen by open() a moment ago: no lookups here
    title = f"Chatting with {session.model_display_name}"
    fields = [Field("Model", f"`{session.model_name}`"), Field("Answered by", backend.name),
              Field("Context", f"{backend.context_length:,} tokens")]
    notes: tuple[str, ...] = ()
    if opened.experiment is not None and opened.experiment.status == "running":
        # The model stays hidden while the experiment runs, so that knowing it does not sway the ratings.
        title = f"Chatting in experiment {opened.experiment.name}"
        fields = [Field("Experiment", f"`{opened.experiment.name}`"), Field("Context",
                                                                           f"{backend.context_length:,} tokens")]
        notes = ("You get one of its variants, always the same one; your 👍/👎 on the answers decide which is "
                 "kept." + (" This variant has its own system prompt, used instead of yours." if system and
                            opened.variant.system_prompt else ""),)
    elif system:
        fields.append(Field("System prompt", system[:300], inline=False))
    # Said once, here: e.g. a system prompt sent inside the first kept message, for a template without a system role.
    text = "\n\n".join(("Send messages here; answers stream as they are written.", *notes, *session.notices))
    return Reply(title=title, tone="success", fields=fields, text=text,
                 buttons=[Button("End chat", "/chat end", "danger")],
                 footer="`/rate up` or `/rate down [reason]` rates the last answer · `/chat end` ends the chat")


@command("chat", "end", help="End the chat open here.", role="user")
async def end_chat(ctx: Context) -> Reply:
    """Close the session at this place."""
    session = await ctx.call(ctx.runtime.chats.close, ctx.where())
    if session.experiment is not None:  # experiments: the model stays hidden while it runs
        return Reply(text=f"Chat in experiment `{session.experiment}` ended. `/chat <model>` starts another.",
                     tone="success")
    return Reply(text=f"Chat with `{session.model_name}` ended. `/chat <model>` starts another.", tone="success")


@command(
    "rate",
    help="Rate an answer 👍 or 👎 (the last one here unless message: is given), with an optional reason.",
    args=(
        Arg("rating", "up or down.", required=True, choices=("up", "down")),
        Arg("reason", "Why.", choices=UP_REASONS + DOWN_REASONS),
        Arg("message", "The answer's number (shown under it).", type=ArgType.INTEGER, min=1, max=ROW_ID_MAX, named=True),
        Arg("comment", "Anything else to say about it.", rest=True, max_length=COMMENT_MAX),
    ),
    role="user",
)
async def rate(ctx: Context, rating: str, reason: str | None, message: int | None, comment: str | None) -> Reply:
    """Store a rating of an answer the actor got."""
    chats = ctx.runtime.chats
    if message is None:
        message = await ctx.call(chats.last_answer, ctx.where(), ctx.actor.key)
    stored = await ctx.call(chats.rate, message, ctx.actor.key, rating == "up", reason, comment)
    verb = "Changed your rating of" if stored.changed else "Rated"
    why = f" ({stored.reason.replace('_', ' ')})" if stored.reason else ""
    return Reply(text=f"{verb} answer #{stored.message_id} {'👍' if stored.up else '👎'}{why}. Thank you!",
                 tone="success", ephemeral=True)
