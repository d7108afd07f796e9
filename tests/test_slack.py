"""The Slack app: signed requests into the real bolt app through the real FastAPI route; Slack's side recorded.

The Web API, response URLs, file hosting and Socket Mode are the stand-in in tests/support/slack.py; everything
of ModelBay's (engine, jobs, installs from the hub stand-in, in-process answers of a tiny model) is real.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from modelbay.adapters.api import create_app
from modelbay.adapters.slack import SlackAdapter
from modelbay.adapters.slack.blocks import BLOCK_LIMIT, MESSAGE_CHARS, SECTION_CHARS, render
from modelbay.bot import COMMANDS, Attachment, CommandSet, Dispatcher, Reply, Table, command
from modelbay.bot.context import Context
from modelbay.config import Settings
from modelbay.engine.schema import Feedback
from modelbay.runtime import Runtime
from tests.conftest import ROOT, wait_for
from tests.support.asgi import serve
from tests.support.chat import installed
from tests.support.hub import HubStandIn
from tests.support.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Call, SignedRequests, SlackStandIn

REPO = "tiny-org/tiny-llama"
ADMIN, USER = "UADMIN", "UUSER"

# The built-in commands plus two of the tests' own: one slow, one answering with a file.
COMMANDS_HERE = CommandSet()
for _cmd in COMMANDS:
    COMMANDS_HERE.add(_cmd)


@command("slowpoke", help="Takes its time.", slow=True, registry=COMMANDS_HERE)
async def _slowpoke(ctx: Context) -> Reply:
    await asyncio.sleep(5)
    return Reply(text="Finally done.", tone="success")


@command("report", help="Answers with a file.", registry=COMMANDS_HERE)
async def _report(ctx: Context) -> Reply:
    return Reply(text="Here is the report.", attachments=[Attachment("report.csv", b"model,requests\ntiny,3\n",
                                                                     "text/csv")])


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


@pytest.fixture
def runtime(settings: Settings, standin: SlackStandIn, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path,
            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """An embedded runtime (SQLite, in-process jobs) whose Slack settings point at the stand-in."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub.add_repo(REPO, tiny_model, tags=["llama"])
    settings.hub_endpoint = hub.endpoint
    settings.disk_margin_bytes = 0
    settings.slack_api_url = standin.api_url
    settings.slack_bot_token = SecretStr(BOT_TOKEN)
    settings.slack_signing_secret = SecretStr(SIGNING_SECRET)
    settings.roles = {"admin": [f"slack:{ADMIN}", "slack:group:SADMINS"]}
    settings.chat_temperature = 0.0
    settings.chat_max_tokens = 24
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    installed(runtime.registry, tiny_chat_model)
    yield runtime
    runtime.close()


@pytest.fixture
def slack(runtime: Runtime, standin: SlackStandIn) -> Iterator[SignedRequests]:
    """Signed requests into `/slack/events` of the API served by uvicorn."""
    adapter = SlackAdapter(runtime, dispatcher=Dispatcher(runtime, COMMANDS_HERE))
    with serve(create_app(runtime, slack=adapter)) as url:
        requests = SignedRequests(f"{url}/slack/events", standin)
        yield requests
        requests.close()


def _in(call: Call, *words: str) -> bool:
    text = call.text()
    return all(w in text for w in words)


def test_help_lists_the_commands_as_slack_users_type_them(slack: SignedRequests, standin: SlackStandIn) -> None:
    response = slack.command("")
    assert response.status_code == 200
    posted = standin.wait("chat.postMessage", lambda c: _in(c, "ModelBay commands"))[0]
    assert posted.args["channel"] == "C1" and posted.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert _in(posted, "/modelbay models list", "/modelbay chat") and "`/models list" not in posted.text()
    blocks = posted.args["blocks"]
    assert blocks[0]["type"] == "header" and len(blocks) <= BLOCK_LIMIT
    assert all(len(b["text"]["text"]) <= SECTION_CHARS for b in blocks if b["type"] == "section")


def test_forged_and_replayed_requests_are_refused(slack: SignedRequests, standin: SlackStandIn) -> None:
    body = b"command=%2Fmodelbay&text=help&user_id=U1&channel_id=C1"
    now = int(time.time())
    forged = slack.post(body, "application/x-www-form-urlencoded", signature="v0=" + "0" * 64)
    replayed = slack.post(body, "application/x-www-form-urlencoded", timestamp=now - 6 * 60)
    wrong_secret = SignedRequests(slack.url, standin, secret="not-the-secret").post(
        body, "application/x-www-form-urlencoded")
    unsigned = slack.client.post(slack.url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert [r.status_code for r in (forged, replayed, wrong_secret, unsigned)] == [401, 401, 401, 401]
    time.sleep(0.5)
    assert not standin.to("chat.postMessage") and not standin.to("response_url")
    assert slack.post(body, "application/x-www-form-urlencoded", timestamp=now - 60).status_code == 200


def test_the_ack_comes_at_once_while_a_slow_command_runs(slack: SignedRequests, standin: SlackStandIn) -> None:
    started = time.monotonic()
    response = slack.command("slowpoke")
    acked = time.monotonic() - started
    assert response.status_code == 200 and acked < 3.0
    placeholder = standin.wait("chat.postMessage", lambda c: _in(c, "Working on"))[0]
    done = standin.wait("chat.update", lambda c: _in(c, "Finally done."), timeout=30)[0]
    assert done.args["ts"] and done.at - started >= 4.5  # the answer replaced the placeholder when the work ended
    assert done.args["channel"] == placeholder.args["channel"] == "C1"


def test_errors_are_one_private_line(slack: SignedRequests, standin: SlackStandIn) -> None:
    slack.command("models lsit")
    said = standin.wait("response_url")[0]
    assert said.args["response_type"] == "ephemeral" and _in(said, "Unknown command", "/modelbay models list")
    slack.command("models install tiny-org/tiny-llama", user=USER)  # installs need the admin role
    refused = standin.wait("response_url", lambda c: _in(c, "Not allowed"))[0]
    assert _in(refused, "admin") and "Traceback" not in refused.text()
    assert not standin.to("chat.postMessage")


def test_files_in_replies_are_uploaded_to_the_thread(slack: SignedRequests, standin: SlackStandIn) -> None:
    slack.command("report")
    posted = standin.wait("chat.postMessage", lambda c: _in(c, "Here is the report."))[0]
    standin.wait("files.completeUploadExternal")
    upload = standin.to("upload")[0]
    assert standin.uploads[upload.args["id"]] == b"model,requests\ntiny,3\n"
    complete = standin.to("files.completeUploadExternal")[0]
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"]


def test_long_replies_respect_block_kit_limits() -> None:
    long_text = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(40))  # ~30,000 characters
    rows = [[f"org-{i}/model-with-a-long-name-{i}", "huggingface", "chat", "7.6B", "15 GB", ""] for i in range(400)]
    for reply in (Reply(title="Long", text=long_text, footer="end"),
                  Reply(title="Search", table=Table(["Name", "Source", "Category", "Params", "Size", "Installed"],
                                                    rows), footer="footer")):
        messages = render(reply)
        assert len(messages) > 1
        for message in messages:
            assert len(message.blocks) <= BLOCK_LIMIT and message.chars() <= MESSAGE_CHARS
            assert all(len(b["text"]["text"]) <= SECTION_CHARS for b in message.blocks if b["type"] == "section")
        text = "".join(b["text"]["text"] for m in messages for b in m.blocks if b["type"] == "section")
        if reply.text:
            assert text.count("Paragraph") == 40  # nothing lost
        else:
            assert all(f"model-with-a-long-name-{i}" in text for i in range(400))
        assert messages[0].blocks[-1]["type"] == "context" and "Continued in the thread" in json.dumps(messages[0].blocks)
