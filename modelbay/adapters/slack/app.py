"""The Slack app (slack-bolt): `/modelbay` commands, buttons, modals, shortcuts, App Home, threads and files.

Every listener acknowledges at once and does its work in a bolt lazy listener, so Slack always hears back within
its 3 seconds. Commands run through the same Dispatcher as every other front end; replies are rendered by
`blocks.render`, and a reply that follows a job is kept up to date in place by a throttled LiveMessage.

Chat answers stream with Slack's chat streaming API where the workspace offers it (`streaming.NativeAnswer`: the
model's Markdown in Slack's own rendering, 👍/👎 as Slack's feedback buttons); where a streaming call is refused,
the answer is shown by editing messages with chat.update instead (`StreamedAnswer`, mrkdwn sections and buttons),
and a refusal that concerns the whole app (an unknown method, a missing scope) keeps answers on that path for
`STREAMING_RECHECK` seconds. The log says which path each answer takes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from modelbay.adapters.slack import views
from modelbay.adapters.slack.blocks import (
    ACTION_PREFIX, FALLBACK_CHARS, SECTION_CHARS, STREAM_CHARS, SlackMessage, answer_tail, context, escape,
    escaped_chars, mrkdwn, render, section, slack_text, tail,
)
from modelbay.adapters.slack.outbox import Outbox
from modelbay.adapters.slack.streaming import NativeAnswer, StreamLimits, StreamRefused
from modelbay.bot.context import Actor
from modelbay.bot.conversation import relay
from modelbay.bot.deliveries import first_delivery
from modelbay.bot.dispatcher import Dispatcher, Invocation
from modelbay.bot.errors import render_error
from modelbay.bot.live import LiveMessage, RateLimited
from modelbay.bot.progress import follow, following
from modelbay.bot.reply import FORMS, Attachment, Button, Reply
from modelbay.bot.stream import StreamedAnswer, with_cursor
from modelbay.bot.text import Part, split_parts
from modelbay.engine.analytics import charts
from modelbay.engine.analytics.analytics import parse_period
from modelbay.engine.analytics.compare import Column, dashboard
from modelbay.engine.chat.records import Place
from modelbay.engine.datasets.records import DatasetRecord
from modelbay.engine.catalog.discovery import SearchHit
from modelbay.engine.errors import UploadRefused
from modelbay.runtime import Runtime

__all__ = ["SlackAdapter", "Where"]

log = logging.getLogger(__name__)
GROUPS_FRESH_FOR = 300.0  # seconds a user-group membership list is trusted
SEED_KEEP = 3600  # seconds a message waits in Redis for its "Ask a model" modal to be submitted
_CHUNK = 1 << 16
HOME_CHART_CHECKS = (0.2, 0.5, 1.0, 2.0)  # seconds between files.info calls while Slack processes the Home chart
HOME_CHARTS_KEPT = 16  # distinct Home tab charts remembered, so an unchanged chart is not uploaded again
STREAMING_RECHECK = 600.0  # seconds answers stay on chat.update after the app was refused the streaming methods
# Refusals of the streaming methods that concern the app or workspace, not one answer or channel.
_APP_REFUSALS = frozenset({"unknown_method", "not_allowed", "missing_scope", "not_allowed_token_type", "no_permission",
                           "method_deprecated", "feature_not_enabled", "team_access_not_granted"})


@dataclass(frozen=True)
class Where:
    """Where a request came from and where its answer goes: a channel, maybe a thread, the person asking."""

    channel: str
    user: str
    thread_ts: str | None = None
    response_url: str | None = None
    team: str | None = None  # the workspace of the person asking (streamed answers outside DMs name it)

    @property
    def place(self) -> Place:
        """The chat place this is."""
        return Place("slack", self.channel, self.thread_ts)


_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def _slack_text(text: str, *, command: bool = False) -> str:
    """Text as the person wrote it, Slack's escapes undone: a message loses mentions of the app, a command line
    its typographic quotes (which Slack clients type for ")."""
    text = text.translate(_QUOTES) if command else re.sub(r"<@[A-Z0-9]+>", "", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


class SlackAdapter:
    """Translates Slack requests into Dispatcher calls and renders the Replies back into Slack."""

    def __init__(self, runtime: Runtime, *, dispatcher: Dispatcher | None = None, socket_mode: bool = False) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.settings = settings
        self.dispatcher = dispatcher or Dispatcher(runtime)
        self.text = slack_text(self.dispatcher.commands, settings.slack_command)  # built once, used per render
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        self._token = token
        self.client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
        self.outbox = Outbox(self.client)
        # Socket Mode requests come over the app's own authenticated socket; HTTP requests must be signed.
        self.app = AsyncApp(name="modelbay", client=self.client, signing_secret=secret,
                            request_verification_enabled=not socket_mode or secret is not None)
        self._groups: tuple[float, dict[str, list[str]]] = (0.0, {})
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stream_limits = StreamLimits()
        self._streaming_off_until = 0.0
        self._home_charts: dict[str, str] = {}  # Home tab charts uploaded: Slack file id -> the PNG's sha256
        self._register()

    # -- listeners ------------------------------------------------------------------------------------------
    def _register(self) -> None:
        app = self.app
        app.command(self.settings.slack_command)(ack=self._ack, lazy=[self._guard(self._on_command)])
        app.action(re.compile(f"^{ACTION_PREFIX}"))(ack=self._ack_button, lazy=[self._guard(self._on_button)])
        app.action(views.OPEN_BROWSE)(ack=self._ack, lazy=[self._guard(self._open_browse)])
        app.action(views.OPEN_UPLOAD)(ack=self._ack, lazy=[self._guard(self._open_upload)])
        browse_actions = re.compile(f"^({views.BROWSE_QUERY}|{views.BROWSE_CATEGORY})$")
        app.action(browse_actions)(ack=self._ack, lazy=[self._guard(self._refresh_browse)])
        app.global_shortcut(views.BROWSE)(ack=self._ack, lazy=[self._guard(self._open_browse)])
        app.message_shortcut(views.ASK)(ack=self._ack, lazy=[self._guard(self._open_ask)])
        app.view_submission(views.FORM)(ack=self._ack, lazy=[self._guard(self._on_form)])
        app.view_submission(views.ASK)(ack=self._ack, lazy=[self._guard(self._on_ask)])
        app.view_submission(views.UPLOAD)(ack=self._ack, lazy=[self._guard(self._on_upload)])
        app.event("app_home_opened")(self._on_home)
        app.event("message")(self._on_message)
        app.error(self._on_error)

    def _guard(self, listener: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """A lazy listener whose failure reaches the person as one line (bolt itself would only log it)."""
        @functools.wraps(listener)  # bolt reads the wrapped listener's argument names to inject them
        async def guarded(**kwargs: Any) -> None:
            try:
                await listener(**kwargs)
            except Exception as exc:  # noqa: BLE001 - rendered for the person, logged with a reference
                await self._on_error(exc, kwargs.get("body") or kwargs.get("command") or {})

        return guarded

    async def _ack(self, ack: Any) -> None:
        await ack()

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        """A listener failed (a modal, a shortcut): tell the person in one line, in their DM with the app."""
        reply = render_error(error)  # logs it with a reference
        user = (body.get("user") or {}).get("id") or body.get("user_id")
        if not user:
            return
        try:
            await self.outbox.post(user, render(reply, self.text)[0])
        except Exception:  # noqa: BLE001 - nothing more can reach them; the log has the error
            log.exception("could not tell %s about a failed request", user)

    async def _on_command(self, command: dict[str, Any]) -> None:
        where = Where(command["channel_id"], command["user_id"], response_url=command.get("response_url"),
                      team=command.get("team_id"))
        actor = await self.actor(command["user_id"], command.get("user_name", ""))
        text = _slack_text(command.get("text") or "", command=True)
        await self.run_line("/" + (text or "help"), actor, where)

    async def _ack_button(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        pressed = Button.pressed(action.get("value", ""))
        if pressed.form is not None:  # it asks first, in a modal; trigger ids live 3 seconds: opened here, not lazily
            where = self._where_of(body)
            await self.outbox.call("views_open", trigger_id=body["trigger_id"], view=views.form_modal(
                pressed, where.channel if where else None, where.thread_ts if where else None))

    async def _on_button(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        pressed = Button.pressed(action.get("value", ""))
        if pressed.form is not None:
            return  # runs when its modal is submitted
        actor = await self.actor(body["user"]["id"], body["user"].get("name", ""))
        where = self._where_of(body) or await self._direct(body["user"]["id"])
        await self.run_line(pressed.command, actor, where)

    def _where_of(self, body: dict[str, Any]) -> Where | None:
        """Where a button's answer goes: the thread of the message that holds it (None for Home and modals)."""
        message, channel = body.get("message"), body.get("channel")
        if not message or not channel:
            return None
        return Where(channel["id"], body["user"]["id"], message.get("thread_ts") or message["ts"],
                     body.get("response_url"), (body.get("team") or {}).get("id"))

    async def _direct(self, user: str) -> Where:
        """The person's direct message channel with the app (for answers to Home tab and modal actions)."""
        opened = await self.outbox.call("conversations_open", users=user)
        return Where(opened["channel"]["id"], user)

    # -- commands and replies -------------------------------------------------------------------------------
    async def run_line(self, line: str, actor: Actor, where: Where) -> None:
        """Run a command line and deliver its reply (`run`); what Slack itself refuses is said privately. Never
        raises."""
        try:
            await self.run(self.dispatcher.prepare_line(line, actor, where.place), where, line)
        except Exception as exc:  # noqa: BLE001 - Slack itself failed us: say so privately, keep the traceback
            reply = render_error(exc)
            try:
                await self._ephemeral(where, render(reply)[0])
            except Exception:  # noqa: BLE001 - nothing more can reach the person; the log has both
                log.exception("could not tell %s that %s failed", where.user, line[:80])

    async def run(self, invocation: Invocation, where: Where, line: str = "") -> None:
        """Run a prepared command and deliver its reply: in a thread of its own when it opens one, after a
        "Working on…" placeholder when it is slow. Raises what Slack raises."""
        if invocation.opens_thread:
            await self.start_chat(invocation, where)
            return
        live = None
        if invocation.defer and invocation.command is not None:
            shown = mrkdwn((line or invocation.command.name)[:200])
            live = await self._post_live(where, SlackMessage(
                [context(f":hourglass_flowing_sand: Working on `{shown}`…")], "Working…"))
        await self.deliver(await invocation.run(), where, live)

    async def start_chat(self, invocation: Invocation, where: Where, seed: str | None = None) -> None:
        """Open a chat in a thread (the one the request came from, or a new one under a message posted for it)."""
        root = None
        if where.thread_ts is None:
            root = await self._post_live(where, SlackMessage(
                [context(":speech_balloon: Starting a chat…")], "Starting a chat…"))
            if root is None:
                return
            where = dataclasses.replace(where, thread_ts=root.ref.ts)
        reply = await invocation.at(where.place).run()
        if not reply.ephemeral:
            reply.text = f"{reply.text} Reply in this thread to talk to it.".strip()
        await self.deliver(reply, where, root)
        if seed and not reply.ephemeral:
            await self.answer(invocation.context.actor, where, seed)

    async def deliver(self, reply: Reply, where: Where, live: LiveMessage | None = None) -> None:
        """Post a reply (privately when ephemeral), continue it in the thread, upload its files, follow its job."""
        if reply.ephemeral:
            if live is not None:
                await self.outbox.call("chat_delete", channel=live.ref.channel, ts=live.ref.ts)
            for message in render(reply, self.text):
                await self._ephemeral(where, message)
            return
        messages = render(reply, self.text)
        if live is None:
            live = await self._post_live(where, messages[0])
            if live is None:
                return
        else:
            await live.settle(messages[0])
        thread = where.thread_ts or live.ref.ts
        for message in messages[1:]:
            await self.outbox.post(where.channel, message, thread)
        await self._upload(where.channel, thread, reply.attachments)
        if following(reply):
            self._spawn(follow(self.runtime.jobs, live, reply, lambda r: render(r, self.text)[0],
                               lambda files: self._upload(where.channel, thread, files)))

    async def _upload(self, channel: str, thread: str, attachments: list[Attachment]) -> None:
        """Upload a reply's files into its thread."""
        for attachment in attachments:
            await self.outbox.call("files_upload_v2", channel=channel, thread_ts=thread, content=attachment.data,
                                   filename=attachment.filename, title=attachment.filename)

    async def _post_live(self, where: Where, message: SlackMessage) -> LiveMessage | None:
        """Post a message that will be edited; outside channels the app is in, join (public) or tell how to invite."""
        interval = self.settings.slack_update_interval
        try:
            return await self.outbox.live(where.channel, message, where.thread_ts, interval=interval)
        except SlackApiError as exc:
            if exc.response.get("error") not in ("not_in_channel", "channel_not_found"):
                raise
        try:
            await self.outbox.call("conversations_join", channel=where.channel)
            return await self.outbox.live(where.channel, message, where.thread_ts, interval=interval)
        except SlackApiError:
            await self._ephemeral(where, SlackMessage([section(
                ":wave: I am not in this channel. Invite me with `/invite @ModelBay` and try again, or use a direct "
                "message with me.")], "Invite ModelBay to this channel"))
            return None

    async def _ephemeral(self, where: Where, message: SlackMessage) -> None:
        """Show a message only to the person asking (through the response URL when the request has one)."""
        if where.response_url:
            await AsyncWebhookClient(where.response_url).send(response_type="ephemeral", text=message.text,
                                                               blocks=message.blocks)
            return
        await self.outbox.call("chat_postEphemeral", channel=where.channel, user=where.user,
                               thread_ts=where.thread_ts, blocks=message.blocks, text=message.text)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    # -- chat in threads ------------------------------------------------------------------------------------
    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype") not in (None, "file_share", "thread_broadcast"):
            return
        user, channel = event.get("user"), event.get("channel")
        # Slack retries an event (same event id) and may send the same message again under a new one.
        if not await first_delivery(self.runtime.redis, "slack", body.get("event_id") and f"event:{body['event_id']}",
                                    event.get("ts") and f"message:{channel}:{event['ts']}",
                                    event.get("client_msg_id") and f"client:{event['client_msg_id']}"):
            return
        if not user or not channel:
            return
        actor = await self.actor(user)
        if event.get("files") and event.get("channel_type") == "im":
            await self.receive_files(actor, Where(channel, user, event.get("thread_ts")), event["files"])
            return
        thread = event.get("thread_ts")
        if thread is None:
            return  # chats live in threads; other channel messages are not for ModelBay
        where = Where(channel, user, thread, team=body.get("team_id") or event.get("team"))
        if await asyncio.to_thread(self.runtime.chats.current, where.place) is None:
            return
        await self.answer(actor, where, _slack_text(event.get("text", "")))

    async def answer(self, actor: Actor, where: Where, text: str) -> None:
        """Stream the chat's answer into the thread: natively where Slack offers it, else by editing messages."""
        ctx = self.dispatcher.context(actor, where.place)
        live = await self._post_live(where, THINKING)
        if live is None:
            return
        sink = _Answer(self, where, live)
        try:
            await relay(ctx, text, sink)
        except Exception as exc:  # noqa: BLE001 - before the answer started (not served, no chat): one line
            reply = render_error(exc, reraise_unknown=self.dispatcher.reraise_unknown)
            if sink.text:  # cannot happen after the first token (failures then end the answer), kept for safety
                await sink.finish(reply)
            else:
                await self.deliver(reply, where, live)

    def streaming(self) -> bool:
        """Whether answers try Slack's streaming methods now (not after the app was refused them lately)."""
        return time.monotonic() >= self._streaming_off_until

    def refused_streaming(self, where: Where, refusal: StreamRefused) -> None:
        """Log that an answer falls back to chat.update; a refusal of the app keeps answers there for a while."""
        if refusal.error in _APP_REFUSALS:
            self._streaming_off_until = time.monotonic() + STREAMING_RECHECK
        log.warning("slack answer in %s/%s falls back to chat.update: %s", where.channel, where.thread_ts, refusal)

    # -- shortcuts, modals and Home ---------------------------------------------------------------------------
    async def _open_browse(self, body: dict[str, Any]) -> None:
        actor = await self.actor(body["user"]["id"])
        view = await self._browse_view(actor, "", None)
        await self.outbox.call("views_open", trigger_id=body["trigger_id"], view=view)

    async def _refresh_browse(self, body: dict[str, Any]) -> None:
        view = body["view"]
        state = view.get("state", {}).get("values", {})
        query = (state.get("query", {}).get(views.BROWSE_QUERY, {}).get("value") or "").strip()
        chosen = state.get("category", {}).get(views.BROWSE_CATEGORY, {}).get("selected_option") or {}
        category = chosen.get("value") if chosen.get("value") not in (None, "all") else None
        actor = await self.actor(body["user"]["id"])
        fresh = await self._browse_view(actor, query, category)
        try:
            await self.outbox.call("views_update", view_id=view["id"], hash=view.get("hash"), view=fresh)
        except SlackApiError as exc:
            if exc.response.get("error") != "hash_conflict":  # a newer search already replaced it
                raise

    async def _browse_view(self, actor: Actor, query: str, category: str | None) -> dict[str, Any]:
        runtime = self.runtime
        ctx = self.dispatcher.context(actor)
        notices: list[str] = []
        if query:
            hits, notices = await ctx.call(runtime.discovery.search, query, source="all", category=category, limit=20)
        else:
            models, _ = await ctx.call(runtime.registry.list_models, category=category, limit=20, offset=0)
            hits = [SearchHit.of(m) for m in models]
        return views.browse_modal(hits, query=query, category=category, notices=notices,
                                  may_install=ctx.has_role("admin"))

    async def _open_ask(self, body: dict[str, Any], shortcut: dict[str, Any]) -> None:
        message = shortcut.get("message", {})
        seed = {"text": _slack_text(message.get("text", "")), "channel": shortcut["channel"]["id"],
                "thread": message.get("thread_ts") or message.get("ts")}
        key = secrets.token_urlsafe(12)
        await asyncio.to_thread(self.runtime.redis.set, f"modelbay:slack:seed:{key}", json.dumps(seed), ex=SEED_KEEP)
        models, _ = await asyncio.to_thread(self.runtime.registry.list_models, installed=True, limit=100, offset=0)
        await self.outbox.call("views_open", trigger_id=body["trigger_id"],
                               view=views.ask_modal(models, key, seed["text"]))

    async def _on_ask(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        key = json.loads(view.get("private_metadata") or "{}").get("seed", "")
        raw = await asyncio.to_thread(self.runtime.redis.get, f"modelbay:slack:seed:{key}")
        user = body["user"]["id"]
        if raw is None:
            await self.deliver(Reply(text="That request expired; use Ask a model on the message again.",
                                     tone="warning", ephemeral=True), await self._direct(user))
            return
        seed = json.loads(raw)
        model = values["model"]["model"]["selected_option"]["value"]
        system = (values.get("system", {}).get("system", {}).get("value") or "").strip()
        actor = await self.actor(user)
        where = Where(seed["channel"], user, seed["thread"], team=(body.get("team") or {}).get("id"))
        invocation = self.dispatcher.prepare(("chat",), {"model": model, "system": system or None}, actor, where.place)
        await self.start_chat(invocation, where, seed=seed["text"])

    async def _on_form(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        """A button's form was submitted: run its line with what it asked for, where the button was."""
        meta = json.loads(view.get("private_metadata") or "{}")
        form = FORMS[meta.get("form", "down")]  # modals opened before forms had names were the 👎 one
        value = str(meta.get("value", meta.get("message", "")))
        user = body["user"]["id"]
        actor = await self.actor(user)
        where = Where(meta["channel"], user, meta.get("thread")) if meta.get("channel") else await self._direct(user)
        more = views.form_values(form, view["state"]["values"])
        await self.run(self.dispatcher.prepare_line(form.line_for(value), actor, where.place, more), where)

    async def _open_upload(self, body: dict[str, Any]) -> None:
        await self.outbox.call("views_open", trigger_id=body["trigger_id"], view=views.upload_modal())

    async def _on_upload(self, body: dict[str, Any], view: dict[str, Any]) -> None:
        files = view["state"]["values"]["file"][views.UPLOAD_FILE].get("files") or []
        user = body["user"]["id"]
        await self.receive_files(await self.actor(user), await self._direct(user), files)

    async def _on_home(self, event: dict[str, Any]) -> None:
        if event.get("tab") != "home":
            return
        actor = await self.actor(event["user"])
        ctx = self.dispatcher.context(actor)
        runtime = self.runtime
        installed, _ = await ctx.call(runtime.registry.list_models, installed=True, limit=15, offset=0)
        requester = None if ctx.has_role("admin") else actor.key
        jobs = await ctx.call(runtime.jobs.list, requester=requester, active=True, limit=10)
        chats = await ctx.call(runtime.chats.recent, actor.key, 10)
        figures, _ = await ctx.call(dashboard, runtime.db, runtime.registry, runtime.analytics,
                                    parse_period("24h"), views.HOME_FIGURES)
        chart = await self._home_chart(figures)
        view = views.home_view(installed=installed, jobs=jobs, chats=chats, role=ctx.role, figures=figures,
                               chart=chart)
        try:
            await self.outbox.call("views_publish", user_id=event["user"], view=view)
        except SlackApiError as exc:
            if chart is None or exc.response.get("error") != "invalid_blocks":
                raise
            # Slack refuses an image block whose file it cannot show yet (still processing, or gone): the figures
            # and the chart's text are in the section above it, so publish without the image.
            log.warning("slack refused the Home tab's chart %s (%s); published without it", chart.file_id,
                        exc.response.get("errors") or exc.response.get("error"))
            self._home_charts.pop(chart.file_id, None)
            view["blocks"] = [b for b in view["blocks"] if b.get("type") != "image"]
            await self.outbox.call("views_publish", user_id=event["user"], view=view)

    # -- Home tab chart --------------------------------------------------------------------------------------------
    async def _home_chart(self, figures: list[Column]) -> views.HomeChart | None:
        """The dashboard chart uploaded to Slack (once per distinct drawing) and processed, for an image block, or
        None when there is nothing to draw or Slack did not take it.

        An image block can show a Slack file by id (`slack_file`) that the app can see: a file the bot uploaded
        with files_upload_v2 and shared nowhere qualifies. Slack processes an upload after completing it, and
        refuses a block naming a file still in processing, so files.info is asked until it reports the file's type.
        """
        if not any(c.metrics.requests or c.metrics.ratings for c in figures):
            return None
        png = await asyncio.to_thread(charts.dashboard_png, figures, "Models · last 24h")
        text = charts.dashboard_text(figures)
        digest = hashlib.sha256(png).hexdigest()
        cached = next((file_id for file_id, seen in self._home_charts.items() if seen == digest), None)
        if cached is not None:
            return views.HomeChart(cached, text)
        try:
            uploaded = await self.outbox.call("files_upload_v2", content=png, filename="modelbay-dashboard.png",
                                              title="ModelBay · last 24 hours")
            file_id = str(uploaded["file"]["id"])
            for wait in HOME_CHART_CHECKS:
                info = await self.outbox.call("files_info", file=file_id)
                if (info.get("file") or {}).get("mimetype"):
                    break
                await asyncio.sleep(wait)
            else:
                log.warning("slack was still processing the Home tab's chart %s; shown without it", file_id)
                return None
        except (SlackApiError, RateLimited, KeyError, TypeError) as exc:
            log.warning("could not upload the Home tab's chart: %s", exc)
            return None
        self._home_charts[file_id] = digest
        while len(self._home_charts) > HOME_CHARTS_KEPT:
            self._home_charts.pop(next(iter(self._home_charts)))
        return views.HomeChart(file_id, text)

    # -- files --------------------------------------------------------------------------------------------------
    async def receive_files(self, actor: Actor, where: Where, files: list[dict[str, Any]]) -> None:
        """Fetch files shared with the app (with the bot token, from Slack's file host only) into datasets, and
        show each one's card (`/datasets info <id>`); refused files are listed in one message."""
        ctx = self.dispatcher.context(actor)
        refused: list[str] = []
        for file in files[:5]:
            name = str(file.get("name") or file.get("title") or "file")
            try:
                if not ctx.has_role("user"):
                    raise UploadRefused(name, f"adding datasets needs the user role (yours: {ctx.role}).")
                ctx.runtime.datasets.check(name, file.get("size"))
                record = await self._fetch(actor, name, file)
            except Exception as exc:  # noqa: BLE001 - each file gets its own one-line answer
                refused.append(":x: " + render_error(exc, reraise_unknown=self.dispatcher.reraise_unknown).text)
                continue
            await self.run(self.dispatcher.prepare_line(f"/datasets info {record.id}", actor, where.place), where)
        if refused:
            await self.deliver(Reply(text="\n".join(refused), footer="`/modelbay datasets` lists your datasets."),
                               where)

    async def _fetch(self, actor: Actor, name: str, file: dict[str, Any]) -> DatasetRecord:
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        if not self._trusted_file_url(url):
            raise UploadRefused(name, "its download link is not on Slack's file host.")
        limit = self.runtime.datasets.max_bytes
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            size = 0
            timeout = aiohttp.ClientTimeout(total=600, sock_read=60)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url, headers={"Authorization": f"Bearer {self._token}"},
                                       allow_redirects=False) as response:
                    if response.status != 200:
                        raise UploadRefused(name, f"Slack answered {response.status} when fetching it; try again.")
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            self.runtime.datasets.check(name, size)  # refuses it, naming the limit
                        spool.write(chunk)
            spool.seek(0)

            def chunks() -> Iterator[bytes]:
                while block := spool.read(_CHUNK):
                    yield block

            return await asyncio.to_thread(self.runtime.datasets.add, actor.key, name, chunks(), source="slack")

    def _trusted_file_url(self, url: str) -> bool:
        """Only Slack's own file host (or the configured API host) ever receives the bot token."""
        parts, api = urlsplit(url), urlsplit(self.settings.slack_api_url)
        if parts.scheme == "https" and parts.hostname == "files.slack.com":
            return True
        return parts.scheme == api.scheme and parts.hostname == api.hostname and parts.port == api.port

    # -- identity ---------------------------------------------------------------------------------------------
    async def actor(self, user_id: str, name: str = "") -> Actor:
        """The Slack user as an Actor, with the user groups the role map may name (`slack:group:S0123`)."""
        groups: tuple[str, ...] = ()
        if any(member.startswith("slack:group:") for members in self.settings.roles.values() for member in members):
            groups = tuple(f"group:{g}" for g in (await self._memberships()).get(user_id, []))
        return Actor("slack", user_id, name, groups)

    async def _memberships(self) -> dict[str, list[str]]:
        fetched_at, members = self._groups
        if time.monotonic() - fetched_at < GROUPS_FRESH_FOR:
            return members
        fresh: dict[str, list[str]] = {}
        try:
            response = await self.outbox.call("usergroups_list", include_users=True)
            for group in response.get("usergroups", []):
                for user in group.get("users", []):
                    fresh.setdefault(user, []).append(group["id"])
        except Exception as exc:  # noqa: BLE001 - without groups people get the roles named for them alone
            log.warning("slack user groups unavailable (%s); roles by group are not applied", exc)
            return members
        self._groups = (time.monotonic(), fresh)
        return fresh


THINKING = SlackMessage([context(":hourglass_flowing_sand: Thinking…")], "Thinking…")


class _Answer:
    """Where one answer goes: Slack's chat streaming API when offered, else messages edited with chat.update.

    The "Thinking…" message gives way to the streamed message once it is up; if streaming is refused later, what
    was streamed is removed and the whole answer is shown again on the chat.update path, so nothing is lost or
    shown twice.
    """

    def __init__(self, adapter: SlackAdapter, where: Where, thinking: LiveMessage[SlackMessage]) -> None:
        self.adapter = adapter
        self.where = where
        self.thinking: LiveMessage[SlackMessage] | None = thinking
        self.notices: list[str] = []
        self.native: NativeAnswer | None = None
        self.edited: StreamedAnswer[SlackMessage] | None = None
        if adapter.streaming() and where.thread_ts:
            self.native = NativeAnswer(adapter.client, where.channel, where.thread_ts, user=where.user,
                                       team=where.team, limits=adapter.stream_limits, tail=answer_tail,
                                       on_start=self._started)
            self.native.notices = self.notices
        else:
            log.info("slack answer in %s/%s is shown with chat.update", where.channel, where.thread_ts)

    @property
    def text(self) -> str:
        """The answer so far."""
        return self.native.text if self.native is not None else self.edited.text if self.edited else ""

    async def add(self, piece: str) -> None:
        if self.native is not None:
            try:
                await self.native.add(piece)
                return
            except StreamRefused as refusal:
                await self._fall_back(refusal)
                return
        await (await self._edited()).add(piece)

    async def finish(self, reply: Reply) -> None:
        if self.native is not None:
            try:
                await self.native.finish(reply)
                return
            except StreamRefused as refusal:
                await self._fall_back(refusal)
        await (await self._edited()).finish(reply)

    async def _started(self) -> None:
        thinking, self.thinking = self.thinking, None
        if thinking is None:
            return
        try:
            await thinking.settle()
            await self.adapter.outbox.call("chat_delete", channel=thinking.ref.channel, ts=thinking.ref.ts)
        except Exception:  # noqa: BLE001 - a "Thinking…" left above the answer is untidy, not wrong
            log.warning("could not remove the Thinking… message in %s", self.where.channel, exc_info=True)

    async def _fall_back(self, refusal: StreamRefused) -> None:
        """Show the answer so far on the chat.update path, removing any streamed message first."""
        native, self.native = self.native, None
        assert native is not None
        if refusal.error != "nothing to stream":
            self.adapter.refused_streaming(self.where, refusal)
        for ts in native.messages:
            try:
                await self.adapter.outbox.call("chat_delete", channel=self.where.channel, ts=ts)
            except Exception:  # noqa: BLE001 - it stays above the answer shown again below
                log.warning("could not remove streamed message %s in %s", ts, self.where.channel, exc_info=True)
        edited = await self._edited()
        if native.text:
            await edited.add(native.text)

    async def _edited(self) -> StreamedAnswer[SlackMessage]:
        if self.edited is None:
            thinking = self.thinking or await self.adapter._post_live(self.where, THINKING)
            if thinking is None:
                raise RuntimeError(f"cannot post in {self.where.channel}")
            self.thinking = None
            self.edited = StreamedAnswer(_SlackAnswer(self.adapter, self.where), thinking)
            self.edited.notices = self.notices
        return self.edited


class _SlackAnswer:
    """How an answer shows in a Slack thread: a message per 3,500 escaped characters, sections of up to 3,000."""

    limit = STREAM_CHARS
    weigh = staticmethod(escaped_chars)  # Slack counts the escaped text

    def __init__(self, adapter: SlackAdapter, where: Where) -> None:
        self.adapter = adapter
        self.where = where

    async def post(self, shown: SlackMessage) -> LiveMessage[SlackMessage]:
        return await self.adapter.outbox.live(self.where.channel, shown, self.where.thread_ts,
                                              interval=self.adapter.settings.slack_update_interval)

    @staticmethod
    def _sections(part: Part, *, writing: bool = False) -> list[dict[str, Any]]:
        # Each section renders on its own, so a part is cut again (code blocks closed and reopened) into sections;
        # the cursor's room comes off the last one.
        pieces = [str(p) for p in split_parts(str(part), SECTION_CHARS - 2, escaped_chars)] if part.text else []
        texts = [mrkdwn(p) for p in pieces] or ["…"]
        if writing:
            texts[-1] = with_cursor(texts[-1])
        return [section(t) for t in texts]

    def draw(self, part: Part, *, writing: bool) -> SlackMessage:
        return SlackMessage(self._sections(part, writing=writing), escape(part.text[:FALLBACK_CHARS]) or "…")

    def draw_final(self, part: Part, reply: Reply, notices: list[str]) -> SlackMessage:
        blocks = [context(":information_source: " + mrkdwn(" ".join(notices)))] if notices else []
        blocks += self._sections(part) + tail(reply)
        return SlackMessage(blocks, escape(part.text[:FALLBACK_CHARS]) or "Answer")
