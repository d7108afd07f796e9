"""ASGI middleware that makes a vLLM server ask for its API key on every route, not only vLLM's guarded ones.

vLLM checks `--api-key` / VLLM_API_KEY only on paths under /v1, /v2, /inference and /cohere: /invocations (a chat),
/adapters (loads a LoRA from any path), /tokenize, /metrics and the rest answer anyone. ModelBay starts its servers
with `--middleware modelbay_vllm_auth.RequireKey`, which vLLM adds outermost, so this check runs before any route,
mount or other middleware. /health asks for the key too: ModelBay's health check sends it and nothing else needs it.
OPTIONS is not exempt, so browsers' CORS pre-flights are refused; ModelBay's clients are not browsers.

Only the standard library, and Python 3.8 syntax: it runs in whatever Python serves vLLM.
"""

from __future__ import annotations

import hmac
import json
import os

__all__ = ["RequireKey"]

_BODY = json.dumps({"error": "Unauthorized"}).encode()  # vLLM's own words for a missing or wrong key
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode()),
            (b"www-authenticate", b"Bearer")]
_POLICY_VIOLATION = 1008  # WebSocket close code when the server cannot send an HTTP refusal


class RequireKey:
    """Pass on only requests and WebSockets whose Authorization header is `Bearer <key>`; answer 401 JSON otherwise.

    The key defaults to the VLLM_API_KEY environment variable (how vLLM constructs it); RuntimeError when there is
    none, so a server without a key does not start.
    """

    def __init__(self, app, key: str | None = None) -> None:  # noqa: ANN001 - any ASGI app
        key = os.environ.get("VLLM_API_KEY", "") if key is None else key
        if not key:
            raise RuntimeError("VLLM_API_KEY is empty: a server started with this middleware needs a key")
        self.app = app
        self._key = key.encode()

    def allows(self, headers) -> bool:  # noqa: ANN001 - ASGI headers: (name, value) byte pairs
        """Whether the first Authorization header among ASGI headers is a bearer token equal to the key."""
        value = next((v for k, v in headers if k.lower() == b"authorization"), b"")
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token, self._key)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        kind = scope["type"]
        if kind not in ("http", "websocket") or self.allows(scope.get("headers", ())):
            await self.app(scope, receive, send)  # lifespan, or a request with the key
        elif kind == "http":
            await _refuse(send, "http.")
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await _refuse(send, "websocket.http.")
        else:
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION})


async def _refuse(send, prefix: str) -> None:  # noqa: ANN001 - ASGI send
    await send({"type": f"{prefix}response.start", "status": 401, "headers": _HEADERS})
    await send({"type": f"{prefix}response.body", "body": _BODY})
