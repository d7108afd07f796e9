"""The key middleware ModelBay puts in front of every vLLM server, called as plain ASGI (no vLLM, no services)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from modelbay.workers.jobs.serve import AUTH_MIDDLEWARE, server_environment
from modelbay.workers.vllm_pythonpath.modelbay_vllm_auth import RequireKey

KEY = "k3y-of-this-server"


def _call(scope: dict, key: str | None = KEY) -> tuple[list[dict], list[dict]]:
    """Run one ASGI call through RequireKey; return what reached the app and what was sent back."""
    reached: list[dict] = []

    async def app(scope: dict, receive, send) -> None:  # noqa: ANN001
        reached.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(RequireKey(app, key=key)(scope, receive, send))
    return reached, sent


def _http(path: str, method: str = "GET", authorization: bytes | None = None, kind: str = "http",
          **extra: object) -> dict:
    headers = [(b"host", b"127.0.0.1")] + ([(b"authorization", authorization)] if authorization is not None else [])
    return {"type": kind, "method": method, "path": path, "root_path": "", "headers": headers, **extra}


@pytest.mark.parametrize("path", ["/invocations", "/adapters", "/tokenize", "/metrics", "/version", "/health",
                                  "/v1/models", "/", "/openapi.json", "/docs", "/V1/models", "//v1/models"])
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS", "HEAD", "DELETE"])
def test_a_request_without_the_key_is_refused_on_every_path_and_method(path: str, method: str) -> None:
    reached, sent = _call(_http(path, method))
    assert not reached
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json" and headers[b"www-authenticate"] == b"Bearer"
    assert json.loads(body["body"]) == {"error": "Unauthorized"}
    assert int(headers[b"content-length"]) == len(body["body"])


@pytest.mark.parametrize("authorization", [b"", b"Bearer", b"Bearer ", b"Bearer wrong", b"Basic " + KEY.encode(),
                                           KEY.encode(), b"Bearer " + KEY.encode() + b"x", b"Bearer  " + KEY.encode(),
                                           b"Bearer " + KEY[:-1].encode(), b"Token " + KEY.encode()])
def test_a_wrong_or_malformed_authorization_is_refused(authorization: bytes) -> None:
    reached, sent = _call(_http("/invocations", "POST", authorization))
    assert not reached and sent[0]["status"] == 401


@pytest.mark.parametrize("authorization", [b"Bearer " + KEY.encode(), b"bearer " + KEY.encode()])
def test_the_key_as_a_bearer_token_passes_the_request_on_unchanged(authorization: bytes) -> None:
    scope = _http("/adapters", "POST", authorization)
    reached, sent = _call(scope)
    assert reached == [scope] and sent == [{"type": "http.response.start", "status": 200, "headers": []}]


def test_only_the_first_authorization_header_counts() -> None:
    scope = _http("/health", authorization=b"Bearer wrong")
    scope["headers"].append((b"Authorization", b"Bearer " + KEY.encode()))
    reached, sent = _call(scope)
    assert not reached and sent[0]["status"] == 401


def test_lifespan_passes_through_without_a_key() -> None:
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    reached, _ = _call(scope)
    assert reached == [scope]


def test_a_websocket_without_the_key_is_refused_before_it_is_accepted() -> None:
    # With the denial-response extension: the same 401 JSON an HTTP request gets.
    reached, sent = _call(_http("/v1/realtime", kind="websocket", extensions={"websocket.http.response": {}}))
    assert not reached and [m["type"] for m in sent] == ["websocket.http.response.start",
                                                          "websocket.http.response.body"]
    assert sent[0]["status"] == 401
    # Without it: closed with 1008 (policy violation), which the server answers as a refused handshake.
    reached, sent = _call(_http("/v1/realtime", kind="websocket"))
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]
    scope = _http("/v1/realtime", kind="websocket", authorization=b"Bearer " + KEY.encode())
    assert _call(scope)[0] == [scope]


def test_the_key_comes_from_vllm_api_key_and_none_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    async def app(scope, receive, send) -> None:  # noqa: ANN001
        pass

    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    middleware = RequireKey(app)  # how vLLM's --middleware constructs it: the app alone
    assert middleware.allows([(b"authorization", b"Bearer from-env")])
    assert not middleware.allows([(b"authorization", b"Bearer " + KEY.encode())])
    for empty in ("", None):
        if empty is None:
            monkeypatch.delenv("VLLM_API_KEY")
        else:
            monkeypatch.setenv("VLLM_API_KEY", empty)
        with pytest.raises(RuntimeError, match="VLLM_API_KEY is empty"):
            RequireKey(app)
    with pytest.raises(RuntimeError):
        RequireKey(app, key="")


def test_the_server_imports_the_middleware_from_its_pythonpath_without_modelbay(tmp_path) -> None:  # noqa: ANN001
    env = server_environment({"PATH": os.environ["PATH"], "PYTHONPATH": "/somewhere/else"}, KEY)
    assert env["PYTHONPATH"].endswith(os.pathsep + "/somewhere/else")
    module, name = AUTH_MIDDLEWARE.rsplit(".", 1)
    # What vLLM does with --middleware, in a Python that starts outside the repository; nothing but the middleware
    # may come in with it (a server on another Python, MODELBAY_VLLM_PYTHON, has no ModelBay).
    probe = (f"import importlib, sys; before = set(sys.modules); cls = getattr(importlib.import_module({module!r}), "
             f"{name!r}); assert cls(object()).allows([(b'authorization', b'Bearer {KEY}')]); "
             f"print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in sys.stdlib_module_names))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == [f"[{module!r}]"]  # the middleware, and from the standard library only
