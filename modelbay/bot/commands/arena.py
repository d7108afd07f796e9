"""/arena: a blind battle of two installed models on one prompt, the vote buttons, and the leaderboard."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modelbay.bot.bridge import in_thread
from modelbay.bot.commands._args import CATEGORIES, CATEGORY, ROW_ID_MAX
from modelbay.bot.context import Context
from modelbay.bot.reply import Attachment, Button, Progress, Reply, Table
from modelbay.bot.spec import Arg, ArgType, command
from modelbay.engine.analytics.leaderboard import MIN_BATTLES, Leaderboard, chart, standings_text
from modelbay.engine.experiments.arena import ANY, BattleRecord, Contender, Piece, SideDone, VoteRecord
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.units import plural

__all__ = ["battle", "board", "vote"]

PROMPT_MAX = 4000  # characters of a prompt
SHOWN_WHILE_WRITING = 1500  # characters of each answer shown while both are being written (the end shows all)
VOTES = (("A is better", "a", "primary"), ("B is better", "b", "primary"), ("Tie", "tie", "secondary"),
         ("Both bad", "bad", "danger"))
_SAID = {"a": "Model A is better", "b": "Model B is better", "tie": "a tie", "both_bad": "both bad"}


@dataclass
class _Battle:
    """A battle as it streams: both answers so far and how each ended."""

    record: BattleRecord
    prompt: str
    text: dict[str, str] = field(default_factory=lambda: {"a": "", "b": ""})
    done: dict[str, SideDone] = field(default_factory=dict)
    note: str = ""  # a line above the prompt in every view (e.g. that any two models answer)

    def body(self, *, writing: bool) -> str:
        parts = [self.note] if self.note else []
        parts.append(f"**Prompt:** {self.prompt}")
        for side in ("a", "b"):
            text = self.text[side]
            ended = self.done.get(side)
            if writing and len(text) > SHOWN_WHILE_WRITING:
                text = "…" + text[-SHOWN_WHILE_WRITING:]
            if ended is not None and ended.status != "ok":
                text = f"{text}\n\n_{ended.note}_" if text else f"_{ended.note}_"
            elif ended is None and writing:
                text = f"{text} ▍" if text else "_writing…_"
            parts.append(f"**Model {side.upper()}**\n{text}")
        return "\n\n".join(parts)

    def view(self, reply: Reply, event: ProgressEvent) -> Reply:
        return Reply(title=reply.title, text=self.body(writing=True), progress=reply.progress,
                     footer="Both answers are being written; vote when they are done.")

    async def finish(self, event: ProgressEvent) -> Reply:
        battle = self.record.id
        if event.status != "finished":
            return Reply(title=f"Arena battle #{battle}", text=self.body(writing=False), tone="warning",
                         footer="A model failed, so this battle takes no vote. `/arena` starts another.")
        buttons = [Button(label, f"/arena vote {battle} {code}", style) for label, code, style in VOTES]
        return Reply(title=f"Arena battle #{battle}", text=self.body(writing=False), buttons=buttons,
                     footer=f"Which answer is better? Names are revealed after your vote · `/arena vote {battle} "
                            "a|b|tie|bad`")


async def _events(ctx: Context, state: _Battle) -> AsyncIterator[ProgressEvent]:
    """Stream both answers into the battle and report them as progress events (the reply's view draws them)."""
    stop = threading.Event()
    job = f"arena-{state.record.id}"
    cap = max(1, ctx.runtime.settings.chat_max_tokens) * 2
    pieces = 0
    try:
        async for item in in_thread(lambda: ctx.runtime.arena.run(state.record, state.prompt, stop)):
            if isinstance(item, Piece):
                state.text[item.side] += item.text
                pieces += 1
            elif isinstance(item, SideDone):
                state.done[item.side] = item
            yield ProgressEvent(job, "started", min(0.99, pieces / cap), "Both models are answering")
    finally:
        stop.set()
    ok = len(state.done) == 2 and all(d.status == "ok" for d in state.done.values())
    yield ProgressEvent(job, "finished" if ok else "failed", 1.0, "both answered" if ok else "a model failed")


@command(
    "arena",
    help="Two anonymous installed models answer your prompt side by side; vote for the better answer.",
    args=(Arg("category", "Pit models of this category (a first word that is a category works too; category:any "
                          "reads the whole text as the prompt).", choices=(*CATEGORIES, ANY), named=True),
          Arg("prompt", "What to ask both models (a sample prompt when left out or blank).", rest=True,
              max_length=PROMPT_MAX)),
    role="user",
    slow=True,  # the first battle loads both models
)
async def battle(ctx: Context, category: str | None, prompt: str | None) -> Reply:
    """Start a battle and stream both answers into its card; the vote buttons come when both are done.

    Without `category:`, a first word that is a category is read as the category (quotes cannot mark it as part of
    the prompt: the line parser removes them), and the card says so and how to ask it literally (`category:any`).
    """
    words = (prompt or "").split(maxsplit=1)
    read = None  # the category taken from the prompt's first word
    if category is None and words and words[0].lower() in CATEGORIES:
        category, prompt, read = words[0].lower(), (words[1] if len(words) > 1 else None), words[0]
    record = await ctx.call(ctx.runtime.arena.start, ctx.actor.key, prompt, category)
    notes = []
    if read is not None:
        notes.append(f"Read “{read}” as the category; to ask it as part of the prompt, write "
                     f"`/arena category:any {read} …`.")
    if record.fallback:
        notes.append(f"Fewer than two {category} models are installed, so any two answer; this battle counts on "
                     "the overall leaderboard only.")
    # a blank prompt is the category's sample prompt (the engine's, as on every front end)
    state = _Battle(record, record.prompt, note=" ".join(notes))
    label = f"Battle #{record.id}"
    progress = Progress(f"arena-{record.id}", label, status="started", view=state.view, finish=state.finish,
                        events=lambda: _events(ctx, state))
    return Reply(title=f"Arena battle #{record.id}", text=state.body(writing=True), progress=progress,
                 footer="Two anonymous models are answering; vote when both are done.")


@command(
    "arena", "vote",
    help="Vote on an arena battle: a, b, tie or bad (both bad). The models are named after your vote.",
    args=(Arg("battle", "The battle's number.", type=ArgType.INTEGER, required=True, min=1, max=ROW_ID_MAX),
          Arg("outcome", "a, b, tie or bad.", required=True, choices=("a", "b", "tie", "bad"))),
    role="user",
)
async def vote(ctx: Context, battle: int, outcome: str) -> Reply:
    """Store the vote and reveal the two models to the voter."""
    voted: VoteRecord = await ctx.call(ctx.runtime.arena.vote, battle, ctx.actor.key,
                                       "both_bad" if outcome == "bad" else outcome)
    b = voted.battle
    text = (f"You voted {_SAID[voted.outcome]} in battle #{b.id}.\n"
            f"Model A was {_named(b.a)}; Model B was {_named(b.b)}.")
    category = "" if b.category == "any" else f" {b.category}"
    return Reply(title="Thanks for your vote", text=text, tone="success", ephemeral=True,
                 footer=f"{plural(voted.left_today, 'vote')} left today · `/arena leaderboard{category}`",
                 buttons=[Button("Leaderboard", f"/arena leaderboard{category}")])


def _named(side: Contender) -> str:
    """A revealed model: its display name, and the name `/chat` takes when that differs."""
    return f"**{side.label}**" + (f" (`{side.model}`)" if side.label != side.model else "")


def leaderboard_reply(board: Leaderboard) -> Reply:
    """A leaderboard as a table, its chart and the method in one line."""
    where = f" · {board.category}" if board.category else ""
    if not board.standings:
        return Reply(title=f"Arena leaderboard{where}",
                     text=f"Not enough votes yet ({board.votes:,} so far, none between two models that count). "
                          "`/arena <prompt>` starts a battle.")
    table = Table(["Rank", "Model", "Strength (95% CI)", "Battles", "Win %", "Both bad"], standings_text(board))
    text = f"{plural(board.votes, 'vote')}. Rank 1 + the ranked models whose whole interval is above this one's."
    if any(not s.settled for s in board.standings):
        text += (f" Unranked (–), listed last: models with fewer than {MIN_BATTLES} battles (provisional: too few "
                 "votes for an interval) and models that won or lost every battle (their strength has no bound).")
    if board.groups > 1:
        text += (f" The votes split the models into {board.groups} groups that never beat a group above them, so "
                 "the gaps between groups are not measured yet.")
    return Reply(
        title=f"Arena leaderboard{where}", table=table, text=text,
        attachments=[Attachment(f"arena-leaderboard{'-' + board.category if board.category else ''}.png",
                                chart(board), "image/png")],
        footer=f"Bradley-Terry by maximum likelihood (ties half a win, both-bad kept apart), LMSYS scale; "
               f"95% intervals from {board.rounds} bootstrap rounds.")


@command(
    "arena", "leaderboard",
    help="The arena leaderboard: Bradley-Terry strengths with 95% intervals, ranks, battles and win rates.",
    args=(CATEGORY,),
)
async def board(ctx: Context, category: str | None) -> Reply:
    """Fit the leaderboard from the counted votes and show it with its chart."""
    return leaderboard_reply(await ctx.call(ctx.runtime.arena.leaderboard, category))
