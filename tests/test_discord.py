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


def _component(call: Call, label: str) -> dict:
    return next(c for c in call.components() if c.get("label") == label)


def _sub(name: str, *options: dict) -> list[dict]:
    return [{"name": name, "type": 1, "options": list(options)}]


def _opt(name: str, value: object, kind: int = 3, **extra: object) -> dict:
    return {"name": name, "type": kind, "value": value, **extra}


def test_install_progress_edits_one_message_a_second_apart_and_backs_off_on_429(
        bot: Bot, standin: DiscordStandIn, hub: HubStandIn, runtime: Runtime) -> None:
    hub.link_rate = 400_000  # about six seconds for the tiny model
    standin.fail("PATCH", "/messages/@original", retry_after=1.5)  # the first edit is rate limited
    token = standin.command("models", _sub("install", _opt("model", REPO)), member=member(ADMIN, ADMIN_ROLE))
    assert standin.wait("POST", "/callback", lambda c: token in c.path)[0].body["type"] == 5
    finished = standin.wait("PATCH", "/messages/@original",
                            lambda c: token in c.path and any(b.get("label") == "Try it" for b in c.components()),
                            timeout=90)[0]
    edits = [c for c in standin.to("PATCH", "/messages/@original") if token in c.path]
    limited = next(c for c in edits if c.status == 429)
    after = next(c for c in edits if c.at > limited.at)
    assert after.at - limited.at >= 1.4  # discord.py waited out retry_after
    done = [c for c in edits if c.status < 300]
    assert len([c for c in done if "▰" in c.text()]) >= 3
    assert all(b.at - a.at >= 0.95 for a, b in zip(done, done[1:]))  # one edit a second at most
    model = runtime.registry.get(REPO)
    assert model.installed and _component(finished, "Try it")["custom_id"] == f"mb:run:/chat {model.name}"
    assert not standin.to("POST", "/channels/")  # everything happened in the one answer


def test_buttons_still_work_after_a_restart_and_open_a_chat_thread(runtime: Runtime, standin: DiscordStandIn) -> None:
    first = Bot(runtime, standin)
    token = standin.command("models", _sub("info", _opt("model", "tiny-chat")), member=member(USER))
    shown = standin.wait("PATCH", "/messages/@original", lambda c: token in c.path and "Try it" in c.text())[0]
    try_it = _component(shown, "Try it")
    first.stop()
    standin.disconnect()
    second = Bot(runtime, standin)  # a new process: no views in memory, only the dynamic item templates
    try:
        press = standin.press(try_it, standin.original(token)["id"], member=member(USER))
        assert standin.wait("POST", "/callback", lambda c: press in c.path)[0].body["type"] == 5
        thread = standin.wait("POST", "/threads")[0]
        started = standin.wait("POST", "/messages", lambda c: "Chatting with" in c.text())[0]
        thread_id = started.path.split("/")[2]
        assert thread.path == f"/channels/{CHANNEL}/threads" and thread_id != CHANNEL
        assert standin.wait("PATCH", "/messages/@original", lambda c: press in c.path and "started in" in c.text())
        assert {"End chat", "System prompt"} <= {c.get("label") for c in started.components()}
        session = runtime.chats.recent(f"discord:{USER}", 1)[0]
        assert (session.place.channel_id, session.place.thread_id) == (CHANNEL, thread_id)
    finally:
        second.stop()


def _open_chat(standin: DiscordStandIn) -> tuple[str, Call]:
    token = standin.command("chat", _sub("start", _opt("model", "tiny-chat")), member=member(USER))
    started = standin.wait("POST", "/messages", lambda c: "Chatting with" in c.text())[0]
    standin.wait("PATCH", "/messages/@original", lambda c: token in c.path)
    return started.path.split("/")[2], started


def test_a_chat_thread_streams_answers_and_takes_ratings_with_a_reason(bot: Bot, standin: DiscordStandIn,
                                                                      runtime: Runtime) -> None:
    thread_id, started = _open_chat(standin)
    standin.say("What color is the sky?", author=member(USER)["user"], channel_id=thread_id, member=member(USER))
    thinking = standin.wait("POST", f"/channels/{thread_id}/messages", lambda c: "Thinking" in c.text())[0]
    assert str(thinking.body["message_reference"]["channel_id"]) == thread_id
    final = standin.wait("PATCH", f"/channels/{thread_id}/messages",
                         lambda c: any(b.get("label") == "👍" for b in c.components()))[0]
    embed = final.embeds()[0]
    assert "transformers" in embed["footer"]["text"] and "▍" not in embed.get("description", "")
    up, down = _component(final, "👍"), _component(final, "👎")
    message_id = int(up["custom_id"].rsplit(":", 1)[1])
    assert down["custom_id"] == f"mb:down:{message_id}"

    answer_id = final.body["_id"]
    in_thread = thread_channel(thread_id)
    press = standin.press(up, answer_id, member=member(USER), channel=in_thread)
    thanks = standin.wait("POST", "/callback", lambda c: press in c.path)[0]
    assert thanks.body["data"]["flags"] & 64 and f"Rated answer #{message_id} 👍" in thanks.text()
    press = standin.press(down, answer_id, member=member(USER), channel=in_thread)
    asked = standin.wait("POST", "/callback", lambda c: press in c.path)[0]
    select = asked.components()[0]
    assert select["custom_id"] == f"mb:why:{message_id}" and {"wrong", "none"} <= {o["value"] for o in select["options"]}
    chose = standin.press(select, standin.original(press)["id"], member=member(USER), channel=in_thread,
                          values=["wrong"])
    changed = standin.wait("POST", "/callback", lambda c: chose in c.path)[0]
    assert changed.body["type"] == 7 and "Changed your rating" in changed.text()
    with runtime.db.session() as db:
        rating = db.scalars(select_feedback()).one()
        assert (rating.message_id, rating.rating, rating.reason) == (message_id, -1, "wrong")

    sys_button = _component(started, "System prompt")
    press = standin.press(sys_button, started.body["_id"], member=member(USER), channel=in_thread)
    modal = standin.wait("POST", "/callback", lambda c: press in c.path)[0]
    assert modal.body["type"] == 9
    form = modal.body["data"]
    field_id = next(c for row in form["components"] for c in _inputs(row))["custom_id"]
    sent = standin.submit(form["custom_id"], {field_id: "Answer in French."}, member=member(USER), channel=in_thread)
    reopened = standin.wait("POST", "/callback", lambda c: sent in c.path)[0]
    assert "Answer in French." in reopened.text()
    session = runtime.chats.current(runtime.chats.recent(f"discord:{USER}", 1)[0].place)
    assert session.system_prompt == "Answer in French." and session.place.thread_id == thread_id


def _inputs(row: dict) -> list[dict]:
    found = [row] if row.get("type") == 4 else []
    for child in row.get("components", []) + ([row["component"]] if "component" in row else []):
        found += _inputs(child)
    return found


def select_feedback():  # noqa: ANN201
    return select(Feedback)
