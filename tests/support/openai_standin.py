"""A scripted OpenAI-compatible chat server for failure cases a real vLLM will not produce on demand.

It streams the given pieces as server-sent events like vLLM does, then ends normally, drops the connection,
stalls, or answers an error status. The happy path is tested against the real vLLM server; this stand-in only
makes failures repeatable.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

__all__ = ["Script", "StandIn"]


@dataclass
class Script:
    """What the next requests get."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    delay: float = 0.0  # seconds before each piece
    end: Literal["done", "drop", "stall"] = "done"
    status: int = 200
    stall_for: float = 30.0


class StandIn:
    """Runs the stand-in on a free local port; records request bodies."""

    def __init__(self) -> None:
        self.script = Script()
        self.bodies: list[dict] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                standin.bodies.append(body)
                script = standin.script
                if script.status != 200:
                    payload = json.dumps({"error": {"message": "This model's maximum context length is 512 tokens",
                                                    "type": "BadRequestError"}}).encode()
                    self.send_response(script.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for piece in script.pieces:
                    time.sleep(script.delay)
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
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
