"""Serving an ASGI app (the API, with Slack's events route) with real uvicorn on a free port, from a thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from tests.conftest import wait_for

__all__ = ["serve", "sse_events"]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve app with uvicorn on a free 127.0.0.1 port from a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=15)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=15)
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """Parse a Server-Sent Events stream into (event, data) pairs, skipping comments."""
    name, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []
