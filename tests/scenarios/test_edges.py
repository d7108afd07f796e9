"""Bad input stops at the HTTP edge: every API parameter is bounded (on SQLite and PostgreSQL), and every request
to Slack's events URL that Slack did not sign is a 401, whatever its headers and body look like."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from modelbay.adapters.api import MAX_INT, create_app
from modelbay.adapters.slack import SlackAdapter
from modelbay.config import Settings
from modelbay.engine.db.database import Database
from modelbay.runtime import Runtime
from tests.support.asgi import serve
from tests.support.slack import BOT_TOKEN, SIGNING_SECRET, SignedRequests, SlackStandIn

TOKEN = "test-token"
MODEL = "qwen2.5-0.5b-instruct"
SAMPLES = {"model_id": MODEL, "job_id": "no-such-job", "battle": "1", "name": "no-such-experiment",
           "chart": "dashboard.txt"}  # path values that exist (or are well formed)
LOCAL_ONLY = {"/api/marketplace/search": {"source": "registry"}}  # the hub's retries would only add waiting
BODIES = {"/api/arena/battles/{battle}/votes": {"outcome": "a"}}  # a valid body where one is required


def _schema(settings: Settings) -> dict[str, Any]:
    runtime = Runtime(settings)
    try:
        return create_app(runtime).openapi()
    finally:
        runtime.close()


def _parameters(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (method, path, parameter) of the API, with each parameter's schema flattened out of anyOf."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                found.append((method, path, parameter))
    return found


def _types(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "anyOf" in node:
        return [t for option in node["anyOf"] for t in _types(option)]
    if node.get("type") == "array":
        return [node, *_types(node["items"])]
    return [node]


def _body_strings(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every string and number field of every JSON request body."""
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if not content:
                continue
            ref = next(t["$ref"] for t in _types(content["schema"]) if "$ref" in t)
            model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
            for name, field in model["properties"].items():
                found.append((method, path, {"name": name, "in": "body", "schema": field}))
    return found


def test_every_parameter_of_the_api_declares_its_bounds(settings: Settings) -> None:
    # The kind, not one parameter: a number without a maximum reached the database (OverflowError on SQLite,
    # "bigint out of range" on PostgreSQL, both a 500); a string without a length reached it whole.
    schema = _schema(settings)
    fields = _parameters(schema) + _body_strings(schema)
    assert len(fields) >= 20
    unbounded = []
    for method, path, parameter in fields:
        for node in _types(parameter["schema"]):
            kind = node.get("type")
            if kind in ("integer", "number") and not ("minimum" in node and node.get("maximum", MAX_INT + 1) <= MAX_INT):
                unbounded.append(f"{method} {path} {parameter['name']}: {node}")
            if kind == "string" and "enum" not in node and "maxLength" not in node:
                unbounded.append(f"{method} {path} {parameter['name']}: {node}")
            if kind == "array" and "maxItems" not in node:
                unbounded.append(f"{method} {path} {parameter['name']}: {node}")
    assert unbounded == []


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[httpx.Client]:
    """The API over a runtime on each database (SQLite and the machine's PostgreSQL), the token set."""
    settings.database_url = database.url
    settings.api_token = SecretStr(TOKEN)
    settings.roles = {"admin": ["api:*"]}
    settings.hub_endpoint = "http://127.0.0.1:9"  # nothing listens: nothing here should get as far as the hub
    runtime = Runtime(settings)
    runtime.prepare()
    try:
        with serve(create_app(runtime)) as url:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
                yield client
    finally:
        runtime.close()


def _request(api: httpx.Client, method: str, path: str, name: str, where: str, value: Any) -> httpx.Response:
    """Send value as one parameter; text goes as UTF-8 percent escapes, a lone surrogate as the bytes no UTF-8 has."""
    def raw(text: Any) -> str:
        return quote(str(text).encode("utf-8", "surrogatepass"), safe="")

    url = path
    for key, sample in SAMPLES.items():
        url = url.replace("{%s}" % key, raw(value) if where == "path" and key == name else sample)
    if where == "body":
        # Raw JSON, so that an escape such as "\udc7a" arrives as the lone surrogate a client's JSON carries.
        content = json.dumps({name: value}).encode()
        return api.request(method.upper(), url, content=content, headers={"Content-Type": "application/json"})
    query = {**LOCAL_ONLY.get(path, {}), **({name: value} if where == "query" else {})}
    return api.request(method.upper(), url + "?" + "&".join(f"{k}={raw(v)}" for k, v in query.items()),
                       **({"json": BODIES[path]} if path in BODIES else {}))


def _one_line_error(response: httpx.Response) -> str:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "type", "title"} and "\n" not in body["error"] and len(body["error"]) <= 400
        return body["error"]
    return ""


def test_numbers_out_of_range_answer_422_and_the_extremes_are_served(settings: Settings, api: httpx.Client) -> None:
    # Every integer parameter of the spec, at and beyond its bounds, on this database.
    checked = 0
    for method, path, parameter in _parameters(_schema(settings)):
        for node in _types(parameter["schema"]):
            if node.get("type") != "integer" or (method, path) == ("post", "/api/marketplace/models/{model_id}/install"):
                continue
            name, where = parameter["name"], parameter["in"]
            low, high = node["minimum"], node["maximum"]
            for bad in (low - 1, high + 1, 2**63, -(2**63) - 1, 2**64, "9" * 5000, "1e3", "nan"):
                refused = _request(api, method, path, name, where, bad)
                assert refused.status_code == 422, (method, path, name, bad, refused.text[:300])
                assert f"`{name}`" in _one_line_error(refused)
            for good in (low, high):
                served = _request(api, method, path, name, where, good)
                assert served.status_code in (200, 404, 409), (method, path, name, good, served.text[:300])
            checked += 1
    assert checked >= 6  # min/max_parameters, max_size_bytes, limit and offset of the list, search's limit


HOSTILE_TEXT = ["\x00", "a\x00b", "\udc7a", "x" * 5000, "\x1b[31mred\x1b[0m", "line\nbreak", "\u202eevil", "'; DROP",
                "%", "_", "💥" * 300]


def test_hostile_text_in_any_parameter_or_body_is_refused_or_served_never_a_500(settings: Settings,
                                                                                api: httpx.Client) -> None:
    schema = _schema(settings)
    for method, path, parameter in _parameters(schema) + _body_strings(schema):
        name, where = parameter["name"], parameter["in"]
        if not any(t.get("type") == "string" for t in _types(parameter["schema"])):
            continue
        for value in HOSTILE_TEXT:
            if where == "path" and method == "post" and value in ("_", "%"):
                continue  # a well-formed name: its install would reach the hub
            response = _request(api, method, path, name, where, value)
            error = _one_line_error(response)
            assert "\x1b" not in error and "\u202e" not in error, error
            # In a URL a surrogate's bytes are no UTF-8 and arrive as U+FFFD, which is harmless text.
            if "\x00" in value or (where == "body" and "\udc7a" in value):
                assert response.status_code in (404, 422), (method, path, name, ascii(value), response.text[:300])


def test_a_lone_surrogate_in_a_json_body_is_a_422(api: httpx.Client) -> None:
    refused = api.post(f"/api/marketplace/models/{MODEL}/install", content=b'{"revision": "\\udc7a"}',
                       headers={"Content-Type": "application/json"})
    assert refused.status_code == 422
    assert refused.json()["error"] == ("The body parameter `revision` must be valid UTF-8 text (it has a lone "
                                       "surrogate) (got '\\udc7a').")


def test_the_reported_offset_is_a_422_and_one_line(api: httpx.Client) -> None:
    refused = api.get("/api/marketplace/models", params={"offset": "9223372036854775808"})
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("The query parameter `offset` should be less than or equal to "
                                              "9007199254740992")


# -- Slack's signature ------------------------------------------------------------------------------------------

@pytest.fixture
def slack(settings: Settings) -> Iterator[SignedRequests]:
    """Requests into `/slack/events` of the API served by uvicorn, with Slack's side a stand-in."""
    with SlackStandIn() as standin:
        settings.slack_api_url = standin.api_url
        settings.slack_bot_token = SecretStr(BOT_TOKEN)
        settings.slack_signing_secret = SecretStr(SIGNING_SECRET)
        runtime = Runtime(settings)
        runtime.prepare()
        try:
            with serve(create_app(runtime, slack=SlackAdapter(runtime))) as url:
                requests = SignedRequests(f"{url}/slack/events", standin)
                yield requests
                requests.close()
        finally:
            runtime.close()


FORM = "application/x-www-form-urlencoded"
BODY = b"command=%2Fmodelbay&text=help&user_id=U1&channel_id=C1&team_id=T1"
NOW = str(int(time.time()))
_valid = "v0=" + "0" * 64


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param([], BODY, id="unsigned"),
        pytest.param([("X-Slack-Signature", _valid)], BODY, id="no-timestamp"),
        pytest.param([("X-Slack-Request-Timestamp", NOW)], BODY, id="no-signature"),
        pytest.param([("X-Slack-Request-Timestamp", ""), ("X-Slack-Signature", _valid)], BODY, id="empty-timestamp"),
        pytest.param([("X-Slack-Request-Timestamp", "abc"), ("X-Slack-Signature", _valid)], BODY, id="word"),
        pytest.param([("X-Slack-Request-Timestamp", "-1"), ("X-Slack-Signature", _valid)], BODY, id="negative"),
        pytest.param([("X-Slack-Request-Timestamp", NOW + ".5"), ("X-Slack-Signature", _valid)], BODY, id="float"),
        pytest.param([("X-Slack-Request-Timestamp", "9" * 400), ("X-Slack-Signature", _valid)], BODY, id="huge"),
        pytest.param([("X-Slack-Request-Timestamp", "+" + NOW), ("X-Slack-Signature", _valid)], BODY, id="plus"),
        pytest.param([("X-Slack-Request-Timestamp", "١٧٠٠٠٠٠٠٠٠".encode()), ("X-Slack-Signature", _valid)], BODY,
                     id="unicode-digits"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", "")], BODY, id="empty-signature"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", "v0=")], BODY, id="short"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", ("v0=" + "é" * 32).encode())], BODY,
                     id="utf8-signature"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", "garbled")], BODY, id="garbled"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Request-Timestamp", NOW),
                      ("X-Slack-Signature", _valid)], BODY, id="twice"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", _valid)], b"{not json", id="bad-json"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", _valid)], b"payload=%7Bnope",
                     id="bad-payload"),
        pytest.param([("X-Slack-Request-Timestamp", NOW), ("X-Slack-Signature", _valid)], b"\xff\xfe\x00", id="bytes"),
        pytest.param([], b"ssl_check=1&payload=%7B%22type%22%3A%22block_actions%22%7D", id="smuggled-ssl-check"),
    ],
)
def test_every_request_slack_did_not_sign_is_a_401(slack: SignedRequests, headers: list, body: bytes) -> None:
    response = slack.client.post(slack.url, content=body, headers=[("Content-Type", FORM), *headers])
    assert response.status_code == 401, response.text[:300]
    assert response.json()["type"] == "Unauthorized"
    time.sleep(0.2)
    assert not slack.standin.to("chat.postMessage") and not slack.standin.to("response_url")


def test_signed_requests_and_slacks_ssl_check_still_pass(slack: SignedRequests) -> None:
    assert slack.command("help").status_code == 200
    slack.standin.wait("chat.postMessage", lambda c: "ModelBay commands" in c.text())
    assert slack.post(BODY, FORM, timestamp=int(time.time()) - 60).status_code == 200
    # Slack's SSL check comes unsigned (bolt answers it before verifying); nothing is dispatched for it.
    assert slack.client.post(slack.url, content=b"ssl_check=1&token=legacy",
                             headers={"Content-Type": FORM}).status_code == 200
