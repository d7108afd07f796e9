"""A recording stand-in for Discord: its HTTP API, a gateway websocket and a CDN, on one local port.

The real discord.py client logs in here (MODELBAY_DISCORD_API_URL), connects to the gateway
(MODELBAY_DISCORD_GATEWAY_URL), gets READY with one server, and then receives the interactions and messages the
tests push, shaped as Discord's gateway delivers them. Every HTTP call is recorded; tests read them and can
script 429s.

Messages are checked as Discord checks them (`form_errors`), and one that breaks a rule is answered 400 with
Discord's "Invalid Form Body" shape (code 50035, the errors nested by field path), so a test sees every limit a
real server would hold the bot to: 2,000 characters of content; custom ids of 1 to 100 characters; 5 buttons to
an action row; and for a components-v2 message (flag 1<<15, Discord's IS_COMPONENTS_V2) no content, embeds,
poll or stickers, at most 40 components nested ones included, at most 4,000 characters across its text displays,
none empty, and a flag that no edit may take away. Layout components (text displays, containers, sections,
separators, media) without the flag are refused too. An edit changes only the fields it sends.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from modelbay.adapters.discord import DiscordAdapter
from modelbay.bot import Dispatcher
from modelbay.runtime import Runtime
from tests.conftest import wait_for
from tests.support.aioserver import ThreadedServer
from tests.support.commands import COMMANDS_HERE

__all__ = ["APP_ID", "BOT_TOKEN", "CHANNEL", "GUILD", "Attached", "Bot", "Call", "DiscordStandIn", "option", "user"]

BOT_TOKEN = "test.discord.bot-token"
APP_ID = "100000000000000001"
BOT_ID = "100000000000000002"
GUILD = "200000000000000001"
CHANNEL = "300000000000000001"
ADMIN_ROLE = "400000000000000001"
_NOW = "2026-11-27T00:00:00+00:00"
COMPONENTS_V2 = 1 << 15  # the message flag IS_COMPONENTS_V2
CONTENT_CHARS = 2000
CUSTOM_ID_CHARS = 100
LAYOUT_COMPONENTS = 40  # components in a components-v2 message, nested ones included
LAYOUT_TEXT_CHARS = 4000  # characters across a components-v2 message's text displays
ROW_CHILDREN = 5
# Section, text display, thumbnail, media gallery, file, separator, container: components v2 only.
_LAYOUT_TYPES = {9, 10, 11, 12, 13, 14, 17}
_INTERACTIVE = {2, 3, 5, 6, 7, 8}  # buttons and the selects


def user(user_id: str, name: str | None = None) -> dict[str, Any]:
    """A Discord user object."""
    return {"id": user_id, "username": name or f"user{user_id[-3:]}", "discriminator": "0", "global_name": name,
            "avatar": None, "bot": False}


BOT_USER = {**user(BOT_ID, "ModelBay"), "bot": True}


@dataclass
class Call:
    """One HTTP request the stand-in received."""

    method: str
    path: str  # without the /api/v10 prefix, e.g. /interactions/9/tok/callback
    body: dict[str, Any]
    at: float
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        """The call's body as JSON text (for assertions)."""
        return json.dumps(self.body, ensure_ascii=False)

    def _data(self) -> dict[str, Any]:
        return self.body["data"] if isinstance(self.body.get("data"), dict) else self.body

    def embeds(self) -> list[dict[str, Any]]:
        """The embeds the call sends (in a callback, its data)."""
        return self._data().get("embeds") or []

    def flags(self) -> int:
        """The message flags the call sends (0 without)."""
        return self._data().get("flags") or 0

    def components(self) -> list[dict[str, Any]]:
        """The buttons and selects the call sends, wherever they sit (in rows, containers or sections)."""
        return [c for c in walk(self._data().get("components") or []) if c.get("type") in _INTERACTIVE]

    def texts(self) -> list[str]:
        """The contents of the text displays the call sends, in the order they show."""
        return [c["content"] for c in walk(self._data().get("components") or []) if c.get("type") == 10]


def walk(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component of a message in the order it shows, nested ones after their parent."""
    found: list[dict[str, Any]] = []
    for component in components:
        found.append(component)
        found += walk(list(component.get("components") or []) + ([component["accessory"]]
                                                                  if "accessory" in component else []))
    return found


def _error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _component_errors(components: list[dict[str, Any]], v2: bool) -> dict[str, Any]:
    """The errors of a message's components, keyed by their index and field as Discord nests them."""
    errors: dict[str, Any] = {}
    for i, component in enumerate(components):
        found: dict[str, Any] = {}
        kind = component.get("type")
        if kind in _LAYOUT_TYPES and not v2:
            found["type"] = _error("COMPONENT_LAYOUT_REQUIRES_COMPONENTS_V2",
                                   "This component type requires the IS_COMPONENTS_V2 message flag.")
        if kind in _INTERACTIVE or "custom_id" in component:
            custom_id = component.get("custom_id")
            if custom_id is not None and not 1 <= len(custom_id) <= CUSTOM_ID_CHARS:
                found["custom_id"] = _error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if kind == 2 and len(component.get("label") or "") > 80:
            found["label"] = _error("BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
        if kind == 10 and not component.get("content"):
            found["content"] = _error("BASE_TYPE_REQUIRED", "This field is required")
        children = component.get("components") or []
        if kind == 1 and not 1 <= len(children) <= ROW_CHILDREN:
            found["components"] = _error("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        elif children and (nested := _component_errors(children, v2)):
            found["components"] = nested
        if found:
            errors[str(i)] = found
    return errors


def form_errors(body: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """What Discord refuses in a message it is asked to create, or to edit (`before` is the message as it is),
    nested by field; empty when it takes it. An edit keeps the fields it does not send."""
    errors: dict[str, Any] = {}
    before = before or {}
    flags_before = before.get("flags") or 0
    flags = body.get("flags")
    v2 = bool((flags if flags is not None else flags_before) & COMPONENTS_V2)
    if flags_before & COMPONENTS_V2 and flags is not None and not flags & COMPONENTS_V2:
        errors["flags"] = _error("MESSAGE_CANNOT_REMOVE_COMPONENTS_V2_FLAG",
                                 "The IS_COMPONENTS_V2 flag cannot be removed from a message.")
    if v2:
        for legacy in ("content", "embeds", "poll", "sticker_ids"):
            if body[legacy] if legacy in body else before.get(legacy):
                errors[legacy] = _error("MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                                        f"The '{legacy}' field cannot be used when using "
                                        "MessageFlags.IS_COMPONENTS_V2")
    elif len(body.get("content") or "") > CONTENT_CHARS:
        errors["content"] = _error("BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    components = body.get("components") or []
    found = _component_errors(components, v2)
    every = walk(components)
    if v2 and len(every) > LAYOUT_COMPONENTS:
        found.setdefault("_errors", []).append({"code": "BASE_TYPE_MAX_LENGTH",
                                                "message": "Must be 40 or fewer in length."})
    text = sum(len(c.get("content") or "") for c in every if c.get("type") == 10)
    if v2 and text > LAYOUT_TEXT_CHARS:
        found.setdefault("_errors", []).append({"code": "COMPONENT_TEXT_DISPLAY_TOTAL_LENGTH_EXCEEDED",
                                                "message": "Text displays may hold 4000 characters in total."})
    if found:
        errors["components"] = found
    return errors


@dataclass(frozen=True)
class Attached:
    """A file attached to a message sent to the stand-in."""

    filename: str
    content_type: str
    data: bytes


class DiscordStandIn(ThreadedServer):
    """Discord's HTTP API, gateway and CDN, served from a thread with its own event loop."""

    thread_name = "discord-standin"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.cdn: dict[str, bytes] = {}
        self.attachments: list[Attached] = []  # every file attached to a message, in order
        self.messages: dict[str, dict[str, Any]] = {}  # message id -> the message as Discord would return it
        self._originals: dict[str, str] = {}  # interaction token -> the id of its response message
        self._ids = itertools.count(500000000000000001)
        self._seq = itertools.count(1)
        self._faults: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.identified = threading.Event()

    def routes(self, app: web.Application) -> None:
        """The HTTP API, the gateway websocket and the CDN."""
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._api)

    @property
    def api_url(self) -> str:
        """MODELBAY_DISCORD_API_URL."""
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        """MODELBAY_DISCORD_GATEWAY_URL."""
        return self.base.replace("http://", "ws://") + "/gateway"

    def disconnect(self) -> None:
        """Drop every gateway connection (as when the bot process stops)."""
        assert self._loop is not None
        for ws in list(self._sockets):
            asyncio.run_coroutine_threadsafe(ws.close(), self._loop).result(5)
        self._sockets.clear()
        self.identified.clear()

    # -- scripting and reading ----------------------------------------------------------------------------------
    def fail(self, method: str, path_part: str, retry_after: float, times: int = 1) -> None:
        """Answer the next `times` requests whose "METHOD path" contains path_part with 429 and retry_after."""
        with self._lock:
            self._faults.setdefault(f"{method} {path_part}", []).extend([retry_after] * times)

    def to(self, method: str, path_part: str = "") -> list[Call]:
        """The calls with this method whose path contains path_part."""
        with self._lock:
            return [c for c in self.calls if c.method == method and path_part in c.path]

    def wait(self, method: str, path_part: str = "", predicate: Callable[[Call], bool] = lambda c: True, *,
             count: int = 1, timeout: float = 30.0) -> list[Call]:
        """Wait until `count` successful calls match; return those that match."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.to(method, path_part) if c.status < 300 and predicate(c)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(c.method, c.path, c.text()[:200]) for c in self.calls[-12:]]
                raise AssertionError(f"no {count} {method} {path_part} call(s) within {timeout}s; last: {seen}")
            time.sleep(0.05)

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway DISPATCH event to the connected bot."""
        assert self._loop is not None and self._sockets, "no gateway connection"
        payload = {"op": 0, "t": event, "s": next(self._seq), "d": data}
        send = self._sockets[-1].send_str(json.dumps(payload))
        if threading.current_thread().name == self.thread_name:
            self._loop.create_task(send)  # from a request handler: Discord sends the event on its own time
        else:
            asyncio.run_coroutine_threadsafe(send, self._loop).result(5)

    # -- interactions, shaped as the gateway delivers them --------------------------------------------------------
    def _interaction(self, kind: int, data: dict[str, Any], member: dict[str, Any] | None, channel: dict[str, Any],
                     message: dict[str, Any] | None = None) -> str:
        interaction_id = str(next(self._ids))
        token = f"tok-{uuid.uuid4().hex}"
        payload: dict[str, Any] = {
            "id": interaction_id, "application_id": APP_ID, "type": kind, "token": token, "version": 1,
            "channel_id": channel["id"], "channel": channel, "data": data, "locale": "en-US",
            "app_permissions": "2251799813685247", "entitlements": [], "context": 0 if member else 1,
            "authorizing_integration_owners": {"0": GUILD}, "attachment_size_limit": 26214400,
        }
        if member is not None:
            payload.update(guild_id=GUILD, member=member, guild_locale="en-US",
                           guild={"id": GUILD, "locale": "en-US", "features": []})
        else:
            payload["user"] = user("500000000000000099")
        if message is not None:
            payload["message"] = message
        self.dispatch("INTERACTION_CREATE", payload)
        return token

    def command(self, name: str, options: list[dict[str, Any]], *, member: dict[str, Any] | None,
                channel: dict[str, Any] | None = None, resolved: dict[str, Any] | None = None,
                focused: bool = False) -> str:
        """Run `/name ...` (options as Discord nests them); with focused, an autocomplete request. Returns its token."""
        data: dict[str, Any] = {"id": str(900 + len(name)), "name": name, "type": 1, "options": options}
        if resolved:
            data["resolved"] = resolved
        return self._interaction(4 if focused else 2, data, member, channel or text_channel())

    def press(self, component: dict[str, Any], message_id: str, *, member: dict[str, Any] | None,
              channel: dict[str, Any] | None = None, values: list[str] | None = None) -> str:
        """Press a button (or choose in a select) of a message the bot sent."""
        data: dict[str, Any] = {"custom_id": component["custom_id"], "component_type": component["type"]}
        if values is not None:
            data["values"] = values
        message = self.messages.get(message_id) or self._message(CHANNEL, {}, message_id)
        return self._interaction(3, data, member, channel or text_channel(), message)

    def submit(self, custom_id: str, fields: dict[str, str], *, member: dict[str, Any] | None,
               channel: dict[str, Any] | None = None) -> str:
        """Submit a modal with these text input values."""
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in fields.items()]
        return self._interaction(5, {"custom_id": custom_id, "components": rows}, member,
                                 channel or text_channel())

    def say(self, content: str, *, author: dict[str, Any], channel_id: str, member: dict[str, Any] | None,
            message_id: str | None = None) -> str:
        """A person posts a message (or, given its id, the gateway delivers that message again, as after a RESUME)."""
        message_id = message_id or str(next(self._ids))
        data = {"id": message_id, "channel_id": channel_id, "author": author, "content": content,
                "timestamp": _NOW, "edited_timestamp": None, "tts": False, "mention_everyone": False,
                "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0,
                "flags": 0, "components": []}
        if member is not None:
            data.update(guild_id=GUILD, member={k: v for k, v in member.items() if k != "user"})
        self.dispatch("MESSAGE_CREATE", data)
        return message_id

    # -- HTTP ---------------------------------------------------------------------------------------------------
    def original(self, token: str) -> dict[str, Any]:
        """The message an interaction's response created (as last edited)."""
        return self.messages[self._originals[token]]

    def message_with(self, components: list[dict[str, Any]], channel_id: str = CHANNEL) -> str:
        """A bot message in the channel holding these components (one row); return its id."""
        return self._message(channel_id, {"components": [{"type": 1, "components": components}]})["id"]

    def _message(self, channel_id: str, body: dict[str, Any], message_id: str | None = None) -> dict[str, Any]:
        before = self.messages.get(message_id or "")
        if before is not None:  # an edit changes only what it sends
            before.update({k: body[k] or ([] if k in ("embeds", "components") else "")
                           for k in ("content", "embeds", "components") if k in body})
            if body.get("flags") is not None:  # ephemeral stays as it was; the rest is what the edit says
                before["flags"] = (before["flags"] & 64) | (body["flags"] & ~64)
            return before
        message_id = message_id or str(next(self._ids))
        message = {"id": message_id, "channel_id": channel_id, "author": BOT_USER, "content": body.get("content") or "",
                   "timestamp": _NOW, "edited_timestamp": None, "tts": False, "mention_everyone": False,
                   "mentions": [], "mention_roles": [], "attachments": [], "embeds": body.get("embeds") or [],
                   "pinned": False, "type": 0, "flags": body.get("flags") or 0,
                   "components": body.get("components") or [], "application_id": APP_ID}
        self.messages[message_id] = message
        return message

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            raw = await request.read()
            return json.loads(raw) if raw else {}
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body = json.loads(str(form.get("payload_json") or "{}"))
            files = [v for k, v in form.items() if k.startswith("files")]
            body["_files"] = [getattr(v, "filename", "") for v in files]
            with self._lock:  # what was attached, as Discord stores it (name, content type, bytes)
                self.attachments += [Attached(v.filename, v.content_type, v.file.read()) for v in files
                                     if hasattr(v, "file")]
            return body
        return {}

    async def _api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = await self._body(request)
        with self._lock:
            fault = next((k for k, v in self._faults.items() if v and k.split(" ", 1)[0] == request.method
                          and k.split(" ", 1)[1] in path), None)
            retry_after = self._faults[fault].pop(0) if fault else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        if retry_after is not None:
            self._record(Call(request.method, path, body, time.monotonic(), 429, headers))
            return _json({"message": "You are being rate limited.", "retry_after": retry_after, "global": False,
                          "code": 0}, 429, {"Retry-After": f"{retry_after:g}", "X-RateLimit-Scope": "user",
                                            "Via": "1.1 google"})  # discord.py treats a 429 without Via as a ban
        refused = self._refusal(request.method, path, body)
        if refused:
            self._record(Call(request.method, path, body, time.monotonic(), 400, headers))
            return _json({"message": "Invalid Form Body", "code": 50035, "errors": refused}, 400)
        status, answer = self._answer(request.method, path, body)
        if isinstance(answer, dict) and isinstance(body, dict) and "channel_id" in answer:
            body["_id"] = answer["id"]  # the message this call created or edited
        self._record(Call(request.method, path, body, time.monotonic(), status, headers))
        if answer is None:
            return web.Response(status=204)
        return _json(answer, status)

    def _refusal(self, method: str, path: str, body: Any) -> dict[str, Any]:
        """The form errors of a request that creates or edits a message (empty for any other request)."""
        parts = path.strip("/").split("/")
        if not isinstance(body, dict) or method not in ("POST", "PATCH"):
            return {}
        if parts[0] == "interactions" and parts[-1] == "callback":
            if body.get("type") in (4, 7) and isinstance(body.get("data"), dict):
                nested = form_errors(body["data"])
                return {"data": nested} if nested else {}
            return {}
        edited = None
        if parts[0] == "channels" and parts[2:3] == ["messages"] and method == "PATCH":
            edited = parts[3]
        elif parts[0] == "webhooks" and method == "PATCH":
            edited = self._originals.get(parts[2]) if parts[-1] == "@original" else parts[-1]
        elif not (parts[0] == "webhooks" or (parts[0] == "channels" and parts[2:3] == ["messages"])):
            return {}
        return form_errors(body, self.messages.get(edited or ""))

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if path == "/users/@me":
            return 200, BOT_USER
        if path == "/oauth2/applications/@me":
            return 200, {"id": APP_ID, "name": "ModelBay", "icon": None, "description": "", "rpc_origins": [],
                         "bot_public": True, "bot_require_code_grant": False, "owner": user("1", "owner"),
                         "summary": "", "verify_key": "0" * 64, "team": None, "flags": 0,
                         "interactions_endpoint_url": None}
        if parts[0] == "interactions" and parts[-1] == "callback":
            kind = body.get("type")
            interaction = {"id": parts[1], "type": 2, "response_message_loading": kind == 5,
                           "response_message_ephemeral": bool((body.get("data") or {}).get("flags", 0) & 64)}
            answer: dict[str, Any] = {"interaction": interaction}
            if kind in (4, 5, 7):
                message = self._message(CHANNEL, body.get("data") or {})
                self._originals[parts[2]] = message["id"]
                interaction["response_message_id"] = message["id"]
                answer["resource"] = {"type": kind, "message": message}
            return 200, answer
        if parts[0] == "webhooks":
            if method == "DELETE":
                return 204, None
            if method == "POST":
                return 200, self._message(CHANNEL, body)
            message_id = self._originals.get(parts[2]) if parts[-1] == "@original" else parts[-1]
            return 200, self._message(CHANNEL, body, message_id)
        if parts[0] == "channels" and parts[-1] == "threads":
            thread = {"id": str(next(self._ids)), "type": 11, "guild_id": GUILD, "parent_id": parts[1],
                      "name": body.get("name", "thread"), "owner_id": BOT_ID, "message_count": 0,
                      "member_count": 1, "rate_limit_per_user": 0,
                      "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                          "archive_timestamp": _NOW, "locked": False}}
            self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
            return 201, thread
        if parts[0] == "channels" and len(parts) == 2 and method == "DELETE":
            return 200, {"id": parts[1], "type": 11}
        if parts[0] == "channels" and parts[2:3] == ["messages"]:
            if method == "POST":
                return 200, self._message(parts[1], body)
            if method == "PATCH":
                return 200, self._message(parts[1], body, parts[3])
            return 204, None
        if parts[0] == "applications" and method == "PUT":
            return 200, [{**c, "id": str(next(self._ids)), "application_id": APP_ID, "version": "1",
                          "default_member_permissions": None} for c in body if isinstance(c, dict)] \
                if isinstance(body, list) else []
        return 200, {}

    async def _cdn(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._record(Call("GET", f"/cdn/{name}", {}, time.monotonic(), 200,
                          {k.lower(): v for k, v in request.headers.items()}))
        if name not in self.cdn:
            return web.Response(status=404)
        return web.Response(body=self.cdn[name], content_type="application/octet-stream")

    def add_file(self, name: str, data: bytes) -> str:
        """Host an attachment; return its URL."""
        self.cdn[name] = data
        return f"{self.base}/cdn/{name}"

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            if payload.get("op") == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif payload.get("op") == 2:
                await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": _ready(self.gateway_url)}))
                self.identified.set()
        return ws


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json (no charset).
    return web.Response(body=json.dumps(payload).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def text_channel(channel_id: str = CHANNEL) -> dict[str, Any]:
    """A server text channel object."""
    return {"id": channel_id, "type": 0, "guild_id": GUILD, "name": "general", "position": 0,
            "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None, "rate_limit_per_user": 0,
            "last_message_id": None, "flags": 0}


def thread_channel(thread_id: str, parent_id: str = CHANNEL) -> dict[str, Any]:
    """A public thread object."""
    return {"id": thread_id, "type": 11, "guild_id": GUILD, "parent_id": parent_id, "name": "chat",
            "owner_id": BOT_ID, "message_count": 0, "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": _NOW,
                                "locked": False}}


def dm_channel(channel_id: str = "300000000000000009") -> dict[str, Any]:
    """A direct message channel object."""
    return {"id": channel_id, "type": 1, "recipients": [user("500000000000000099")], "last_message_id": None,
            "flags": 0}


def member(user_id: str, *roles: str) -> dict[str, Any]:
    """A server member object with these role ids."""
    return {"user": user(user_id), "roles": list(roles), "joined_at": _NOW, "deaf": False, "mute": False,
            "flags": 0, "nick": None, "avatar": None, "pending": False, "permissions": "2251799813685247"}


def _ready(gateway: str) -> dict[str, Any]:
    roles = [
        {"id": GUILD, "name": "@everyone", "permissions": "2251799813685247", "position": 0, "color": 0,
         "hoist": False, "managed": False, "mentionable": False, "flags": 0},
        {"id": ADMIN_ROLE, "name": "ModelBay admins", "permissions": "0", "position": 1, "color": 0,
         "hoist": False, "managed": False, "mentionable": False, "flags": 0},
    ]
    guild = {"id": GUILD, "name": "Test server", "icon": None, "owner_id": "1", "roles": roles,
             "channels": [text_channel()], "threads": [], "members": [], "member_count": 3, "emojis": [],
             "stickers": [], "features": [], "voice_states": [], "presences": [], "large": False,
             "unavailable": False, "premium_tier": 0, "preferred_locale": "en-US", "verification_level": 0,
             "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
             "afk_timeout": 300, "system_channel_flags": 0, "joined_at": _NOW}
    return {"v": 10, "user": BOT_USER, "guilds": [guild], "session_id": uuid.uuid4().hex,
            "resume_gateway_url": gateway, "application": {"id": APP_ID, "flags": 0}, "private_channels": [],
            "relationships": [], "user_settings": {}, "shard": [0, 1]}


class Bot:
    """A DiscordAdapter running its discord.py client on its own thread and event loop."""

    def __init__(self, runtime: Runtime, standin: DiscordStandIn, **kw: object) -> None:
        # The stand-in sends its one server inside READY and no GUILD_CREATE after it: nothing to wait 2 s for.
        kw.setdefault("guild_ready_timeout", 0.05)
        self.adapter = DiscordAdapter(runtime, dispatcher=Dispatcher(runtime, COMMANDS_HERE), **kw)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="discord-bot", daemon=True)
        self.thread.start()
        wait_for(lambda: standin.identified.is_set() and self.adapter.client.is_ready(), timeout=30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.adapter.start())
        finally:
            self.loop.run_until_complete(self.adapter.client.close())  # finishes what stop() began

    def stop(self) -> None:
        """Close the client (as when the bot process stops) and wait for its thread."""
        asyncio.run_coroutine_threadsafe(self.adapter.client.close(), self.loop)
        self.thread.join(15)
        assert not self.thread.is_alive()


def option(name: str, value: object, kind: int = 3, **extra: object) -> dict:
    """One option of an application command interaction (type 3 string, 4 integer, 10 number, 11 attachment)."""
    return {"name": name, "type": kind, "value": value, **extra}
