"""The Discord bot: the real discord.py client and command tree, fed real gateway payloads by a local stand-in.

discord.py logs in against tests/support/discord.py, connects to its gateway websocket, receives READY, then the
interactions and messages the tests send; everything it sends back to Discord is recorded there. ModelBay's
side (engine, jobs, installs from the hub stand-in, in-process answers of a tiny model) is real.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from modelbay.adapters.discord import DiscordAdapter
from modelbay.adapters.discord.embeds import DESCRIPTION_CHARS, EMBED_CHARS, FIELD_LIMIT, embed_chars, render
from modelbay.bot import COMMANDS, CommandSet, Dispatcher, Field, Reply, Table, command
from modelbay.bot.context import Context
from modelbay.config import Settings
from modelbay.engine.schema import Feedback
from modelbay.runtime import Runtime
from tests.conftest import wait_for
from tests.support.chat import installed
from tests.support.discord import (
    ADMIN_ROLE, BOT_TOKEN, CHANNEL, Call, DiscordStandIn, dm_channel, member, text_channel, thread_channel,
)
from tests.support.hub import HubStandIn

REPO = "tiny-org/tiny-llama"
ADMIN, USER = "500000000000000001", "500000000000000002"

COMMANDS_HERE = CommandSet()
for _cmd in COMMANDS:
    COMMANDS_HERE.add(_cmd)


@command("slowpoke", help="Takes its time.", slow=True, registry=COMMANDS_HERE)
async def _slowpoke(ctx: Context) -> Reply:
    await asyncio.sleep(4)
    return Reply(text="Finally done.", tone="success")


@command("dawdle", help="Not marked slow, but takes three seconds.", registry=COMMANDS_HERE)
async def _dawdle(ctx: Context) -> Reply:
    await asyncio.sleep(3)
    return Reply(text="Dawdled.")


class Bot:
    """A DiscordAdapter running its discord.py client on its own thread and event loop."""

    def __init__(self, runtime: Runtime, standin: DiscordStandIn, **kw: object) -> None:
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
            self.loop.close()

    def stop(self) -> None:
        """Close the client (as when the bot process stops) and wait for its thread."""
        asyncio.run_coroutine_threadsafe(self.adapter.client.close(), self.loop)
        self.thread.join(15)
        assert not self.thread.is_alive()


@pytest.fixture
def standin() -> Iterator[DiscordStandIn]:
    with DiscordStandIn() as server:
        yield server


@pytest.fixture
def runtime(settings: Settings, standin: DiscordStandIn, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path,
            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub.add_repo(REPO, tiny_model, tags=["llama"])
    settings.hub_endpoint = hub.endpoint
    settings.disk_margin_bytes = 0
    settings.discord_api_url = standin.api_url
    settings.discord_gateway_url = standin.gateway_url
    settings.discord_token = SecretStr(BOT_TOKEN)
    settings.roles = {"admin": [f"discord:role:{ADMIN_ROLE}"]}
    settings.chat_temperature = 0.0
    settings.chat_max_tokens = 24
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    installed(runtime.registry, tiny_chat_model)
    yield runtime
    runtime.close()


@pytest.fixture
def bot(runtime: Runtime, standin: DiscordStandIn) -> Iterator[Bot]:
    running = Bot(runtime, standin)
    yield running
    running.stop()


def _callbacks(standin: DiscordStandIn, token: str) -> list[Call]:
    return [c for c in standin.to("POST", "/callback") if token in c.path]


def _original(standin: DiscordStandIn, token: str) -> list[Call]:
    return [c for c in standin.to("PATCH", "/messages/@original") if token in c.path and c.status < 300]


def test_commands_answer_in_embeds_and_slow_ones_defer_first(bot: Bot, standin: DiscordStandIn) -> None:
    token = standin.command("help", [], member=member(USER))
    answered = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert answered.body["type"] == 4
    embed = answered.embeds()[0]
    assert embed["title"] == "ModelBay commands" and "/models list" in embed["description"]
    assert embed_chars(embed) <= EMBED_CHARS

    started = time.monotonic()
    slow = standin.command("slowpoke", [], member=member(USER))
    deferred = standin.wait("POST", "/callback", lambda c: slow in c.path)[0]
    assert deferred.body["type"] == 5 and deferred.at - started < 3.0
    done = standin.wait("PATCH", "/messages/@original", lambda c: slow in c.path, timeout=20)[0]
    assert done.embeds()[0]["description"].endswith("Finally done.") and done.at - started >= 3.5

    started = time.monotonic()
    dawdle = standin.command("dawdle", [], member=member(USER))  # not marked slow: deferred when 2 s pass
    deferred = standin.wait("POST", "/callback", lambda c: dawdle in c.path)[0]
    assert deferred.body["type"] == 5 and 1.5 <= deferred.at - started < 3.0
    standin.wait("PATCH", "/messages/@original", lambda c: dawdle in c.path and "Dawdled." in c.text())


def test_a_non_admin_install_is_refused_privately(bot: Bot, standin: DiscordStandIn, runtime: Runtime) -> None:
    token = standin.command("models", [{"name": "install", "type": 1, "options": [
        {"name": "model", "type": 3, "value": REPO}]}], member=member(USER))
    refused = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert refused.body["type"] == 4 and refused.body["data"]["flags"] & 64  # ephemeral
    assert "Not allowed" in refused.text() and "admin" in refused.text()
    assert not runtime.jobs.list(limit=5)
