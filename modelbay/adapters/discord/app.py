"""The Discord bot (discord.py): application commands, persistent buttons, modals, threads and attachments.

Interactions are answered within Discord's 3 seconds: slow commands defer at once, others get two seconds and
defer if not done. Command replies are embeds (`embeds.render`); answers in a chat, the chat card and the card of
a job followed in place are layout cards (`layouts.cards`, Discord's components v2: full-width text and code, the
buttons inside the card). A reply that follows a job, and an answer being written, are edited in place by
`bot.live.LiveMessage`, at most once a second per message and, with the bot-wide `Pace`, once a second across the
bot; a card stays a card in every edit (Discord keeps the components-v2 flag of a message for good). Buttons carry
their whole payload in their custom id (`mb:run:<line>`; for a button that asks first, its form and value such as
`mb:down:<answer>` or `mb:sys:<model>`; or `mb:key:<key>` to Redis for a payload too long for 100 characters or one
the id's template would not read back whole, e.g. with spaces) and are registered as dynamic items, so they work
after a restart, in embeds' rows and inside cards alike. A form asks for a choice in a private menu (`mb:why:...`)
and for text in a modal; either then runs the button's line with what it asked for.
discord.py itself waits out HTTP 429s (Retry-After) before retrying.
"""

from __future__ import annotations

from dataclasses import replace

import asyncio
import hashlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from modelbay.adapters.discord.embeds import COLOURS, DiscordMessage, render
from modelbay.adapters.discord.layouts import CARD_BUTTONS, ROW_BUTTONS, TEXT_CHARS, Card, cards, fit_notes
from modelbay.adapters.discord.tree import app_command, build, discord_text
from modelbay.bot.context import Actor
from modelbay.bot.conversation import relay
from modelbay.bot.deliveries import first_delivery
from modelbay.bot.commands.chat import SYSTEM_PROMPT
from modelbay.bot.commands.datasets import add_file
from modelbay.bot.dispatcher import Dispatcher, Invocation
from modelbay.bot.errors import render_error
from modelbay.bot.live import LiveMessage, Pace
from modelbay.bot.progress import follow, following
from modelbay.bot.reply import FORMS, Attachment, Button, Reply
from modelbay.bot.spec import Arg, Command
from modelbay.bot.stream import StreamedAnswer, with_cursor
from modelbay.bot.text import Part
from modelbay.engine.chat.records import Place
from modelbay.engine.errors import NotAllowed, UploadRefused
from modelbay.engine.records import ModelQuery
from modelbay.runtime import Runtime

__all__ = ["DiscordAdapter"]

log = logging.getLogger(__name__)
ANSWER_WITHIN = 2.0  # seconds a fast command may take before its interaction is deferred (Discord allows 3)
TOKEN_LIFE = 14 * 60  # seconds an interaction token is used to edit; Discord's last 15 minutes
KEY_KEEP = 90 * 86400  # seconds a long button line is kept in Redis (buttons older than that say so)
CUSTOM_ID_CHARS = 100
FIRST_FORM = "down"  # the form whose choice menu's custom id names no form (`mb:why:<value>`, as before forms)
ANSWER_NOTES = 400  # characters of an answer's last card kept for its notices and footer (of Discord's 4,000)
_STYLES = {"primary": discord.ButtonStyle.primary, "secondary": discord.ButtonStyle.secondary,
           "success": discord.ButtonStyle.success, "danger": discord.ButtonStyle.danger}
_FILE_HOSTS = {"cdn.discordapp.com", "media.discordapp.net"}


def _fits(custom_id: str, item: type[discord.ui.DynamicItem[Any]]) -> bool:
    """Whether a custom id is within Discord's length and `item`'s template reads it back whole."""
    return len(custom_id) <= CUSTOM_ID_CHARS and item.__discord_ui_compiled_template__.fullmatch(custom_id) is not None


def _adapter(interaction: discord.Interaction) -> DiscordAdapter:
    return interaction.client.adapter  # type: ignore[attr-defined]


class RunButton(discord.ui.DynamicItem[discord.ui.Button], template=r"mb:run:(?P<line>/.+)"):
    """A button that runs the command line in its custom id as the person who presses it."""

    def __init__(self, line: str, label: str = "Run", style: discord.ButtonStyle = discord.ButtonStyle.secondary):
        super().__init__(discord.ui.Button(label=label[:80], style=style, custom_id=f"mb:run:{line}"))
        self.line = line

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> RunButton:
        return cls(match["line"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _adapter(interaction).run_line(interaction, self.line)


class KeyButton(discord.ui.DynamicItem[discord.ui.Button], template=r"mb:key:(?P<key>[A-Za-z0-9_-]+)"):
    """A button whose payload is too long for a custom id: the id holds a key to it in Redis."""

    def __init__(self, key: str, label: str = "Run", style: discord.ButtonStyle = discord.ButtonStyle.secondary):
        super().__init__(discord.ui.Button(label=label[:80], style=style, custom_id=f"mb:key:{key}"))
        self.key = key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> KeyButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        adapter = _adapter(interaction)

        async def press() -> None:
            payload = await asyncio.to_thread(adapter.runtime.redis.get, f"modelbay:discord:button:{self.key}")
            if payload is None:
                await interaction.response.send_message("This button has expired; run the command again.",
                                                        ephemeral=True)
                return
            pressed = Button.pressed(payload.decode())
            if pressed.form is not None:  # a form whose value does not fit its own id
                await adapter.ask(interaction, pressed)
                return
            await adapter.run_line(interaction, pressed.command)

        await adapter.guarded(interaction, press())


class FormButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"mb:(?!run:|key:|why:)(?P<form>[a-z]+):(?P<value>\S+)"):
    """A button that asks for something first (👎: why; System prompt: the prompt), then runs its line."""

    def __init__(self, button: Button, style: discord.ButtonStyle = discord.ButtonStyle.secondary) -> None:
        super().__init__(discord.ui.Button(label=button.label[:80] or "Ask", style=style, custom_id=button.payload))
        self.button = button

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> FormButton:
        return cls(Button.pressed(match.string))

    async def callback(self, interaction: discord.Interaction) -> None:
        adapter = _adapter(interaction)
        if self.button.form is None:  # a form this version no longer has: its line says what went wrong
            await adapter.run_line(interaction, self.button.command)
            return
        await adapter.guarded(interaction, adapter.ask(interaction, self.button))


class FormChoice(discord.ui.DynamicItem[discord.ui.Select],
                 template=r"mb:why:(?:(?P<form>[a-z]+):)?(?P<value>\S+)"):
    """A form's choice asked alone, in a private menu: choosing runs the button's line with it (or none)."""

    def __init__(self, button: Button) -> None:
        assert button.form is not None
        form, ask = button.form, button.form.asks[0]
        options = [discord.SelectOption(label=ask.skip, value="none")] if ask.skip else []
        options += [discord.SelectOption(label=label, value=value) for value, label in ask.choices]
        named = "" if form.name == FIRST_FORM else f"{form.name}:"
        super().__init__(discord.ui.Select(custom_id=f"mb:why:{named}{button.value}", placeholder=ask.placeholder,
                                           options=options[:25], min_values=1, max_values=1))
        self.button = button

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> FormChoice:
        return cls(FORMS[match["form"] or FIRST_FORM].button("", match["value"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        adapter = _adapter(interaction)
        assert self.button.form is not None
        ask = self.button.form.asks[0]
        chosen = ((interaction.data or {}).get("values") or ["none"])[0]
        more = {} if chosen == "none" and ask.skip else {ask.arg: chosen}

        async def choose() -> None:
            reply = await adapter.prepare(interaction, self.button.command, more).run()
            await interaction.response.edit_message(content=reply.text[:2000], view=None)

        await adapter.guarded(interaction, choose())


class FormModal(discord.ui.Modal):
    """A form's text asks as a modal: submitting runs the button's line with them, here."""

    def __init__(self, button: Button) -> None:
        assert button.form is not None
        form = button.form
        # discord.py keeps open forms by custom id: one per form and value, whatever the value's length
        digest = hashlib.sha256(button.value.encode()).hexdigest()[:32]
        super().__init__(title=form.title.format(button.value)[:45], custom_id=f"mb:{form.name}form:{digest}",
                         timeout=None)
        self.button = button
        self.inputs: dict[str, discord.ui.TextInput[FormModal]] = {}
        for ask in form.asks:
            if ask.choices:
                continue  # Discord modals take text
            field: discord.ui.TextInput[FormModal] = discord.ui.TextInput(
                label=ask.label[:45], style=discord.TextStyle.paragraph if ask.long else discord.TextStyle.short,
                max_length=ask.max_length, placeholder=(ask.placeholder or "")[:100] or None,
                required=not ask.optional)
            self.add_item(field)
            self.inputs[ask.arg] = field

    async def on_submit(self, interaction: discord.Interaction) -> None:
        adapter = _adapter(interaction)
        more = {arg: field.value for arg, field in self.inputs.items() if field.value.strip()}

        async def submit() -> None:
            invocation = adapter.prepare(interaction, self.button.command, more)
            reply = adapter.with_chat_buttons(await invocation.run(), invocation)
            await adapter.respond(interaction, reply, deferred=False, card=invocation.opens_thread)

        await adapter.guarded(interaction, submit())


class ModelBayClient(discord.Client):
    """The discord.py client: the command tree, the dynamic buttons, and messages in chat threads."""

    def __init__(self, adapter: DiscordAdapter, *, guild_ready_timeout: float = 2.0) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable "Message Content Intent" for the bot (README)
        super().__init__(intents=intents, guild_ready_timeout=guild_ready_timeout)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = adapter.on_tree_error  # type: ignore[method-assign]

    async def setup_hook(self) -> None:
        self.add_dynamic_items(RunButton, KeyButton, FormButton, FormChoice)

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class DiscordAdapter:
    """Translates Discord interactions and messages into Dispatcher calls and renders Replies back."""

    def __init__(self, runtime: Runtime, *, dispatcher: Dispatcher | None = None,
                 token_life: float = TOKEN_LIFE, guild_ready_timeout: float = 2.0) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.settings = settings
        self.dispatcher = dispatcher or Dispatcher(runtime)
        self.token_life = token_life
        # discord.py reads its API base and gateway from class attributes: point them where settings say.
        Route.BASE = settings.discord_api_url.rstrip("/")
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
        # guild_ready_timeout: how long discord.py waits for more servers (GUILD_CREATE) before it counts as ready.
        self.client = ModelBayClient(self, guild_ready_timeout=guild_ready_timeout)
        self.pace = Pace(settings.discord_edit_interval)
        self.commands = build(self.client.tree, self.dispatcher.commands, self.run, self.complete)
        self.text = discord_text(self.dispatcher.commands)  # command names in replies as Discord shows them
        self._add_dataset_command()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stored_keys: set[str] = set()

    # -- running ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Log in and hold the gateway connection until closed."""
        token = self.settings.discord_token.get_secret_value() if self.settings.discord_token else ""
        await self.client.start(token)

    async def sync(self, guild_id: int | None = None) -> list[app_commands.AppCommand]:
        """Register the commands with Discord: to one guild (instant, for development) or globally."""
        token = self.settings.discord_token.get_secret_value() if self.settings.discord_token else ""
        await self.client.login(token)
        try:
            if guild_id is not None:
                guild = discord.Object(id=guild_id)
                self.client.tree.copy_global_to(guild=guild)
                return await self.client.tree.sync(guild=guild)
            return await self.client.tree.sync()
        finally:
            await self.client.close()

    # -- who and where ----------------------------------------------------------------------------------------
    def actor(self, user: discord.abc.User) -> Actor:
        """The Discord user as an Actor, with their server roles as groups (`discord:role:<id>`)."""
        roles = getattr(user, "roles", None) or []
        groups = tuple(f"role:{r.id}" for r in roles if not r.is_default())
        return Actor("discord", str(user.id), getattr(user, "display_name", "") or user.name, groups)

    @staticmethod
    def place_of(source: discord.Interaction | discord.Message) -> Place:
        """The chat place of an interaction or message: a thread in its channel, or a channel (DMs)."""
        channel = source.channel
        if isinstance(channel, discord.Thread):
            return Place("discord", str(channel.parent_id), str(channel.id))
        return Place("discord", str(source.channel.id if channel is not None else source.channel_id))  # type: ignore[union-attr]

    def _dm_refused(self, guild: Any) -> bool:
        return guild is None and not self.settings.discord_allow_dms

    # -- commands -----------------------------------------------------------------------------------------------
    async def run(self, interaction: discord.Interaction, cmd: Command, options: dict[str, Any]) -> None:
        """Answer an application command: within 2 s, or defer and edit the answer in."""
        async def go() -> None:
            actor, place = self.actor(interaction.user), self.place_of(interaction)
            await self._run(interaction, self.dispatcher.prepare(cmd.path, options, actor, place))

        await self.guarded(interaction, go())

    async def run_line(self, interaction: discord.Interaction, line: str) -> None:
        """Answer a button press: the command line it carries, run as the person who pressed it."""
        async def go() -> None:
            await self._run(interaction, self.prepare(interaction, line))

        await self.guarded(interaction, go())

    def prepare(self, interaction: discord.Interaction, line: str, more: dict[str, Any] | None = None) -> Invocation:
        """A line (with the values a form asked for) prepared for the person and place of an interaction."""
        return self.dispatcher.prepare_line(line, self.actor(interaction.user), self.place_of(interaction), more)

    async def ask(self, interaction: discord.Interaction, button: Button) -> None:
        """Open a button's form: a choice in a private menu (Discord modals take text; other asks, optional, are
        left out), text in a modal."""
        assert button.form is not None
        form, first = button.form, button.form.asks[0]
        if not first.choices:
            await interaction.response.send_modal(FormModal(button))
            return
        view = discord.ui.View(timeout=None)
        view.add_item(FormChoice(button))
        optional = " (optional)" if first.skip else ""
        await interaction.response.send_message(f"{form.question_for(button.value)}{optional}",
                                                view=view, ephemeral=True)

    async def guarded(self, interaction: discord.Interaction, work: Awaitable[None]) -> None:
        """Run an interaction's work; whatever fails becomes one private line to the person."""
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - one line to the person; the traceback stays in the log
            await self.say_error(interaction, exc)

    async def say_error(self, interaction: discord.Interaction, exc: BaseException) -> None:
        """Tell the person what went wrong in one private line, however far the interaction got."""
        reply = render_error(exc)
        try:
            await self.respond(interaction, reply, deferred=interaction.response.is_done())
        except Exception:  # noqa: BLE001 - nothing more can reach them
            log.exception("could not report an error to a Discord interaction")

    async def on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Errors discord.py raises before our handler runs (bad option values, unknown commands)."""
        await self.say_error(interaction, getattr(error, "original", error))

    async def _run(self, interaction: discord.Interaction, invocation: Invocation) -> None:
        if self._dm_refused(interaction.guild):
            await interaction.response.send_message(
                "ModelBay does not answer in direct messages on this deployment; use it in a server channel.",
                ephemeral=True)
            return
        if invocation.opens_thread:
            await self.start_chat(interaction, invocation)
            return
        task = asyncio.ensure_future(invocation.run())
        deferred = False
        if invocation.defer:
            await interaction.response.defer(thinking=True)
            deferred = True
        elif not (await asyncio.wait({task}, timeout=ANSWER_WITHIN))[0]:
            await interaction.response.defer(thinking=True)
            deferred = True
        await self.respond(interaction, await task, deferred=deferred)

    async def start_chat(self, interaction: discord.Interaction, invocation: Invocation) -> None:
        """Open a chat in a new thread under the channel (or in the thread or DM the command came from)."""
        await interaction.response.defer(thinking=True)
        channel = interaction.channel
        thread = None
        model = invocation.values.get("model") or "a model"
        if isinstance(channel, discord.TextChannel):
            name = f"Chat with {model}"[:100]
            try:
                thread = await channel.create_thread(name=name, type=discord.ChannelType.public_thread,
                                                     auto_archive_duration=1440)
            except discord.HTTPException as exc:  # no thread permission: chat in the channel itself
                log.info("could not create a chat thread in %s: %s", channel.id, exc)
        place = Place("discord", str(channel.id), str(thread.id)) if thread else self.place_of(interaction)  # type: ignore[union-attr]
        reply = self.with_chat_buttons(await invocation.at(place).run(), invocation)
        if reply.ephemeral or thread is None:
            if thread is not None:
                await thread.delete()
            await self.respond(interaction, reply, deferred=True, card=True)
            return
        for message in self._cards(reply):
            await thread.send(**self._send_kwargs(message))
        await interaction.edit_original_response(content=f"Chat with **{model}** started in {thread.mention}: "
                                                         "talk to it there.", embeds=[])

    def with_chat_buttons(self, reply: Reply, invocation: Invocation) -> Reply:
        """A chat's opening reply with the System prompt button (a form only Discord offers there)."""
        model = invocation.values.get("model")
        if reply.ephemeral or not invocation.opens_thread or not model:
            return reply
        reply.buttons = [*reply.buttons, SYSTEM_PROMPT.button("System prompt", model)]
        return reply

    async def respond(self, interaction: discord.Interaction, reply: Reply, *, deferred: bool,
                      card: bool = False) -> None:
        """Send a reply as the interaction's answer (privately when ephemeral), continue it, follow its job.

        A reply that follows a job, and one asked for as a `card`, is shown as layout cards; the rest as embeds.
        """
        as_card = (card or following(reply)) and not reply.ephemeral
        draw = self._cards if as_card else (lambda r: render(r, self.text))
        messages = draw(reply)
        first = messages[0]
        if reply.ephemeral:
            if deferred and interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
                await interaction.delete_original_response()  # the public "thinking…" placeholder
            send = interaction.followup.send if interaction.response.is_done() else interaction.response.send_message
            await send(ephemeral=True, **self._send_kwargs(first))
            for message in messages[1:]:
                await interaction.followup.send(ephemeral=True, **self._send_kwargs(message))
            return
        if interaction.response.is_done():
            await interaction.edit_original_response(**self._edit_kwargs(first))
        else:
            await interaction.response.send_message(**self._send_kwargs(first))
        for message in messages[1:]:
            await interaction.followup.send(**self._send_kwargs(message))
        began = time.monotonic()
        await self._send_files(interaction, reply.attachments, began)
        if following(reply):
            live = LiveMessage(self._interaction_editor(interaction), first, ref=interaction,
                               interval=self.settings.discord_edit_interval, pace=self.pace)
            self._spawn(follow(self.runtime.jobs, live, reply, lambda r: draw(r)[0],
                               lambda files: self._send_files(interaction, files, began)))

    async def _send_files(self, interaction: discord.Interaction, attachments: list[Attachment],
                          began: float) -> None:
        """Send a reply's files (at most 10) in a follow-up while the interaction's token lives, then in its channel."""
        if not attachments:
            return
        files = [discord.File(io.BytesIO(a.data), filename=a.filename) for a in attachments[:10]]
        if time.monotonic() - began < self.token_life:
            await interaction.followup.send(files=files)
        else:
            await self.client.get_partial_messageable(interaction.channel_id or 0).send(files=files)

    def _interaction_editor(self, interaction: discord.Interaction) -> Callable[[DiscordMessage], Awaitable[None]]:
        """Edits through the interaction token while it lives; after that, a plain channel message of the bot."""
        began = time.monotonic()
        later: list[discord.Message] = []

        async def edit(message: DiscordMessage) -> None:
            if time.monotonic() - began < self.token_life:
                await interaction.edit_original_response(**self._edit_kwargs(message))
            elif not later:
                channel = self.client.get_partial_messageable(interaction.channel_id or 0)
                later.append(await channel.send(**self._send_kwargs(message)))
            else:
                await later[0].edit(**self._edit_kwargs(message))

        return edit

    # -- discord.py arguments -----------------------------------------------------------------------------------
    def _cards(self, reply: Reply) -> list[DiscordMessage]:
        return [DiscordMessage(card=c) for c in cards(reply, self.text)]

    def _layout(self, card: Card) -> discord.ui.LayoutView:
        """A card as discord.py's layout view: its texts, small print and buttons in one coloured container."""
        box: discord.ui.Container[discord.ui.LayoutView] = discord.ui.Container(accent_colour=card.colour)
        for text in card.texts:
            box.add_item(discord.ui.TextDisplay(text))
        if card.small_print:
            box.add_item(discord.ui.Separator())
            box.add_item(discord.ui.TextDisplay(card.small_print))
        buttons = card.buttons[:CARD_BUTTONS]
        for start in range(0, len(buttons), ROW_BUTTONS):
            box.add_item(discord.ui.ActionRow(*(self._item(b) for b in buttons[start:start + ROW_BUTTONS])))
        view = discord.ui.LayoutView(timeout=None)
        view.add_item(box)
        return view

    def _view(self, buttons: tuple[Button, ...] | list[Button]) -> discord.ui.View | None:
        if not buttons:
            return None
        view = discord.ui.View(timeout=None)
        for b in buttons[:25]:
            view.add_item(self._item(b))
        return view

    def _item(self, b: Button) -> discord.ui.Item[Any]:
        if b.form is None and (asks := Button.pressed(b.command)).form is not None:
            b = replace(asks, label=b.label, style=b.style)  # a line that a form completes (👎) asks first, as before
        style = _STYLES[b.style]
        # A payload goes in the custom id only when it fits and the item's template reads it back whole (a model or
        # line with spaces, line breaks or over 100 characters would come back cut or not at all); else under a key.
        payload = b.payload
        if b.form is not None:
            if _fits(payload, FormButton):
                return FormButton(b, style)
        elif _fits(f"mb:run:{payload}", RunButton):
            return RunButton(payload, b.label, style)
        # The same payload always gets the same key, so re-rendering a message (every progress edit) writes nothing.
        key = hashlib.sha256(payload.encode()).hexdigest()[:24]
        if key not in self._stored_keys:
            self.runtime.redis.set(f"modelbay:discord:button:{key}", payload, ex=KEY_KEEP)
            self._stored_keys.add(key)
        return KeyButton(key, b.label, style)

    def _send_kwargs(self, message: DiscordMessage) -> dict[str, Any]:
        if message.card is not None:  # components v2: discord.py sets the flag; content and embeds are refused
            return {"view": self._layout(message.card)}
        kwargs: dict[str, Any] = {"embeds": [discord.Embed.from_dict(e) for e in message.embeds]}
        if message.content:
            kwargs["content"] = message.content
        view = self._view(message.buttons)
        if view is not None:
            kwargs["view"] = view
        return kwargs

    def _edit_kwargs(self, message: DiscordMessage) -> dict[str, Any]:
        if message.card is not None:
            return {"view": self._layout(message.card)}
        return {"content": message.content or None, "embeds": [discord.Embed.from_dict(e) for e in message.embeds],
                "view": self._view(message.buttons)}

    def _live(self, message: discord.Message, shown: DiscordMessage | None = None) -> LiveMessage[DiscordMessage]:
        """A message of the bot edited in place, at most once a second and once a second across the bot."""
        async def edit(content: DiscordMessage) -> None:
            await message.edit(**self._edit_kwargs(content))

        return LiveMessage(edit, shown or DiscordMessage(), ref=message, interval=self.settings.discord_edit_interval,
                           pace=self.pace)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- autocomplete -----------------------------------------------------------------------------------------
    async def complete(self, interaction: discord.Interaction, arg: Arg, current: str) -> list[app_commands.Choice[str]]:
        """Model names from the registry, your job ids, or matching choices: at most 25, answered fast."""
        current = current.strip()[:100]
        if arg.autocomplete == "model":
            query = ModelQuery(text=current, limit=25) if current else ModelQuery(installed=True, limit=25)
            models, _ = await asyncio.to_thread(self.runtime.registry.search, query)
            if not models and not current:
                models, _ = await asyncio.to_thread(self.runtime.registry.search, ModelQuery(limit=25))
            return [app_commands.Choice(name=f"{m.display_name} ({m.name})"[:100], value=m.name[:100])
                    for m in models]
        if arg.autocomplete == "job":
            jobs = await asyncio.to_thread(self.runtime.jobs.list, requester=self.actor(interaction.user).key,
                                           limit=25)
            return [app_commands.Choice(name=f"{j.id} · {j.kind} · {j.status}"[:100], value=j.id)
                    for j in jobs if j.id.startswith(current)]
        return [app_commands.Choice(name=c, value=c) for c in arg.choices if current.lower() in c][:25]

    # -- chat in threads --------------------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        """A message in a chat's thread (or DM) goes to the chat; the answer streams in by edits."""
        if message.author.bot or not message.content:
            return
        if self._dm_refused(message.guild):
            return
        # The gateway replays events after a RESUME: a message already seen is not answered again.
        if not await first_delivery(self.runtime.redis, "discord", f"message:{message.id}"):
            return
        place = self.place_of(message)
        if await asyncio.to_thread(self.runtime.chats.current, place) is None:
            return
        actor = self.actor(message.author)
        ctx = self.dispatcher.context(actor, place)
        thinking = DiscordMessage(card=Card(COLOURS["info"], ("_Thinking…_",)))
        first = await message.channel.send(**self._send_kwargs(thinking), reference=message, mention_author=False)
        stream = StreamedAnswer(_DiscordAnswer(self, message.channel), self._live(first, thinking))
        try:
            await relay(ctx, message.content, stream)
        except Exception as exc:  # noqa: BLE001 - the answer could not start (not served, no role): one line
            reply = render_error(exc, reraise_unknown=self.dispatcher.reraise_unknown)
            await first.edit(**self._edit_kwargs(self._cards(reply)[0]))  # the card stays a card

    # -- files ------------------------------------------------------------------------------------------------
    def _add_dataset_command(self) -> None:
        """`/datasets add` takes the file as an attachment here (the console takes a path), with the same options."""
        group, cmd = self.commands.get("datasets"), self.dispatcher.commands.get(("datasets", "add"))
        if not isinstance(group, app_commands.Group) or cmd is None:
            return
        group.remove_command("add")
        group.add_command(app_command(cmd, "add", self.receive_file, self.complete, file="path",
                                      help="Add a dataset file (attach it) and show its report card."))

    async def receive_file(self, interaction: discord.Interaction, cmd: Command, options: dict[str, Any]) -> None:
        """Fetch an attachment (from Discord's CDN only) into the person's datasets and answer with its card."""
        async def go() -> None:
            file: discord.Attachment = options.pop("path")
            invocation = self.dispatcher.prepare(cmd.path, options, self.actor(interaction.user),
                                                 self.place_of(interaction))
            if invocation.error is not None:
                raise invocation.error
            ctx = invocation.context
            if not ctx.has_role("user"):
                raise NotAllowed("adding datasets", ctx.role, "user")
            name = self.runtime.datasets.check(file.filename, file.size)
            if not self._trusted_file_url(file.url):
                raise UploadRefused(file.filename, "its link is not on Discord's file host.")
            await interaction.response.defer(thinking=True)
            data = await file.read()
            values = {k: v for k, v in invocation.values.items() if k != "path"}
            await self.respond(interaction, await add_file(ctx, name, [data], source="discord", **values),
                               deferred=True)

        await self.guarded(interaction, go())

    def _trusted_file_url(self, url: str) -> bool:
        parts, api = urlsplit(url), urlsplit(self.settings.discord_api_url)
        if parts.scheme == "https" and parts.hostname in _FILE_HOSTS:
            return True
        return parts.scheme == api.scheme and parts.hostname == api.hostname and parts.port == api.port


class _DiscordAnswer:
    """How an answer shows in a Discord channel: one card per 4,000 characters of it, code at the chat's full width."""

    limit = TEXT_CHARS - ANSWER_NOTES - 2  # room for the last card's notes, and for the cursor
    weigh = staticmethod(len)

    def __init__(self, adapter: DiscordAdapter, channel: Any) -> None:
        self.adapter = adapter
        self.channel = channel

    async def post(self, shown: DiscordMessage) -> LiveMessage[DiscordMessage]:
        return self.adapter._live(await self.channel.send(**self.adapter._send_kwargs(shown)), shown)

    def draw(self, part: Part, *, writing: bool) -> DiscordMessage:
        text = str(part) if part.text else "…"
        return DiscordMessage(card=Card(COLOURS["info"], (with_cursor(text) if writing else text,)))

    def draw_final(self, part: Part, reply: Reply, notices: list[str]) -> DiscordMessage:
        text = str(part) or "…"
        notes = fit_notes([*notices, reply.footer or ""], TEXT_CHARS - len(text))
        return DiscordMessage(card=Card(COLOURS[reply.tone], (text,), notes, tuple(reply.buttons)))
