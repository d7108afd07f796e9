"""A recording stand-in for Slack's side: the Web API, response URLs, file hosting and Socket Mode's websocket.

The real slack_sdk clients (pointed here by MODELBAY_SLACK_API_URL) call it; tests read what it received and
script failures (a 429 with Retry-After, a 5xx, a connection reset). `SignedRequests` sends requests the way Slack
does, signed with the signing secret, into the app under test.

It knows Slack's chat streaming methods (chat.startStream, chat.appendStream, chat.stopStream) and checks what Slack
documents: a stream starts in a thread with text, names its recipient outside direct messages, takes at most 12,000
characters of markdown a call, and refuses appends once stopped (`message_not_in_streaming_state`). Setting
`refuse_streaming` to an error code ("unknown_method", "not_allowed") refuses chat.startStream, as a workspace
without the feature does. Blocks are checked against the limits of the markdown block (12,000 characters, and
12,000 for all markdown blocks of a message) and of feedback buttons (`invalid_blocks`).

Uploads follow files_upload_v2's three steps (files.getUploadURLExternal, the POST of the bytes, and
files.completeUploadExternal); the file is then hosted (`hosted`) with an id as Slack shapes them (`F` and 10 or more
capitals and digits). As on Slack, a file is processed after it is completed: files.info answers an empty `mimetype`
until then (`processing_checks` files.info calls, 0 by default). Image blocks in messages and views are checked as
Slack documents them: `alt_text` (1 to 2,000 characters), either `image_url` or `slack_file`, and a `slack_file` with
either an `id` or a `url` (`url_private` or `permalink`) of a hosted, processed PNG, JPEG or GIF; anything else is
`invalid_blocks`. Views hold at most 100 blocks, messages 50.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from aiohttp import WSMsgType, web

from tests.support.aioserver import ThreadedServer

__all__ = ["BOT_TOKEN", "RESET", "SIGNING_SECRET", "Call", "SignedRequests", "SlackStandIn"]

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret"
BOT_USER = "UMODELBAY"
RESET = 0  # a status for `SlackStandIn.fail`: the connection is closed with no answer, as a reset or a crash does
MARKDOWN_CHARS = 12000  # a markdown block's text, all markdown blocks of a message, and a stream call's markdown
VIEW_BLOCKS = 100  # blocks a modal or Home tab holds
STREAMED_CHARS = 12000  # the markdown one streamed message holds in all (read as a markdown block's limit)


@dataclass
class Call:
    """One request the stand-in received."""

    method: str  # a Web API method (chat.update), or "response_url", "upload", "file", "socket_ack"
    args: dict[str, Any]
    at: float  # time.monotonic() on arrival
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200

    def text(self) -> str:
        """Every text in the call's blocks and its fallback text, joined (for assertions)."""
        blocks = self.args.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        view = self.args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        return json.dumps([self.args.get("text", ""), blocks, view or {}], ensure_ascii=False)

    def buttons(self) -> list[dict[str, Any]]:
        """The buttons in the call's blocks (or view)."""
        found: list[dict[str, Any]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") == "button":
                    found.append(node)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(json.loads(self.text()))
        return found


class SlackStandIn(ThreadedServer):
    """Serves the Slack Web API stand-in on a free port from its own thread and event loop."""

    thread_name = "slack-standin"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.usergroups: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.hosted: dict[str, dict[str, Any]] = {}  # file id -> the file object files.info answers (and "data")
        self.processing_checks = 0  # files.info calls that find a completed upload still being processed
        self.refuse_streaming: str | None = None  # an error code chat.startStream answers with
        self.streams: dict[str, dict[str, Any]] = {}  # ts -> {"thread", "channel", "text", "state", "blocks"}
        self.deleted: set[str] = set()
        self._faults: dict[str, list[tuple[int, dict[str, str]] | None]] = {}  # None: answer that call normally
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._pending: dict[str, str] = {}  # file id -> filename, between getUploadURLExternal and completion

    def routes(self, app: web.Application) -> None:
        """The Web API, response URLs, uploads, file downloads and the Socket Mode websocket."""
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_post("/upload/{id}", self._upload)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/socket", self._socket)

    @property
    def api_url(self) -> str:
        """The Web API base URL (MODELBAY_SLACK_API_URL)."""
        return f"{self.base}/api/"

    def response_url(self) -> str:
        """A fresh response URL, like the one each slash command and button payload carries."""
        return f"{self.base}/respond/{uuid.uuid4().hex[:8]}"

    # -- scripting and reading ----------------------------------------------------------------------------------
    def fail(self, method: str, status: int = 429, *, retry_after: float | None = 1, times: int = 1,
             after: int = 0) -> None:
        """Answer `times` calls of `method`, after the next `after` ones, with `status` (and a Retry-After header);
        status RESET closes the connection instead of answering (the call is recorded, not carried out)."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        with self._lock:
            self._faults.setdefault(method, []).extend([None] * after + [(status, headers)] * times)

    def streamed(self, thread: str) -> list[dict[str, Any]]:
        """The streamed messages in a thread still shown, in order: each {"ts", "text" (markdown as sent, escaped),
        "state" ("streaming" or "stopped"), "blocks" (those the stop added)}."""
        with self._lock:
            found = [{"ts": ts, **stream} for ts, stream in self.streams.items()
                     if stream["thread"] == thread and ts not in self.deleted]
        return sorted(found, key=lambda m: float(m["ts"]))

    def add_file(self, name: str, data: bytes) -> str:
        """Host a file as Slack does (bot token required); return its url_private_download."""
        self.files[name] = data
        return f"{self.base}/files/{name}"

    def to(self, method: str) -> list[Call]:
        """The calls received for one method, in order."""
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait(self, method: str, predicate: Callable[[Call], bool] = lambda c: True, *, count: int = 1,
             timeout: float = 30.0) -> list[Call]:
        """Wait until `count` calls of `method` match `predicate`; return those that match."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.to(method) if c.status == 200 and predicate(c)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                seen = [(c.method, c.text()[:300]) for c in self.calls[-15:]]
                raise AssertionError(f"no {count} {method} call(s) matched within {timeout}s; last calls: {seen}")
            time.sleep(0.05)

    def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Push a Socket Mode envelope to the connected app; return its envelope id."""
        envelope_id = uuid.uuid4().hex
        message = json.dumps({"envelope_id": envelope_id, "type": kind, "payload": payload,
                              "accepts_response_payload": kind != "events_api"})
        assert self._loop is not None and self._sockets, "no Socket Mode connection"
        asyncio.run_coroutine_threadsafe(self._sockets[-1].send_str(message), self._loop).result(5)
        return envelope_id

    @property
    def socket_connected(self) -> bool:
        """Whether an app holds a Socket Mode connection."""
        return any(not ws.closed for ws in self._sockets)

    # -- handlers -----------------------------------------------------------------------------------------------
    def _record(self, method: str, args: dict[str, Any], headers: dict[str, str], status: int = 200) -> None:
        with self._lock:
            self.calls.append(Call(method, args, time.monotonic(), headers, status))

    async def _args(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json" and raw:
            args.update(json.loads(raw))
        elif request.content_type == "application/x-www-form-urlencoded":
            args.update(parse_qsl(raw.decode()))
        for key in ("blocks", "view"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            fault = self._faults.get(method, []).pop(0) if self._faults.get(method) else None
        if fault is not None:
            status, extra = fault
            self._record(method, args, headers, status)
            if status == RESET:
                assert request.transport is not None
                request.transport.abort()  # the client reads a closed connection, no response
                raise web.HTTPInternalServerError  # never written: the connection is gone
            error = "ratelimited" if status == 429 else "internal_error"
            return web.json_response({"ok": False, "error": error}, status=status, headers=extra)
        token = headers.get("authorization", "")
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != f"Bearer {wanted}":
            self._record(method, args, headers, 401)
            return web.json_response({"ok": False, "error": "invalid_auth"})
        error = self._refusal(method, args)
        if error is not None:
            self._record(method, args, headers, 400)
            return web.json_response({"ok": False, "error": error})
        answer = self._answer(method, args)
        if method in ("chat.postMessage", "chat.startStream"):
            args["_ts"] = answer["ts"]  # the ts later edits name
        self._record(method, args, headers)
        return web.json_response({"ok": True, **answer})

    def _refusal(self, method: str, args: dict[str, Any]) -> str | None:
        """The error Slack would answer this call with, or None."""
        if method in ("chat.postMessage", "chat.update", "chat.stopStream") and args.get("blocks"):
            error = _blocks_error(args["blocks"]) or self._images_error(args["blocks"])
            if error:
                return error
        if method in ("views.publish", "views.open", "views.update", "views.push"):
            view = args.get("view")
            view = json.loads(view) if isinstance(view, str) else view or {}
            blocks = view.get("blocks") or []
            if len(blocks) > VIEW_BLOCKS or self._images_error(blocks):
                return "invalid_blocks"
        if method == "files.info" and str(args.get("file")) not in self.hosted:
            return "file_not_found"
        if method not in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
            return None
        texts = [args["markdown_text"]] if args.get("markdown_text") else []
        for chunk in args.get("chunks") or []:
            if chunk.get("type") != "markdown_text" or not isinstance(chunk.get("text"), str):
                return "invalid_chunks"
            texts.append(chunk["text"])
        if any(len(t) > MARKDOWN_CHARS for t in texts):
            return "msg_too_long"
        if method == "chat.startStream":
            if self.refuse_streaming:
                return self.refuse_streaming
            if not args.get("channel") or not args.get("thread_ts") or not texts:
                return "invalid_arguments"
            if not str(args["channel"]).startswith("D") and not (args.get("recipient_user_id")
                                                                  and args.get("recipient_team_id")):
                return "invalid_arguments"  # outside direct messages a stream names its recipient
            return None
        with self._lock:
            stream = self.streams.get(str(args.get("ts")))
            if stream is None or stream["channel"] != args.get("channel") or args.get("ts") in self.deleted:
                return "message_not_found"
            if stream["state"] != "streaming":
                return "message_not_in_streaming_state"
            if len(stream["text"]) + sum(len(t) for t in texts) > STREAMED_CHARS:
                return "msg_too_long"
        if method == "chat.appendStream" and not texts:
            return "invalid_arguments"
        return None

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"user_id": BOT_USER, "bot_id": "BMODELBAY", "team_id": "T1", "team": "Test", "url": self.base}
        if method == "chat.postMessage":
            return {"channel": args.get("channel"), "ts": f"{1700000000 + next(self._ts)}.000100"}
        if method in ("chat.update", "chat.delete"):
            if method == "chat.delete":
                self.deleted.add(str(args.get("ts")))
            return {"channel": args.get("channel"), "ts": args.get("ts")}
        if method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
            text = (args.get("markdown_text") or "") + "".join(c["text"] for c in args.get("chunks") or [])
            with self._lock:
                if method == "chat.startStream":
                    ts = f"{1700000000 + next(self._ts)}.000300"
                    self.streams[ts] = {"thread": args["thread_ts"], "channel": args["channel"], "text": "",
                                        "state": "streaming", "blocks": []}
                else:
                    ts = str(args["ts"])
                stream = self.streams[ts]
                stream["text"] += text
                if method == "chat.stopStream":
                    stream["state"], stream["blocks"] = "stopped", args.get("blocks") or []
            return {"channel": args.get("channel"), "ts": ts}
        if method == "chat.postEphemeral":
            return {"message_ts": f"{1700000000 + next(self._ts)}.000200"}
        if method == "conversations.open":
            return {"channel": {"id": "D" + str(args.get("users", "X"))[1:]}}
        if method == "conversations.join":
            return {"channel": {"id": args.get("channel")}}
        if method.startswith("views."):
            return {"view": {"id": "V1", "hash": "h1"}}
        if method == "usergroups.list":
            return {"usergroups": self.usergroups}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts):010d}"
            with self._lock:
                self._pending[file_id] = str(args.get("filename", ""))
            return {"upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = args.get("files")
            files = json.loads(files) if isinstance(files, str) else files or []
            for f in files:
                self._host(f["id"], f.get("title", ""), args.get("channel_id") or args.get("channels"))
            return {"files": [{"id": f["id"], "title": f.get("title", "")} for f in files]}
        if method == "files.info":
            with self._lock:
                hosted = self.hosted[str(args["file"])]
                if hosted["_checks_left"] > 0:
                    hosted["_checks_left"] -= 1
                    return {"file": {**_public(hosted), "mimetype": "", "filetype": "", "pretty_type": ""}}
                hosted["_processed"] = True
                return {"file": _public(hosted)}
        if method == "apps.connections.open":
            return {"url": self.base.replace("http://", "ws://") + "/socket"}
        return {}

    def _host(self, file_id: str, title: str, channel: str | None) -> None:
        """Host a completed upload, as files.info will answer it once processed."""
        with self._lock:
            name = self._pending.pop(file_id, "")
            data = self.uploads.get(file_id, b"")
            kind = next((k for magic, k in _IMAGE_KINDS if data.startswith(magic)), None)
            self.hosted[file_id] = {
                "id": file_id, "name": name, "title": title, "size": len(data), "user": BOT_USER,
                "mimetype": f"image/{kind}" if kind else "application/octet-stream", "filetype": kind or "binary",
                "url_private": f"{self.base}/files-pri/T1-{file_id}/{name}",
                "permalink": f"{self.base}/files/{BOT_USER}/{file_id}/{name}",
                "channels": [channel] if channel else [], "is_public": bool(channel), "data": data,
                "_checks_left": self.processing_checks, "_processed": self.processing_checks == 0,
            }

    def _images_error(self, blocks: list[dict[str, Any]]) -> str | None:
        """invalid_blocks for an image block Slack would refuse (see the module docstring), else None."""
        for block in blocks:
            if block.get("type") != "image":
                continue
            alt = block.get("alt_text")
            if not isinstance(alt, str) or not 0 < len(alt) <= 2000:
                return "invalid_blocks"
            if ("image_url" in block) == ("slack_file" in block):
                return "invalid_blocks"
            if "image_url" in block:
                continue
            ref = block["slack_file"]
            if not isinstance(ref, dict) or ("id" in ref) == ("url" in ref):
                return "invalid_blocks"
            with self._lock:
                if "id" in ref:
                    if not re.fullmatch(r"F[A-Z0-9]{8,}", str(ref["id"])):
                        return "invalid_blocks"
                    hosted = self.hosted.get(ref["id"])
                else:
                    hosted = next((h for h in self.hosted.values()
                                   if ref["url"] in (h["url_private"], h["permalink"])), None)
                if hosted is None or not hosted["_processed"] or hosted["filetype"] not in ("png", "jpeg", "gif"):
                    return "invalid_blocks"  # Slack: "invalid slack file"
        return None

    async def _respond(self, request: web.Request) -> web.Response:
        self._record("response_url", await self._args(request), dict(request.headers))
        return web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        self.uploads[request.match_info["id"]] = data
        self._record("upload", {"id": request.match_info["id"], "size": len(data)}, dict(request.headers))
        return web.Response(text="OK")

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._record("file", {"name": name}, {k.lower(): v for k, v in request.headers.items()})
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            return web.Response(status=302, headers={"Location": f"{self.base}/login"})
        if name not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[name], content_type="application/octet-stream")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self._record("socket_ack", json.loads(message.data), {})
        return ws


_IMAGE_KINDS = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"))


def _public(hosted: dict[str, Any]) -> dict[str, Any]:
    """A hosted file as files.info shows it (without its bytes and the stand-in's own state)."""
    return {k: v for k, v in hosted.items() if k != "data" and not k.startswith("_")}


def _blocks_error(blocks: list[dict[str, Any]]) -> str | None:
    """Why Slack would refuse these blocks (invalid_blocks), as far as the stand-in checks; None if it would not."""
    markdown = [b.get("text", "") for b in blocks if b.get("type") == "markdown"]
    if any(not isinstance(t, str) or not t or len(t) > MARKDOWN_CHARS for t in markdown):
        return "invalid_blocks"
    if sum(len(t) for t in markdown) > MARKDOWN_CHARS or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if block.get("type") != "context_actions":
            continue
        elements = block.get("elements") or []
        if not 1 <= len(elements) <= 5:
            return "invalid_blocks"
        for element in elements:
            if element.get("type") != "feedback_buttons":
                continue
            for side in ("positive_button", "negative_button"):
                button = element.get(side) or {}
                text = (button.get("text") or {})
                if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 75:
                    return "invalid_blocks"
                if not isinstance(button.get("value"), str) or not 0 < len(button["value"]) <= 2000:
                    return "invalid_blocks"
    return None


class SignedRequests:
    """Sends requests into the app the way Slack does: form or JSON bodies with a v0 HMAC signature."""

    def __init__(self, url: str, standin: SlackStandIn, secret: str = SIGNING_SECRET) -> None:
        self.url = url
        self.standin = standin
        self.secret = secret
        self.client = httpx.Client(timeout=30)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def sign(self, body: bytes, timestamp: int) -> str:
        """Slack's request signature of a body at a time."""
        base = b"v0:" + str(timestamp).encode() + b":" + body
        return "v0=" + hmac.new(self.secret.encode(), base, hashlib.sha256).hexdigest()

    def post(self, body: bytes, content_type: str, *, timestamp: int | None = None, signature: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        """POST a raw body, signed (unless a signature is given) at now (or timestamp)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        sent = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(stamp),
                "X-Slack-Signature": signature or self.sign(body, stamp), **(headers or {})}
        return self.client.post(self.url, content=body, headers=sent)

    def form(self, fields: dict[str, Any], **kw: Any) -> httpx.Response:
        """POST form fields."""
        return self.post(urlencode(fields).encode(), "application/x-www-form-urlencoded", **kw)

    def interactive(self, payload: dict[str, Any], **kw: Any) -> httpx.Response:
        """POST an interactivity payload (buttons, modals, shortcuts)."""
        return self.form({"payload": json.dumps(payload)}, **kw)

    def command(self, text: str, *, user: str = "U1", channel: str = "C1", **kw: Any) -> httpx.Response:
        """Type `/modelbay <text>`."""
        return self.form({"token": "legacy", "team_id": "T1", "team_domain": "test", "channel_id": channel,
                          "channel_name": "general", "user_id": user, "user_name": user.lower(),
                          "command": "/modelbay", "text": text, "api_app_id": "A1",
                          "response_url": self.standin.response_url(), "trigger_id": f"trig.{uuid.uuid4().hex[:6]}"},
                         **kw)

    def button(self, button: dict[str, Any], *, user: str = "U1", channel: str = "C1", message_ts: str = "1.0",
               thread_ts: str | None = None) -> httpx.Response:
        """Press a button found in a message."""
        message = {"ts": message_ts, **({"thread_ts": thread_ts} if thread_ts else {})}
        return self.interactive({
            "type": "block_actions", "team": {"id": "T1"}, "user": {"id": user, "name": user.lower()},
            "api_app_id": "A1", "trigger_id": f"trig.{uuid.uuid4().hex[:6]}", "channel": {"id": channel},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel}, "message": message,
            "response_url": self.standin.response_url(),
            "actions": [{"type": "button", "action_id": button["action_id"], "block_id": "b",
                         "value": button.get("value", ""), "action_ts": str(time.time())}],
        })

    def feedback(self, message: dict[str, Any], *, positive: bool, user: str = "U1", channel: str = "C1",
                 thread_ts: str | None = None) -> httpx.Response:
        """Press 👍 (positive) or 👎 of the feedback buttons under a streamed message (from `SlackStandIn.streamed`)."""
        element = next(e for b in message["blocks"] if b["type"] == "context_actions" for e in b["elements"]
                       if e["type"] == "feedback_buttons")
        side = element["positive_button" if positive else "negative_button"]
        body = {"ts": message["ts"], **({"thread_ts": thread_ts} if thread_ts else {})}
        return self.interactive({
            "type": "block_actions", "team": {"id": "T1"}, "user": {"id": user, "name": user.lower()},
            "api_app_id": "A1", "trigger_id": f"trig.{uuid.uuid4().hex[:6]}", "channel": {"id": channel},
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel}, "message": body,
            "response_url": self.standin.response_url(),
            "actions": [{"type": "feedback_buttons", "action_id": element["action_id"], "block_id": "f",
                         "text": side["text"], "value": side["value"], "action_ts": str(time.time())}],
        })

    def view_action(self, view: dict[str, Any], action: dict[str, Any], state: dict[str, Any], *,
                    user: str = "U1") -> httpx.Response:
        """Act inside an open modal (type a search, pick a menu item, press a button)."""
        return self.interactive({
            "type": "block_actions", "team": {"id": "T1"}, "user": {"id": user, "name": user.lower()},
            "api_app_id": "A1", "trigger_id": f"trig.{uuid.uuid4().hex[:6]}", "container": {"type": "view"},
            "view": {**view, "id": "V1", "hash": "h1", "state": {"values": state}}, "actions": [action],
        })

    def submit(self, view: dict[str, Any], state: dict[str, Any], *, user: str = "U1") -> httpx.Response:
        """Submit a modal with these input values."""
        return self.interactive({
            "type": "view_submission", "team": {"id": "T1"}, "user": {"id": user, "name": user.lower()},
            "api_app_id": "A1", "trigger_id": f"trig.{uuid.uuid4().hex[:6]}",
            "view": {**view, "id": "V1", "hash": "h1", "state": {"values": state}},
        })

    def shortcut(self, callback_id: str, *, user: str = "U1", message: dict[str, Any] | None = None,
                 channel: str = "C1") -> httpx.Response:
        """Run a global shortcut, or a message shortcut on `message`."""
        payload: dict[str, Any] = {"type": "shortcut", "callback_id": callback_id, "team": {"id": "T1"},
                                   "user": {"id": user, "username": user.lower()}, "api_app_id": "A1",
                                   "trigger_id": f"trig.{uuid.uuid4().hex[:6]}", "action_ts": str(time.time())}
        if message is not None:
            payload.update(type="message_action", channel={"id": channel}, message=message,
                           message_ts=message["ts"], response_url=self.standin.response_url())
        return self.interactive(payload)

    def event(self, event: dict[str, Any], *, event_id: str | None = None, **kw: Any) -> httpx.Response:
        """Deliver an Events API event."""
        body = {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event": event,
                "event_id": event_id or f"Ev{uuid.uuid4().hex[:8]}", "event_time": int(time.time())}
        return self.post(json.dumps(body).encode(), "application/json", **kw)
