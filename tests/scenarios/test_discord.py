"""The Discord bot: the real discord.py client and command tree, fed real gateway payloads by a local stand-in.

discord.py logs in against tests/support/discord.py, connects to its gateway websocket, receives READY, then the
interactions and messages the tests send; everything it sends back to Discord is recorded there. ModelBay's
side (engine, jobs, installs from the hub stand-in, in-process answers of a tiny model) is real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from modelbay.adapters.discord.embeds import DESCRIPTION_CHARS, EMBED_CHARS, FIELD_LIMIT, embed_chars, render
from modelbay.adapters.discord.layouts import TEXT_CHARS, fit_notes, small_print
from modelbay.bot import Button, Field, Reply, Table
from modelbay.bot.commands.chat import RATE_DOWN, SYSTEM_PROMPT
from modelbay.bot.reply import Progress
from modelbay.config import Settings
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.chat import Feedback, Message
from modelbay.runtime import Runtime
from tests.support.answers import long_answer, untile
from tests.support.chat import FRONT_END_REPO as REPO
from tests.support.chat import front_end_runtime, installed, served_by
from tests.support.discord import option as _opt
from tests.support.discord import (
    ADMIN_ROLE, Bot, BOT_TOKEN, CHANNEL, COMPONENTS_V2, Call, DiscordStandIn, dm_channel, member, thread_channel, walk,
)
from tests.support.hub import HubStandIn

ADMIN, USER = "500000000000000001", "500000000000000002"

@pytest.fixture
def standin() -> Iterator[DiscordStandIn]:
    with DiscordStandIn() as server:
        yield server
        refused = [(c.method, c.path, c.text()[:300]) for c in server.calls if c.status == 400]
        assert not refused, f"Discord would have refused these messages: {refused}"


@pytest.fixture
def runtime(settings: Settings, standin: DiscordStandIn, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path,
            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runtime = front_end_runtime(settings, hub, tiny_model, tiny_chat_model, discord_api_url=standin.api_url,
                                discord_gateway_url=standin.gateway_url, discord_token=SecretStr(BOT_TOKEN),
                                roles={"admin": [f"discord:role:{ADMIN_ROLE}"]})
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
    assert "/chat start <model>" in embed["description"] and "/chat end" in embed["description"]
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


def test_files_in_replies_are_sent_as_attachments(bot: Bot, standin: DiscordStandIn) -> None:
    token = standin.command("report", [], member=member(USER))
    standin.wait("POST", "/callback", lambda c: token in c.path and "Here is the report." in c.text())
    sent = standin.wait("POST", "/webhooks/", lambda c: token in c.path)[0]
    assert sent.body["_files"] == ["report.csv"] and sent.body["attachments"][0]["filename"] == "report.csv"


def test_a_non_admin_install_is_refused_privately(bot: Bot, standin: DiscordStandIn, runtime: Runtime) -> None:
    token = standin.command("models", [{"name": "install", "type": 1, "options": [
        {"name": "model", "type": 3, "value": REPO}]}], member=member(USER))
    refused = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert refused.body["type"] == 4 and refused.body["data"]["flags"] & 64  # ephemeral
    assert "Not allowed" in refused.text() and "admin" in refused.text()
    assert not runtime.jobs.list(limit=5)

    viewer = "500000000000000077"
    runtime.settings.roles = {**runtime.settings.roles, "viewer": [f"discord:{viewer}"]}
    token = standin.command("chat", _sub("start", _opt("model", "tiny-chat")), member=member(viewer))
    refused = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert refused.body["type"] == 4 and "Not allowed" in refused.text()
    assert not standin.to("POST", "/threads")


def _component(call: Call, label: str) -> dict:
    return next(c for c in call.components() if c.get("label") == label)


def _sub(name: str, *options: dict) -> list[dict]:
    return [{"name": name, "type": 1, "options": list(options)}]



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
    assert all(c.flags() & COMPONENTS_V2 and not c.embeds() for c in done)  # a followed job's card, every edit
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


def test_a_button_line_too_long_for_a_custom_id_is_kept_once_under_one_key(bot: Bot, standin: DiscordStandIn,
                                                                        runtime: Runtime) -> None:
    line = "/help models list" + " " * 100  # over Discord's 100-character custom ids
    ids = {c.custom_id for _ in range(3) for c in bot.adapter._view([Button("Help", line)]).children}
    assert len(ids) == 1 and next(iter(ids)).startswith("mb:key:")  # every render of it: the same key
    assert runtime.redis.keys("modelbay:discord:button:*") == [f"modelbay:discord:button:{next(iter(ids))[7:]}".encode()]
    button = {"type": 2, "style": 2, "custom_id": next(iter(ids)), "label": "Help"}
    posted = standin.message_with([button])  # the message a reply with that button would be
    press = standin.press(button, posted, member=member(USER))
    shown = standin.wait("POST", "/callback", lambda c: press in c.path)[0]
    assert "/models list" in shown.embeds()[0]["title"]


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
    assert final.flags() & COMPONENTS_V2 and not final.embeds() and not final.body.get("content")
    answer, footer = final.texts()[0], final.texts()[-1]  # the answer, then the footer in small print
    assert footer.startswith("-# #") and "transformers" in footer and "▍" not in answer
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
    menu = asked.components()[0]
    assert menu["custom_id"] == f"mb:why:{message_id}" and {"wrong", "none"} <= {o["value"] for o in menu["options"]}
    chose = standin.press(menu, standin.original(press)["id"], member=member(USER), channel=in_thread,
                          values=["wrong"])
    changed = standin.wait("POST", "/callback", lambda c: chose in c.path)[0]
    assert changed.body["type"] == 7 and "Changed your rating" in changed.text()
    with runtime.db.session() as db:
        rating = db.scalars(select(Feedback)).one()
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


def test_a_system_prompt_button_opens_its_own_model_whatever_its_name_after_a_restart(
        runtime: Runtime, standin: DiscordStandIn, tiny_chat_model: Path) -> None:
    name = "org-" + "a-very-long-model-name-" * 5 + "x" * 1  # 120 characters: over a custom id with its prefix
    assert len(name) == 120
    installed(runtime.registry, tiny_chat_model, name=name)
    installed(runtime.registry, tiny_chat_model, name=name[:-1] + "y")  # same first 100 characters of "mb:sys:..."
    first = Bot(runtime, standin)
    try:
        token = standin.command("chat", _sub("start", _opt("model", name)), member=member(USER))
        started = standin.wait("POST", "/messages", lambda c: "Chatting with" in c.text())[0]
        standin.wait("PATCH", "/messages/@original", lambda c: token in c.path)
    finally:
        first.stop()
    standin.disconnect()
    button = _component(started, "System prompt")
    assert button["custom_id"].startswith("mb:key:")  # the name travels whole under a key, not cut to 100
    second = Bot(runtime, standin)  # a new process: only the dynamic item templates and Redis
    try:
        in_thread = thread_channel(started.path.split("/")[2])
        press = standin.press(button, started.body["_id"], member=member(USER), channel=in_thread)
        modal = standin.wait("POST", "/callback", lambda c: press in c.path)[0]
        assert modal.body["type"] == 9 and len(modal.body["data"]["custom_id"]) <= 100
        field_id = next(c for row in modal.body["data"]["components"] for c in _inputs(row))["custom_id"]
        sent = standin.submit(modal.body["data"]["custom_id"], {field_id: "Be brief."}, member=member(USER),
                              channel=in_thread)
        standin.wait("POST", "/callback", lambda c: sent in c.path)
        session = runtime.chats.current(runtime.chats.recent(f"discord:{USER}", 1)[0].place)
        assert session.model_name == name and session.system_prompt == "Be brief."
        # Every kind of button whose command its template would not read back whole goes under a key too
        for go, command in ((SYSTEM_PROMPT.button("Go", "tiny chat"), "mb:sys:tiny chat"),
                            (SYSTEM_PROMPT.button("Go", name), "mb:sys:" + name),
                            (Button("Go", "mb:sys:tiny chat"), "mb:sys:tiny chat"),  # as buttons were built before forms
                            (Button("Go", "mb:sys:" + name), "mb:sys:" + name),
                            (Button("Go", "/models info model:a\nb"), "/models info model:a\nb"),
                            (Button("Go", "/help " + "x" * 100), "/help " + "x" * 100)):
            item = second.adapter._item(go)
            assert item.custom_id.startswith("mb:key:") and len(item.custom_id) <= 100
            assert runtime.redis.get(f"modelbay:discord:button:{item.custom_id[7:]}") == command.encode()
        for go, kind in ((SYSTEM_PROMPT.button("Go", "tiny-chat"), "mb:sys:tiny-chat"),
                         (Button("Go", "mb:sys:tiny-chat"), "mb:sys:tiny-chat"),  # as buttons were built before forms
                         (Button("Go", "/models list"), "mb:run:/models list"),
                         (RATE_DOWN.button("Go", 12), "mb:down:12"),
                         (Button("Go", "/rate down message:12"), "mb:down:12")):
            assert second.adapter._item(go).custom_id == kind
    finally:
        second.stop()


def _inputs(row: dict) -> list[dict]:
    found = [row] if row.get("type") == 4 else []
    for child in row.get("components", []) + ([row["component"]] if "component" in row else []):
        found += _inputs(child)
    return found



def test_model_names_autocomplete_from_the_registry(bot: Bot, standin: DiscordStandIn) -> None:
    token = standin.command("models", _sub("info", _opt("model", "qwen", focused=True)), member=member(USER),
                            focused=True)
    answered = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert answered.body["type"] == 8
    choices = answered.body["data"]["choices"]
    assert 0 < len(choices) <= 25 and all("qwen" in c["value"] for c in choices)
    token = standin.command("chat", _sub("start", _opt("model", "", focused=True)), member=member(USER), focused=True)
    installed_first = standin.wait("POST", "/callback", lambda c: token in c.path)[0].body["data"]["choices"]
    assert [c["value"] for c in installed_first] == ["tiny-chat"]  # empty input: the installed models


def test_long_answers_and_big_search_results_stay_within_embed_limits(bot: Bot, standin: DiscordStandIn,
                                                                     runtime: Runtime) -> None:
    rows = [[f"org-{i}/model-with-a-long-name-{i}", "huggingface", "chat", "7.6B", "15 GB", ""] for i in range(400)]
    replies = [Reply(title="Long", text="\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(40))),
               Reply(title="Search", table=Table(["Name", "Source", "Category", "Params", "Size", "Installed"],
                                                 rows), footer="footer"),
               Reply(title="Fields", fields=[Field(f"f{i}", "v" * 1000) for i in range(40)], text="x" * 3000)]
    for reply in replies:
        messages = render(reply)
        assert len(messages) > 1
        for message in messages:
            for embed in message.embeds:
                assert embed_chars(embed) <= EMBED_CHARS and len(embed.get("description", "")) <= DESCRIPTION_CHARS
                assert len(embed.get("fields", [])) <= FIELD_LIMIT
                assert embed.get("description", "").count("```") % 2 == 0  # code blocks closed in every piece
        text = "".join(e.get("description", "") for m in messages for e in m.embeds)
        if reply.table:
            assert all(f"model-with-a-long-name-{i}" in text for i in range(400))
        elif reply.fields:
            assert sum(len(e.get("fields", [])) for m in messages for e in m.embeds) == 40
        else:
            assert text.count("Paragraph") == 40

    from tests.support.openai_standin import Script, StandIn

    words = [f"word{i:04d} " for i in range(1100)]  # 9,900 characters: three messages
    with StandIn() as model:
        model.script = Script(pieces=words, delay=0.003)
        served_by(runtime, "tiny-chat", model.endpoint)
        thread_id, _ = _open_chat(standin)
        standin.say("Count.", author=member(USER)["user"], channel_id=thread_id, member=member(USER))
        final = standin.wait("PATCH", f"/channels/{thread_id}/messages",
                             lambda c: any(b.get("label") == "👍" for b in c.components()), timeout=60)[0]
    posts = [c for c in standin.to("POST", f"/channels/{thread_id}/messages") if "Chatting with" not in c.text()]
    assert len(posts) == 3
    last_edit = {}
    for call in standin.to("PATCH", f"/channels/{thread_id}/messages"):
        last_edit[call.body["_id"]] = call
    text = "".join(c.texts()[0] for c in sorted(last_edit.values(), key=lambda c: int(c.body["_id"])))
    assert all(w.strip() in text for w in words) and "▍" not in text
    assert final.body["_id"] == max(last_edit, key=int)
    edits = standin.to("PATCH", "/channels/")
    assert all(b.at - a.at >= 0.95 for a, b in zip(edits, edits[1:]))  # a second apart across the bot


def test_dataset_attachments_are_fetched_from_discords_cdn_only(bot: Bot, standin: DiscordStandIn,
                                                               runtime: Runtime) -> None:
    data = b"".join(b'{"prompt": "hi %d", "completion": "hello"}\n' % i for i in range(40))
    url = standin.add_file("train.jsonl", data)
    resolved = {"attachments": {"700": {"id": "700", "filename": "train.jsonl", "size": len(data), "url": url,
                                        "proxy_url": url, "content_type": "application/jsonl"}}}
    token = standin.command("datasets", _sub("add", _opt("path", "700", kind=11), _opt("name", "greetings"),
                                             _opt("validation", 0.25, kind=10)),
                            member=member(USER), resolved=resolved)
    deferred = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert deferred.body["type"] == 5 and not deferred.body.get("data", {}).get("flags", 0) & 64  # public card
    card = standin.wait("PATCH", "/messages/@original", lambda c: token in c.path and "Dataset #1" in c.text())[0]
    assert "Dataset #1 · greetings" in card.text() and "40 rows read from `train.jsonl`" in card.text()
    assert "train 30 · validation 10 (25% held out, seed 0)" in card.text()
    assert any(b.get("label") == "Train on this" for b in card.components())
    chart = standin.wait("POST", "/webhooks/", lambda c: token in c.path and bool(c.body.get("_files")))[0]
    assert chart.body["_files"] == ["dataset-1-lengths.png"]
    [dataset] = runtime.datasets.list(f"discord:{USER}")
    assert Path(dataset.path).read_bytes() == data and dataset.source == "discord" and dataset.name == "greetings"

    elsewhere = {"attachments": {"701": {"id": "701", "filename": "x.csv", "size": 10,
                                         "url": "http://127.0.0.1:9/x.csv", "proxy_url": "http://127.0.0.1:9/x.csv"}}}
    token = standin.command("datasets", _sub("add", _opt("path", "701", kind=11)), member=member(USER),
                            resolved=elsewhere)
    refused = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
    assert "not on Discord's file host" in refused.text() and refused.body["data"]["flags"] & 64
    assert [c.path for c in standin.to("GET", "/cdn/")] == ["/cdn/train.jsonl"]


def test_direct_messages_follow_the_setting(runtime: Runtime, standin: DiscordStandIn) -> None:
    runtime.settings.discord_allow_dms = False
    bot = Bot(runtime, standin)
    try:
        token = standin.command("help", [], member=None, channel=dm_channel())
        refused = standin.wait("POST", "/callback", lambda c: token in c.path)[0]
        assert "direct messages" in refused.text() and refused.body["data"]["flags"] & 64
    finally:
        bot.stop()


def test_after_the_token_expires_progress_moves_to_a_channel_message(runtime: Runtime, standin: DiscordStandIn,
                                                                     hub: HubStandIn) -> None:
    hub.link_rate = 400_000
    bot = Bot(runtime, standin, token_life=2.0)
    try:
        token = standin.command("models", _sub("install", _opt("model", REPO)), member=member(ADMIN, ADMIN_ROLE))
        done = standin.wait("PATCH", f"/channels/{CHANNEL}/messages",
                            lambda c: any(b.get("label") == "Try it" for b in c.components()), timeout=90)[0]
        posted = standin.wait("POST", f"/channels/{CHANNEL}/messages")[0]
        assert done.body["_id"] == posted.body["_id"]  # the channel message the bot posted, edited to the end
        late = [c for c in standin.to("PATCH", "/messages/@original") if token in c.path and c.at > posted.at]
        assert not late  # no edits through the expired token
    finally:
        bot.stop()


def test_commands_sync_to_one_server_with_their_options(runtime: Runtime, standin: DiscordStandIn,
                                                        tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.support.discord import APP_ID, GUILD

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(MODELBAY_HOME=str(tmp_path / "home"), MODELBAY_DISCORD_API_URL=standin.api_url,
               MODELBAY_DISCORD_GATEWAY_URL=standin.gateway_url, MODELBAY_DISCORD_TOKEN=BOT_TOKEN,
               MODELBAY_ENVIRONMENT="test", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "modelbay", "discord", "--sync", "--guild", GUILD],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"in server {GUILD}" in result.stdout and BOT_TOKEN not in result.stdout + result.stderr
    [put] = standin.to("PUT", f"/applications/{APP_ID}/guilds/{GUILD}/commands")
    commands = {c["name"]: c for c in put.body}
    assert {"models", "chat", "jobs", "rate", "help", "datasets"} <= set(commands)
    models = {o["name"]: o for o in commands["models"]["options"]}
    install = {o["name"]: o for o in models["install"]["options"]}
    assert install["model"]["autocomplete"] and install["model"]["required"]
    listing = {o["name"]: o for o in models["list"]["options"]}
    assert listing["limit"]["type"] == 4 and (listing["limit"]["min_value"], listing["limit"]["max_value"]) == (1, 100)
    assert [c["value"] for c in listing["category"]["choices"]][:2] == ["chat", "code"]
    assert {o["name"] for o in commands["chat"]["options"]} == {"start", "end"}
    datasets = {o["name"]: o for o in commands["datasets"]["options"]}
    add = {o["name"]: o for o in datasets["add"]["options"]}
    assert add["path"]["type"] == 11 and add["path"]["required"]  # an attachment where the console takes a path
    assert datasets["add"]["options"][0]["name"] == "path" and add["policy"]["choices"][0]["value"] == "drop"
    assert add["model"]["autocomplete"] and {"info", "list", "preview", "delete"} <= set(datasets)


def _rated(call: Call) -> bool:
    return any(b.get("label") == "👍" for b in call.components())


def _thread_as_shown(standin: DiscordStandIn, thread_id: str, after: str) -> list[str]:
    """The answer text of the bot's messages in a thread after message `after`, as finally shown, in order: each
    message's first text display (a card's answer part; its small print and buttons follow)."""
    shown = {c.body["_id"]: c for c in standin.to("POST", f"/channels/{thread_id}/messages")
             if int(c.body["_id"]) > int(after)}
    for edit in standin.to("PATCH", f"/channels/{thread_id}/messages"):
        if edit.status < 300 and edit.body["_id"] in shown:
            shown[edit.body["_id"]] = edit
    messages = [standin.messages[i] for i in sorted(shown, key=int)]
    assert all(m["flags"] & COMPONENTS_V2 and not m["content"] and not m["embeds"] for m in messages)
    assert all(sum(len(c["content"]) for c in walk(m["components"]) if c["type"] == 10) <= TEXT_CHARS
               for m in messages)
    return [shown[i].texts()[0] for i in sorted(shown, key=int)]


def test_long_answers_with_code_arrive_whole_in_order(bot: Bot, standin: DiscordStandIn, runtime: Runtime) -> None:
    from tests.support.openai_standin import Script, StandIn

    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        for n, (size, block) in enumerate([(3344, 0), (5244, 40), (16164, 220)], start=1):
            # A fence line across the place a cut by length alone would fall, and code longer than a message.
            answer = long_answer(size, seed=size, long_block=block, fence_at=(4090, 8180))
            model.script = Script.in_pieces(answer, 7, 0.0005)
            standin.command("chat", _sub("start", _opt("model", "tiny-chat")), member=member(USER))
            started = standin.wait("POST", "/messages", lambda c: "Chatting with" in c.text(), count=n)[n - 1]
            thread_id = started.path.split("/")[2]
            standin.say("Write code.", author=member(USER)["user"], channel_id=thread_id, member=member(USER))
            standin.wait("PATCH", "/channels/", _rated, count=n, timeout=120)
            shown = _thread_as_shown(standin, thread_id, started.body["_id"])
            assert not any("▍" in d for d in shown)
            cuts_in_code = untile(shown, answer)  # every character, once, in order; code closed and reopened
            if size > 10000:  # cards hold 4,000 characters, a few hundred kept for the last one's small print
                assert cuts_in_code >= 1 and len(shown) <= 6


def test_a_message_the_gateway_delivers_again_is_answered_once(bot: Bot, standin: DiscordStandIn,
                                                               runtime: Runtime) -> None:
    thread_id, _ = _open_chat(standin)
    asked = standin.say("What color is the sky?", author=member(USER)["user"], channel_id=thread_id,
                        member=member(USER))
    standin.say("What color is the sky?", author=member(USER)["user"], channel_id=thread_id, member=member(USER),
                message_id=asked)  # replayed, as after a RESUME
    standin.wait("PATCH", f"/channels/{thread_id}/messages", _rated)
    time.sleep(2.0)  # a second answer would have begun by now
    assert len([c for c in standin.to("POST", f"/channels/{thread_id}/messages") if "Thinking" in c.text()]) == 1
    session = runtime.chats.recent(f"discord:{USER}", 1)[0]
    assert [t["role"] for t in runtime.chats.history(session.id)] == ["user", "assistant"]
    with runtime.db.session() as db:
        assert len(db.scalars(select(Message).where(Message.role == "user")).all()) == 1
        assert len(db.scalars(select(AnalyticsEvent)).all()) == 1


def test_buttons_inside_cards_work_after_a_restart(runtime: Runtime, standin: DiscordStandIn) -> None:
    first = Bot(runtime, standin)
    try:
        thread_id, started = _open_chat(standin)
        standin.say("What color is the sky?", author=member(USER)["user"], channel_id=thread_id,
                    member=member(USER))
        final = standin.wait("PATCH", f"/channels/{thread_id}/messages", _rated)[0]
    finally:
        first.stop()
    standin.disconnect()
    for card in (started, final):  # cards: the buttons sit in rows inside the container, no content or embeds
        message = standin.messages[card.body["_id"]]
        assert message["flags"] & COMPONENTS_V2 and [c["type"] for c in message["components"]] == [17]
    second = Bot(runtime, standin)  # a new process: no views in memory, only the dynamic item templates
    try:
        in_thread = thread_channel(thread_id)
        up, down = _component(final, "👍"), _component(final, "👎")
        message_id = int(up["custom_id"].rsplit(":", 1)[1])
        press = standin.press(up, final.body["_id"], member=member(USER), channel=in_thread)
        assert f"Rated answer #{message_id} 👍" in standin.wait("POST", "/callback", lambda c: press in c.path)[0].text()
        press = standin.press(down, final.body["_id"], member=member(USER), channel=in_thread)
        menu = standin.wait("POST", "/callback", lambda c: press in c.path)[0].components()[0]
        assert menu["custom_id"] == f"mb:why:{message_id}"
        chose = standin.press(menu, standin.original(press)["id"], member=member(USER), channel=in_thread,
                              values=["too_verbose"])
        assert "Changed your rating" in standin.wait("POST", "/callback", lambda c: chose in c.path)[0].text()
        with runtime.db.session() as db:
            rating = db.scalars(select(Feedback)).one()
            assert (rating.message_id, rating.rating, rating.reason) == (message_id, -1, "too_verbose")

        press = standin.press(_component(started, "System prompt"), started.body["_id"], member=member(USER),
                              channel=in_thread)
        assert standin.wait("POST", "/callback", lambda c: press in c.path)[0].body["type"] == 9  # the form
        session = runtime.chats.recent(f"discord:{USER}", 1)[0]
        press = standin.press(_component(started, "End chat"), started.body["_id"], member=member(USER),
                              channel=in_thread)
        assert "ended" in standin.wait("POST", "/callback", lambda c: press in c.path, timeout=20)[0].text()
        assert runtime.chats.current(session.place) is None
    finally:
        second.stop()


def test_a_card_of_30000_characters_is_sent_whole_within_discords_limits(bot: Bot, standin: DiscordStandIn) -> None:
    answer = long_answer(30000, seed=30000, long_block=150)
    buttons = [Button("👎", "/rate down message:7")] + [Button(f"B{i}", f"/help {'x' * 5 * i}") for i in range(30)]
    reply = Reply(title="A very long card " + "t" * 400, text=answer, tone="success",
                  fields=[Field("Model", "`tiny-chat`"), Field("Note", "n" * 3000)],
                  progress=Progress("job-1", "Install", 0.4, "started", "d" * 2000), footer="f" * 3000,
                  buttons=buttons)
    messages = bot.adapter._cards(reply)
    assert len(messages) > 7 and all(m.card and m.card.chars() <= TEXT_CHARS for m in messages)
    channel = bot.adapter.client.get_partial_messageable(int(CHANNEL))
    for message in messages:  # through discord.py to the stand-in, which refuses what Discord would refuse
        asyncio.run_coroutine_threadsafe(channel.send(**bot.adapter._send_kwargs(message)), bot.loop).result(30)
    sent = standin.wait("POST", f"/channels/{CHANNEL}/messages", count=len(messages))
    every = [c for c in walk(sent[0].body["components"])]
    assert len(every) <= 40 and sum(len(c["content"]) for c in every if c["type"] == 10) <= TEXT_CHARS
    ids = [c["custom_id"] for c in sent[0].components()]  # 20 buttons; a line too long for an id kept in Redis
    assert len(ids) == 20 and ids[0] == "mb:down:7" and ids[-1].startswith("mb:key:")
    title, first_part, *rest = sent[0].texts()
    assert title.startswith("### A very long card") and rest[-1].startswith("-# fff") and "continued" in rest[-1]
    assert any(t.startswith("**Install**: `▰▰▰▰") for t in rest)
    body = answer + "\n\n**Model**: `tiny-chat`\n**Note**: " + "n" * 3000
    untile([first_part] + [c.texts()[0] for c in sent[1:]], body)  # every character once, code closed and reopened


def test_the_standin_refuses_what_discord_refuses_with_its_error_shape() -> None:
    import httpx

    text = {"type": 10, "content": "hello"}
    button = {"type": 2, "style": 2, "label": "Go", "custom_id": "mb:run:/help"}

    def card(*children: dict) -> list[dict]:
        return [{"type": 17, "components": list(children)}]

    refused = {  # body -> (error path, Discord's code)
        "content with the flag": ({"flags": COMPONENTS_V2, "content": "hi", "components": card(text)},
                                  ("content",), "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2"),
        "embeds with the flag": ({"flags": COMPONENTS_V2, "embeds": [{"description": "x"}], "components": card(text)},
                                 ("embeds",), "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2"),
        "a text display without the flag": ({"components": [text]}, ("components", "0", "type"),
                                            "COMPONENT_LAYOUT_REQUIRES_COMPONENTS_V2"),
        "4,001 characters of text": ({"flags": COMPONENTS_V2, "components": card(
            {"type": 10, "content": "a" * 2000}, {"type": 10, "content": "b" * 2001})}, ("components",),
            "COMPONENT_TEXT_DISPLAY_TOTAL_LENGTH_EXCEEDED"),
        "41 components": ({"flags": COMPONENTS_V2, "components": card(*[text] * 40)}, ("components",),
                          "BASE_TYPE_MAX_LENGTH"),
        "a 101-character custom id": ({"flags": COMPONENTS_V2, "components": card(
            text, {"type": 1, "components": [{**button, "custom_id": "x" * 101}]})},
            ("components", "0", "components", "1", "components", "0", "custom_id"), "BASE_TYPE_BAD_LENGTH"),
        "six buttons in a row": ({"components": [{"type": 1, "components": [button] * 6}]},
                                 ("components", "0", "components"), "BASE_TYPE_BAD_LENGTH"),
        "an empty text display": ({"flags": COMPONENTS_V2, "components": card({"type": 10, "content": ""})},
                                  ("components", "0", "components", "0", "content"), "BASE_TYPE_REQUIRED"),
        "2,001 characters of content": ({"content": "c" * 2001}, ("content",), "BASE_TYPE_MAX_LENGTH"),
    }
    with DiscordStandIn() as server, httpx.Client(base_url=server.api_url, timeout=10) as client:
        for name, (body, where, code) in refused.items():
            answer = client.post(f"/channels/{CHANNEL}/messages", json=body)
            assert answer.status_code == 400, name
            error = answer.json()
            assert (error["code"], error["message"]) == (50035, "Invalid Form Body"), name
            error = error["errors"]
            for key in where:
                error = error[key]
            assert code in {e["code"] for e in error["_errors"]}, name
        largest = {"flags": COMPONENTS_V2, "components": card(
            {"type": 10, "content": "a" * 3990}, *[{"type": 1, "components": [button] * 5}] * 6, text)}
        posted = client.post(f"/channels/{CHANNEL}/messages", json=largest)  # 4,000 characters, 38 components
        assert posted.status_code == 200 and posted.json()["flags"] == COMPONENTS_V2
        edit = f"/channels/{CHANNEL}/messages/{posted.json()['id']}"
        assert client.patch(edit, json={"content": "now plain"}).status_code == 400  # the flag is kept for good
        assert client.patch(edit, json={"flags": 0, "components": []}).status_code == 400
        assert client.patch(edit, json={"components": card(text)}).status_code == 200  # still a card
        assert server.messages[posted.json()["id"]]["flags"] == COMPONENTS_V2
        plain = client.post(f"/channels/{CHANNEL}/messages", json={"content": "Thinking…"}).json()
        converted = client.patch(f"/channels/{CHANNEL}/messages/{plain['id']}",
                                 json={"flags": COMPONENTS_V2, "components": card(text)})
        assert converted.status_code == 400  # its content is still there: a card has none
    assert [c.status for c in server.calls].count(400) == len(refused) + 3


def test_an_answer_that_cannot_start_says_why_in_its_card(bot: Bot, standin: DiscordStandIn, runtime: Runtime) -> None:
    thread_id, _ = _open_chat(standin)
    viewer = "500000000000000077"
    runtime.settings.roles = {**runtime.settings.roles, "viewer": [f"discord:{viewer}"]}
    standin.say("May I?", author=member(viewer)["user"], channel_id=thread_id, member=member(viewer))
    thinking = standin.wait("POST", f"/channels/{thread_id}/messages", lambda c: "Thinking" in c.text())[0]
    said = standin.wait("PATCH", f"/channels/{thread_id}/messages/{thinking.body['_id']}")[0]
    assert said.flags() & COMPONENTS_V2 and "Not allowed" in " ".join(said.texts())  # the card stays a card


def test_an_answers_notes_are_cut_to_the_room_its_last_card_has_left() -> None:
    footer = "#12 · transformers · 40 tokens · first token 80 ms · 22.0 tokens/s"
    assert fit_notes(["Cut to fit.", footer], 400) == ("Cut to fit.", footer)  # the usual case: all of it
    notes = fit_notes(["The 3 oldest messages no longer fit. " * 60, "line one\nline two", footer], 400)
    assert len(small_print(notes)) <= 400 and notes[0].endswith("…") and notes[1:] == ("line one\nline two", footer)
    assert len(small_print(fit_notes(["x" * 50, footer], 10))) <= 10  # never over the room
    assert fit_notes(["x" * 50, footer], 3) == ()  # no room: no small print at all


# -- arena: the battle card edited as both answers grow, vote buttons, names revealed to the voter only --------------

ARENA_ANSWER = "The sea at night is dark and calm, and the stars are bright above it."


def test_an_arena_battle_is_one_card_edited_as_both_answers_grow_and_a_vote_reveals_the_names_privately(
        bot: Bot, standin: DiscordStandIn, runtime: Runtime, tiny_model: Path) -> None:
    from tests.support.openai_standin import Script, StandIn

    installed(runtime.registry, tiny_model, name="tiny-base")
    with StandIn() as model:  # tiny-base answers slowly from a served stand-in; tiny-chat in process
        served_by(runtime, "tiny-base", model.endpoint)
        model.script = Script.in_pieces(ARENA_ANSWER, 6, 0.35)  # 12 pieces over about four seconds
        token = standin.command("arena", _sub("start", _opt("prompt", "Say hello.")), member=member(USER))
        assert standin.wait("POST", "/callback", lambda c: token in c.path)[0].body["type"] == 5  # slow: deferred
        voting = standin.wait("PATCH", "/messages/@original", lambda c: token in c.path and any(
            "/arena vote" in b.get("custom_id", "") for b in c.components()), timeout=120)[0]
    ids = [b["custom_id"] for b in voting.components() if "/arena vote" in b.get("custom_id", "")]
    battle = runtime.arena.get(int(ids[0].split()[2]))
    assert ids == [f"mb:run:/arena vote {battle.id} {code}" for code in ("a", "b", "tie", "bad")]
    side = "A" if battle.a.model == "tiny-base" else "B"
    edits = [c for c in _original(standin, token) if c.at < voting.at]
    growing = [c for c in edits if f"Model {side}" in c.text() and ARENA_ANSWER[:6] in c.text()
               and ARENA_ANSWER not in c.text()]
    assert growing, [c.text()[:300] for c in edits]  # the one card, edited while the answers were written
    assert ARENA_ANSWER in voting.text() and "tiny-base" not in voting.text()  # whole, and anonymous until a vote
    assert not standin.to("POST", "/channels/")  # everything happened in the one answer

    a_better = next(b for b in voting.components() if b.get("label") == "A is better")
    press = standin.press(a_better, standin.original(token)["id"], member=member(USER))
    revealed = standin.wait("POST", "/callback", lambda c: press in c.path)[0]
    assert revealed.body["data"]["flags"] & 64 and "Thanks for your vote" in revealed.text()  # to the voter only
    assert battle.a.label in revealed.text() and battle.b.label in revealed.text()
    again = standin.press(a_better, standin.original(token)["id"], member=member(USER))
    refused = standin.wait("POST", "/callback", lambda c: again in c.path)[0]
    assert refused.body["data"]["flags"] & 64 and f"You already voted on battle #{battle.id}" in refused.text()
    assert runtime.arena.counts().votes == 1
