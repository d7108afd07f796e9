"""A scripted OpenAI-compatible chat server for failure cases a real vLLM will not produce on demand.

It streams the given pieces as server-sent events like vLLM does, then ends normally, drops the connection,
stalls, or answers an error status. The happy path is tested against the real vLLM server; this stand-in only
makes failures repeatable. `Script.rules` plays a chat template with rules: a request it refuses gets the 400
vLLM answers when a template's `raise_exception` fires (the exception's message, as an OpenAI-style error).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Literal

__all__ = ["Script", "StandIn", "no_system", "strictly_alternating", "system_required"]

Rules = Callable[[list[dict]], str | None]  # a template's rules: the refusal for messages it refuses, else None


def no_system(messages: list[dict]) -> str | None:
    """Gemma's rules: no system message (its words), and turns alternate starting with the user."""
    if messages and messages[0]["role"] == "system":
        return "System role not supported"
    return strictly_alternating(messages)


def strictly_alternating(messages: list[dict]) -> str | None:
    """Mistral v0.1's rules: user and assistant turns alternate from the first message on, a system message too."""
    for index, message in enumerate(messages):
        if (message["role"] == "user") != (index % 2 == 0):
            return "Conversation roles must alternate user/assistant/user/assistant/..."
    return None


def system_required(messages: list[dict]) -> str | None:
    """A template that demands a leading system message."""
    return None if messages and messages[0]["role"] == "system" else "A system message is required"


@dataclass
class Script:
    """What the next requests get."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    delay: float = 0.0  # seconds before each piece
    # After the pieces: finish, drop the connection, stall, send bytes that do not decode (the stream is gzipped
    # then), or send one `data:` line of these raw contents.
    end: Literal["done", "drop", "stall", "corrupt", "raw"] = "done"
    raw: str = ""
    status: int = 200
    error_body: bytes | None = None  # the body of a non-200 answer (default: an OpenAI-style error object)
    rules: Rules | None = None  # a chat template's rules, checked before anything else
    stall_for: float = 30.0

    @classmethod
    def in_pieces(cls, text: str, size: int, delay: float = 0.0) -> Script:
        """A script that sends the text in pieces of `size` characters, `delay` seconds apart."""
        return cls(pieces=[text[i:i + size] for i in range(0, len(text), size)], delay=delay)


class StandIn:
    """Runs the stand-in on a free local port; records request bodies."""

    def __init__(self) -> None:
        self.script = Script()
        self.bodies: list[dict] = []
        self.spans: list[tuple[str, float, float]] = []  # (the last message, start, end) of each answered request
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                standin.bodies.append(body)
                started = time.monotonic()
                script = standin.script
                refusal = script.rules(body["messages"]) if script.rules is not None else None
                if refusal is not None:  # vLLM's answer to a template's raise_exception: 400, the message as is
                    self._error(400, json.dumps({"error": {"message": refusal, "type": "BadRequestError",
                                                           "param": None, "code": 400}}).encode())
                    return
                if script.status != 200:
                    payload = script.error_body if script.error_body is not None else json.dumps(
                        {"error": {"message": "This model's maximum context length is 512 tokens",
                                   "type": "BadRequestError"}}).encode()
                    self._error(script.status, payload)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                gzip = zlib.compressobj(wbits=31) if script.end == "corrupt" else None
                if gzip is not None:
                    self.send_header("Content-Encoding", "gzip")
                self.end_headers()
                for piece in script.pieces:
                    time.sleep(script.delay)
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    data = f"data: {json.dumps(chunk)}\n\n".encode()
                    if gzip is not None:  # each piece decodable on its own, as a streaming gzip encoder sends it
                        data = gzip.compress(data) + gzip.flush(zlib.Z_SYNC_FLUSH)
                    self.wfile.write(data)
                    self.wfile.flush()
                if script.end == "corrupt":
                    time.sleep(0.2)  # the pieces arrive (and decode) before the bytes that do not
                    self.wfile.write(b"\xff" * 64)  # not deflate data: the client cannot decode the rest
                    self.wfile.flush()
                    time.sleep(1)
                    return
                if script.end == "raw":
                    self.wfile.write(f"data: {script.raw}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(1)
                    return
                if script.end == "drop":
                    self.connection.shutdown(2)
                    return
                if script.end == "stall":
                    time.sleep(script.stall_for)
                    return
                usage = {"prompt_tokens": 7, "completion_tokens": len(script.pieces)}
                last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(last)}\n\ndata: {json.dumps({'choices': [], 'usage': usage})}"
                                 "\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
                standin.spans.append((body["messages"][-1]["content"], started, time.monotonic()))

            def _error(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
