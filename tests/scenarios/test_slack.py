"""The Slack app: signed requests into the real bolt app through the real FastAPI route; Slack's side recorded.

The Web API, response URLs, file hosting and Socket Mode are the stand-in in tests/support/slack.py; everything
of ModelBay's (engine, jobs, installs from the hub stand-in, in-process answers of a tiny model) is real.
"""

from __future__ import annotations

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
from modelbay.adapters.slack.blocks import BLOCK_LIMIT, MESSAGE_CHARS, SECTION_CHARS, mrkdwn, render
from modelbay.bot import Dispatcher, Reply, Table
from modelbay.config import Settings
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.chat import Feedback, Message
from modelbay.runtime import Runtime
from tests.conftest import ROOT, wait_for
from tests.support.answers import long_answer, untile
from tests.support.asgi import serve
from tests.support.commands import COMMANDS_HERE, REPORT
from tests.support.chat import FRONT_END_REPO as REPO
from tests.support.chat import front_end_runtime, served_by
from tests.support.hub import HubStandIn
from tests.support.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Call, SignedRequests, SlackStandIn

ADMIN, USER = "UADMIN", "UUSER"


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


@pytest.fixture
def runtime(settings: Settings, standin: SlackStandIn, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path,
            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """An embedded runtime (SQLite, in-process jobs) whose Slack settings point at the stand-in."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runtime = front_end_runtime(settings, hub, tiny_model, tiny_chat_model, slack_api_url=standin.api_url,
                                slack_bot_token=SecretStr(BOT_TOKEN), slack_signing_secret=SecretStr(SIGNING_SECRET),
                                roles={"admin": [f"slack:{ADMIN}", "slack:group:SADMINS"]})
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


def test_the_events_url_answers_slacks_challenge(slack: SignedRequests) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "token": "legacy"}).encode()
    answered = slack.post(body, "application/json")
    assert answered.status_code == 200 and "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" in answered.text
    assert slack.post(body, "application/json", signature="v0=" + "1" * 64).status_code == 401


def test_the_ack_comes_at_once_while_a_slow_command_runs(slack: SignedRequests, standin: SlackStandIn) -> None:
    started = time.monotonic()
    response = slack.command("slowpoke")
    acked = time.monotonic() - started
    assert response.status_code == 200 and acked < 3.0
    placeholder = standin.wait("chat.postMessage", lambda c: _in(c, "Working on"))[0]
    done = standin.wait("chat.update", lambda c: _in(c, "Finally done."), timeout=30)[0]
    assert done.args["ts"] and done.at - started >= 4.5  # the answer replaced the placeholder when the work ended
    assert done.args["channel"] == placeholder.args["channel"] == "C1"


def test_errors_are_one_private_line(slack: SignedRequests, standin: SlackStandIn, runtime: Runtime) -> None:
    slack.command("models lsit")
    said = standin.wait("response_url")[0]
    assert said.args["response_type"] == "ephemeral" and _in(said, "Unknown command", "/modelbay models list")
    slack.command("models install tiny-org/tiny-llama", user=USER)  # installs need the admin role
    refused = standin.wait("response_url", lambda c: _in(c, "Not allowed"))[0]
    assert _in(refused, "admin") and "Traceback" not in refused.text()
    assert not standin.to("chat.postMessage")

    runtime.settings.roles = {**runtime.settings.roles, "viewer": ["slack:UVIEW"]}
    slack.command("chat tiny-chat", user="UVIEW")  # chatting needs the user role: no thread is started
    assert standin.wait("response_url", lambda c: _in(c, "`/modelbay chat` needs the user role"))
    assert not standin.to("chat.postMessage")


def test_files_in_replies_are_uploaded_to_the_thread(slack: SignedRequests, standin: SlackStandIn) -> None:
    slack.command("report")
    posted = standin.wait("chat.postMessage", lambda c: _in(c, "Here is the report."))[0]
    standin.wait("files.completeUploadExternal")
    upload = standin.to("upload")[0]
    assert standin.uploads[upload.args["id"]] == REPORT
    complete = standin.to("files.completeUploadExternal")[0]
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == posted.args["_ts"]


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


def _button(call: Call, label: str) -> dict:
    return next(b for b in call.buttons() if b["text"]["text"] == label)


def test_install_progress_is_one_message_edited_at_most_once_a_second(slack: SignedRequests, standin: SlackStandIn,
                                                                      hub: HubStandIn, runtime: Runtime) -> None:
    hub.link_rate = 400_000  # bytes/s: the 2.4 MB tiny model takes about six seconds
    slack.command(f"models install {REPO}", user=ADMIN)
    posted = standin.wait("chat.postMessage", lambda c: _in(c, "Working on"))[0]
    finished = standin.wait("chat.update", lambda c: any(b["text"]["text"] == "Try it" for b in c.buttons()),
                            timeout=90)[0]
    edits = [c for c in standin.to("chat.update") if c.status == 200]
    assert {c.args["ts"] for c in edits} == {finished.args["ts"]} and len(standin.to("chat.postMessage")) == 1
    moving = [c for c in edits if _in(c, "▰")]
    assert len(moving) >= 3  # the bar moved in place
    assert all(b.at - a.at >= 0.95 for a, b in zip([posted, *edits], edits))  # never more than one edit a second
    assert _in(finished, "install ", "done") and not any(b["text"]["text"] == "Cancel" for b in finished.buttons())
    model = runtime.registry.get(REPO)
    assert model.installed and _button(finished, "Try it")["value"] == f"/chat {model.name}"


def test_a_chat_lives_in_a_thread_streams_and_takes_ratings(slack: SignedRequests, standin: SlackStandIn,
                                                           runtime: Runtime) -> None:
    standin.refuse_streaming = "not_allowed"  # the chat.update path, with 👍/👎 as buttons
    slack.command("chat tiny-chat", user=USER)
    root = standin.wait("chat.postMessage", lambda c: _in(c, "Starting a chat"))[0]
    opened = standin.wait("chat.update", lambda c: _in(c, "Chatting with", "Reply in this thread"))[0]
    thread = opened.args["ts"]
    assert root.args.get("thread_ts") is None
    message = {"type": "message", "channel": "C1", "user": USER, "text": "What color is the sky?", "ts": "1.5",
               "thread_ts": thread, "channel_type": "channel"}
    slack.event(message, event_id="EvSKY")
    slack.event(message, event_id="EvSKY", headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    answer = standin.wait("chat.update", lambda c: any("rate up" in b.get("value", "") for b in c.buttons()))[0]
    thinking = [c for c in standin.to("chat.postMessage") if _in(c, "Thinking")]
    assert len(thinking) == 1 and thinking[0].args["thread_ts"] == thread  # the retry was not answered again
    assert answer.args["ts"] != thread and _in(answer, "transformers", "tokens")
    up, down = _button(answer, "👍"), _button(answer, "👎")
    message_id = int(up["value"].rsplit(":", 1)[1])

    slack.button(up, user=USER, message_ts=answer.args["ts"], thread_ts=thread)
    assert standin.wait("response_url", lambda c: _in(c, f"Rated answer #{message_id} 👍"))[0].args[
        "response_type"] == "ephemeral"
    slack.button(down, user=USER, message_ts=answer.args["ts"], thread_ts=thread)
    view = standin.wait("views.open")[0].args["view"]
    assert view["callback_id"] == "mb_rate" and _in(standin.to("views.open")[0], "Wrong", "Too verbose", "Didn't follow")
    slack.submit(view, {"reason": {"reason": {"type": "static_select", "selected_option": {"value": "wrong"}}},
                        "comment": {"comment": {"type": "plain_text_input", "value": "the sky is blue"}}}, user=USER)
    changed = standin.wait("chat.postEphemeral", lambda c: _in(c, "Changed your rating"))[0]
    assert changed.args["user"] == USER and changed.args["thread_ts"] == thread
    with runtime.db.session() as db:
        rating = db.scalars(select(Feedback)).one()
        assert (rating.message_id, rating.rating, rating.reason, rating.comment) == (message_id, -1, "wrong",
                                                                                    "the sky is blue")
    slack.button(up, user=ADMIN, message_ts=answer.args["ts"], thread_ts=thread)  # not their answer
    assert standin.wait("response_url", lambda c: _in(c, "someone else"))

    slack.button(_button(opened, "End chat"), user=USER, message_ts=thread)
    ended = standin.wait("chat.postMessage", lambda c: _in(c, "ended"))[0]
    assert ended.args["thread_ts"] == thread and runtime.chats.recent(f"slack:{USER}", 1)[0].closed
    slack.event({**message, "ts": "1.7", "text": "Still there?"})
    time.sleep(1.0)
    assert len([c for c in standin.to("chat.postMessage") if _in(c, "Thinking")]) == 1  # no chat, no answer


def test_when_slack_fails_us_the_person_still_hears_one_line(slack: SignedRequests, standin: SlackStandIn,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    standin.fail("chat.postMessage", 500, retry_after=None)
    slack.command("models list")
    said = standin.wait("response_url")[0]
    assert _in(said, "Something went wrong on our side (ref") and "Traceback" not in said.text()
    assert "internal_error" in caplog.text  # the log keeps what happened

    standin.fail("views.open", 500, retry_after=None)  # a shortcut's modal cannot open
    slack.shortcut("mb_browse", user=USER)
    told = standin.wait("chat.postMessage", lambda c: c.args["channel"] == USER)[0]
    assert _in(told, "Something went wrong on our side (ref")


def test_a_long_answer_streams_in_place_and_continues_in_new_messages(slack: SignedRequests, standin: SlackStandIn,
                                                                      runtime: Runtime) -> None:
    from tests.support.openai_standin import Script, StandIn

    words = [f"word{i:04d} " for i in range(1400)]  # 12,600 characters: four messages
    standin.refuse_streaming = "unknown_method"  # the chat.update path
    with StandIn() as model:
        model.script = Script(pieces=words, delay=0.003)
        served_by(runtime, "tiny-chat", model.endpoint)
        slack.command("chat tiny-chat", user=USER)
        thread = standin.wait("chat.update", lambda c: _in(c, "Chatting with"))[0].args["ts"]
        standin.fail("chat.update", 429, retry_after=2)  # the first edit of the answer is refused
        slack.event({"type": "message", "channel": "C1", "user": USER, "text": "Count.", "ts": "1.6",
                     "thread_ts": thread, "channel_type": "channel"})
        final = standin.wait("chat.update", lambda c: any("rate up" in b.get("value", "") for b in c.buttons()),
                             timeout=60)[0]
    posts = [c for c in standin.to("chat.postMessage") if c.args.get("thread_ts") == thread]
    assert len(posts) == 4 and posts[0].text().count("Thinking")
    edits = [c for c in standin.to("chat.update") if c.args["ts"] in {p.args['_ts'] for p in posts}]
    shown = {}
    for edit in edits:
        if edit.status == 200:
            shown[edit.args["ts"]] = edit
    text = "".join(b["text"]["text"] for ts in sorted(shown) for b in shown[ts].args["blocks"]
                   if b["type"] == "section")
    assert all(w.strip() in text for w in words) and "▍" not in text  # all of it, and no cursor left
    for edit in shown.values():
        assert sum(len(b["text"]["text"]) for b in edit.args["blocks"] if b["type"] == "section") <= 3600
    limited = next(c for c in edits if c.status == 429)
    retried = next(c for c in edits if c.at > limited.at and c.args["ts"] == limited.args["ts"])
    assert retried.at - limited.at >= 1.9  # Retry-After was honoured
    per_message = {}
    for edit in edits:
        per_message.setdefault(edit.args["ts"], []).append(edit.at)
    assert all(b - a >= 0.95 for times in per_message.values() for a, b in zip(times, times[1:]))
    assert final.args["ts"] == max(shown)


def _installed_after(standin: SlackStandIn, channel: str) -> Call:
    return standin.wait("chat.update", lambda c: c.args["channel"] == channel
                        and any(b["text"]["text"] == "Try it" for b in c.buttons()), timeout=60)[0]


def test_browse_models_searches_in_a_modal_and_installs_into_a_direct_message(
        slack: SignedRequests, standin: SlackStandIn, runtime: Runtime) -> None:
    slack.shortcut("mb_browse", user=ADMIN)
    opened = standin.wait("views.open")[0]
    view = opened.args["view"]
    assert view["type"] == "modal" and _in(opened, "Search", "Any category", "Install")
    assert len(view["blocks"]) <= 100
    state = {"query": {"mb_browse_query": {"type": "plain_text_input", "value": "tiny-llama"}},
             "category": {"mb_browse_category": {"type": "static_select", "selected_option": None}}}
    slack.view_action(view, {"type": "plain_text_input", "action_id": "mb_browse_query", "block_id": "query",
                             "value": "tiny-llama"}, state, user=ADMIN)
    updated = standin.wait("views.update", lambda c: _in(c, REPO))[0]
    assert updated.args["view_id"] == "V1" and updated.args["hash"] == "h1"
    install = next(b for b in updated.buttons() if b["value"] == f"/models install {REPO}")
    slack.view_action(updated.args["view"], install, state, user=ADMIN)
    direct = standin.wait("conversations.open")[0].args["users"]
    assert direct == ADMIN
    done = _installed_after(standin, f"D{ADMIN[1:]}")
    assert _in(done, "done") and runtime.registry.get(REPO).installed

    slack.shortcut("mb_browse", user=USER)  # people who may not install are offered details instead
    offered = standin.wait("views.open", count=2)[1]
    assert not any(b["value"].startswith("/models install") for b in offered.buttons())
    assert _in(offered, "Installing needs the admin role")


def test_ask_a_model_starts_a_chat_under_the_message_seeded_with_it(slack: SignedRequests, standin: SlackStandIn,
                                                                    runtime: Runtime) -> None:
    message = {"type": "message", "ts": "5.0", "user": "U9", "text": "What color is grass &amp; why?"}
    slack.shortcut("mb_ask", user=USER, message=message)
    opened = standin.wait("views.open")[0]
    view = opened.args["view"]
    assert view["callback_id"] == "mb_ask" and _in(opened, "tiny-chat", "What color is grass")
    slack.submit(view, {"model": {"model": {"type": "static_select", "selected_option": {"value": "tiny-chat"}}},
                        "system": {"system": {"type": "plain_text_input", "value": "Answer in one word."}}},
                 user=USER)
    answer = standin.wait("chat.stopStream")[0]  # the answer streamed into the thread
    opened_chat = standin.wait("chat.postMessage", lambda c: _in(c, "Chatting with"))[0]
    assert opened_chat.args["thread_ts"] == "5.0" and _in(opened_chat, "Answer in one word.")
    assert standin.to("chat.startStream")[0].args["thread_ts"] == "5.0"
    session = runtime.chats.current(runtime.chats.recent(f"slack:{USER}", 1)[0].place)
    assert session.place == runtime.chats.recent(f"slack:{USER}", 1)[0].place
    assert session.place.thread_id == "5.0" and session.system_prompt == "Answer in one word."
    history = runtime.chats.history(session.id)
    assert history[0] == {"role": "user", "content": "What color is grass & why?"}  # Slack's escapes undone
    assert answer.args["channel"] == "C1"


def test_the_home_tab_shows_models_jobs_and_your_chats(slack: SignedRequests, standin: SlackStandIn) -> None:
    slack.command("chat tiny-chat", user=USER)
    standin.wait("chat.update", lambda c: _in(c, "Chatting with"))
    slack.event({"type": "app_home_opened", "user": USER, "channel": "D1", "tab": "home"})
    published = standin.wait("views.publish")[0]
    view = published.args["view"]
    assert published.args["user_id"] == USER and view["type"] == "home" and len(view["blocks"]) <= 100
    assert _in(published, "Installed models", "Tiny Chat", "Running jobs", "Your recent chats", "<#C1>", "open",
               "Your role: user")
    try_it = next(b for b in published.buttons() if b.get("value") == "/chat tiny-chat")
    slack.view_action({"type": "home"}, try_it, {}, user=USER)  # Try it from Home: a chat in the direct message
    standin.wait("chat.update", lambda c: c.args["channel"] == f"D{USER[1:]}" and _in(c, "Chatting with"))


def test_files_sent_in_a_direct_message_are_fetched_with_the_bot_token(slack: SignedRequests, standin: SlackStandIn,
                                                                       runtime: Runtime) -> None:
    # 25 rows, each sent twice: duplicates are counted and kept (a copy of a validation row does not train).
    data = b"".join(b'{"messages": [{"role": "user", "content": "hi %d"}, {"role": "assistant", "content": "hello"}]}'
                    b"\n" % i for i in range(25)) * 2
    files = [
        {"id": "F1", "name": "train.jsonl", "size": len(data), "url_private_download": standin.add_file("train.jsonl",
                                                                                                         data)},
        {"id": "F2", "name": "weights.bin", "size": 10, "url_private_download": standin.add_file("weights.bin", b"x")},
        {"id": "F3", "name": "elsewhere.csv", "size": 10, "url_private_download": "http://127.0.0.1:9/elsewhere.csv"},
    ]
    slack.event({"type": "message", "subtype": "file_share", "channel": "D1", "channel_type": "im", "user": USER,
                 "text": "", "ts": "7.0", "files": files})
    card = standin.wait("chat.update", lambda c: c.args["channel"] == "D1" and _in(c, "Dataset #1 · train"))[0]
    assert _in(card, "50 rows read from `train.jsonl`", "50 valid", "Duplicates", "25 (kept; line 26 repeats 1",
               "Train on this")
    # No model measured the rows: the button opens the form that asks for one, then runs /train start dataset:1.
    assert _button(card, "Train on this")["value"] == "mb:train:1"
    refused = standin.wait("chat.postMessage", lambda c: c.args["channel"] == "D1" and _in(c, "weights.bin"))[0]
    assert _in(refused, "datasets are", "not on Slack", "/modelbay datasets")
    fetched = standin.to("file")
    assert [c.args["name"] for c in fetched] == ["train.jsonl"]  # refused files are never fetched
    assert fetched[0].headers["authorization"] == f"Bearer {BOT_TOKEN}"
    [dataset] = runtime.datasets.list(f"slack:{USER}")
    assert Path(dataset.path).read_bytes() == data and dataset.filename == "train.jsonl" and dataset.source == "slack"
    standin.wait("files.completeUploadExternal")  # the card's length chart, in the card's thread
    chart = standin.to("upload")[0]
    assert standin.uploads[chart.args["id"]].startswith(b"\x89PNG")
    assert standin.to("files.completeUploadExternal")[0].args["channel_id"] == "D1"

    slack.view_action({"type": "home"}, {"type": "button", "action_id": "mb_open_upload", "value": ""}, {}, user=USER)
    form = standin.wait("views.open")[0].args["view"]
    assert form["callback_id"] == "mb_upload" and "jsonl" in json.dumps(form) and "parquet" in json.dumps(form)
    csv = b"prompt,completion\nhi,hello\n"
    picked = [{"id": "F4", "name": "more.csv", "size": len(csv), "url_private_download": standin.add_file("more.csv",
                                                                                                         csv)}]
    slack.submit(form, {"file": {"mb_upload_file": {"type": "file_input", "files": picked}}}, user=USER)
    standin.wait("chat.update", lambda c: _in(c, "Dataset #2 · more", "completion CSV (detected)"))
    assert {d.filename for d in runtime.datasets.list(f"slack:{USER}")} == {"train.jsonl", "more.csv"}


def test_slack_user_groups_grant_roles(slack: SignedRequests, standin: SlackStandIn) -> None:
    standin.usergroups = [{"id": "SADMINS", "handle": "ml-admins", "users": ["UGROUPIE"]}]
    slack.command("help", user="UGROUPIE")
    slack.command("help", user=USER)
    # The footer names the role (an admin's longer list may continue in a thread: only the footers count here).
    said = standin.wait("chat.postMessage", lambda c: "Your role" in c.text(), count=2)
    roles = sorted("Your role: admin" in c.text() for c in said)
    assert roles == [False, True]
    assert len(standin.to("usergroups.list")) == 1  # memberships are cached


def test_without_slack_settings_the_route_says_what_to_set(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        with serve(create_app(runtime)) as url:
            import httpx

            refused = httpx.post(f"{url}/slack/events", content=b"{}")
            assert refused.status_code == 503 and "MODELBAY_SLACK_SIGNING_SECRET" in refused.json()["error"]
    finally:
        runtime.close()


def test_socket_mode_runs_the_same_app_over_a_websocket(standin: SlackStandIn, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(MODELBAY_HOME=str(tmp_path / "home"), MODELBAY_SLACK_API_URL=standin.api_url,
               MODELBAY_SLACK_BOT_TOKEN=BOT_TOKEN, MODELBAY_SLACK_APP_TOKEN=APP_TOKEN, MODELBAY_ENVIRONMENT="test",
               PYTHONPATH=str(ROOT))
    log = (tmp_path / "slack.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "modelbay", "slack"], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: standin.socket_connected, timeout=60)
        envelope = standin.send_envelope("slash_commands", {
            "command": "/modelbay", "text": "models list category:code", "user_id": "U1", "user_name": "u1",
            "channel_id": "C1", "team_id": "T1", "response_url": standin.response_url(), "trigger_id": "t"})
        acked = standin.wait("socket_ack", lambda c: c.args.get("envelope_id") == envelope, timeout=10)[0]
        assert acked.at  # acknowledged over the socket
        posted = standin.wait("chat.postMessage", lambda c: _in(c, "Models"), timeout=30)[0]
        assert _in(posted, "deepseek-coder") and standin.to("apps.connections.open")[0].headers[
            "authorization"] == f"Bearer {APP_TOKEN}"
    finally:
        process.terminate()
        process.wait(15)
        log.close()
    secrets_in_log = (tmp_path / "slack.log").read_text()
    assert BOT_TOKEN not in secrets_in_log and APP_TOKEN not in secrets_in_log


def test_the_manifest_declares_what_the_app_listens_for() -> None:
    import yaml

    from modelbay.adapters.slack import views

    manifest = yaml.safe_load((ROOT / "modelbay/adapters/slack/manifest.yaml").read_text())
    [slash] = manifest["features"]["slash_commands"]
    assert slash["command"] == Settings.model_fields["slack_command"].default
    assert {s["callback_id"]: s["type"] for s in manifest["features"]["shortcuts"]} == {views.BROWSE: "global",
                                                                                      views.ASK: "message"}
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_home_opened", "message.im", "message.channels"} <= events
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "im:write", "files:read", "files:write", "usergroups:read"} <= scopes
    assert manifest["features"]["app_home"]["home_tab_enabled"] and manifest["settings"]["interactivity"]["is_enabled"]


def _thread_as_shown(standin: SlackStandIn, thread: str) -> list[Call]:
    """The thread's messages as Slack finally shows them: each posted message's last accepted version, in order."""
    shown = {c.args["_ts"]: c for c in standin.to("chat.postMessage") if c.args.get("thread_ts") == thread}
    for edit in standin.to("chat.update"):
        if edit.status == 200 and edit.args["ts"] in shown:
            shown[edit.args["ts"]] = edit
    return [shown[ts] for ts in sorted(shown, key=float)]


def _unescaped(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _rated(call: Call) -> bool:
    return any("rate up" in b.get("value", "") for b in call.buttons())


def test_long_answers_with_code_arrive_whole_in_order_and_escaped(slack: SignedRequests, standin: SlackStandIn,
                                                                  runtime: Runtime) -> None:
    from tests.support.openai_standin import Script, StandIn

    standin.refuse_streaming = "unknown_method"  # the chat.update path
    with StandIn() as model:
        served_by(runtime, "tiny-chat", model.endpoint)
        for n, (size, block) in enumerate([(3344, 0), (5244, 40), (16164, 220)], start=1):
            # A fence line across the place a cut by length alone would fall, and code longer than a message.
            answer = long_answer(size, seed=size, long_block=block, fence_at=(3495, 6990))
            model.script = Script.in_pieces(answer, 7, 0.0005)
            slack.command("chat tiny-chat", user=USER)
            thread = standin.wait("chat.update", lambda c: _in(c, "Chatting with"), count=n)[n - 1].args["ts"]
            slack.event({"type": "message", "channel": "C1", "user": USER, "text": "Write code.", "ts": f"2.{n}",
                         "thread_ts": thread, "channel_type": "channel"})
            standin.wait("chat.update", _rated, count=n, timeout=120)
            messages = _thread_as_shown(standin, thread)
            sections = [b["text"]["text"] for m in messages for b in m.args["blocks"] if b["type"] == "section"]
            for message in messages:  # everything sent is escaped: no mention or link can come from the model
                assert "<" not in message.args["text"] and ">" not in message.args["text"]
                assert all("<" not in t and ">" not in t for t in sections)
                assert "Continued in the thread" not in message.text() and "▍" not in message.text()
            assert all(len(t) <= SECTION_CHARS for t in sections)
            cuts_in_code = untile([_unescaped(t) for t in sections], answer)  # every character, once, in order
            assert _rated(messages[-1]) and not any(_rated(m) for m in messages[:-1])
            if size > 10000:
                assert cuts_in_code >= 1 and len(messages) >= 5


def test_the_same_message_delivered_again_is_answered_once(slack: SignedRequests, standin: SlackStandIn,
                                                           runtime: Runtime) -> None:
    standin.refuse_streaming = "not_allowed"
    slack.command("chat tiny-chat", user=USER)
    thread = standin.wait("chat.update", lambda c: _in(c, "Chatting with"))[0].args["ts"]
    message = {"type": "message", "channel": "C1", "user": USER, "text": "What color is the sky?", "ts": "3.1",
               "thread_ts": thread, "channel_type": "channel", "client_msg_id": "0f4c7f9e-5a77-4c1b-9a3e-1d2c3b4a5f6e"}
    slack.event(message, event_id="EvFIRST")
    slack.event(message, event_id="EvAGAIN")  # the same message under a new event id
    slack.event({**message, "ts": "3.2"}, event_id="EvTHIRD")  # the same client message id
    standin.wait("chat.update", _rated)
    time.sleep(2.0)  # a second answer would have begun by now
    assert len([c for c in standin.to("chat.postMessage") if _in(c, "Thinking")]) == 1
    assert len([c for c in standin.to("chat.update") if _rated(c)]) == 1
    session = runtime.chats.recent(f"slack:{USER}", 1)[0]
    assert [t["role"] for t in runtime.chats.history(session.id)] == ["user", "assistant"]
    with runtime.db.session() as db:
        assert len(db.scalars(select(Message).where(Message.role == "user")).all()) == 1
        assert len(db.scalars(select(AnalyticsEvent)).all()) == 1
    slack.event({**message, "ts": "3.3", "client_msg_id": "another", "text": "And grass?"}, event_id="EvNEW")
    assert standin.wait("chat.update", _rated, count=2)  # a new message is answered


@pytest.mark.parametrize("markdown, shown", [
    ("~~~python\nz = x**2 + y**3\n~~~", "~~~python\nz = x**2 + y**3\n~~~"),  # a tilde fence is code too
    ("````\n```\na**b**\n```\n````\n**bold** after", "````\n```\na**b**\n```\n````\n*bold* after"),  # ``` inside ````
    ("```py\nk(**kw) if a < b\n", "```py\nk(**kw) if a &lt; b\n"),  # a block never closed runs to the end
    ("- item\n    x = a**2 + b**3\n\n**yes**", "- item\n    x = a**2 + b**3\n\n*yes*"),  # indented under a list item
    ("\tq = r**2\n**s**", "\tq = r**2\n*s*"),
    ("`a**b**` and **c** and ``x `**y**` z``", "`a**b**` and *c* and ``x `**y**` z``"),  # spans of 1 and 2 backticks
    ("a ` lone\n\n**b** `x`", "a ` lone\n\n*b* `x`"),  # a lone backtick opens no span across a paragraph
    ("  ```\n**kwargs\n  ```\n**end**", "  ```\n**kwargs\n  ```\n*end*"),  # an indented fence line
    ("**a** <@U1> <!channel> & b > c", "*a* &lt;@U1&gt; &lt;!channel&gt; &amp; b &gt; c"),  # escaped everywhere
])
def test_mrkdwn_rewrites_bold_and_never_code(markdown: str, shown: str) -> None:
    assert mrkdwn(markdown) == shown


# -- arena: the battle card edited as both answers grow, vote buttons, names revealed to the voter only --------------

ARENA_ANSWER = "The sea at night is dark and calm, and the stars are bright above it."


def test_an_arena_battle_is_one_card_edited_as_both_answers_grow_and_a_vote_reveals_the_names_privately(
        slack: SignedRequests, standin: SlackStandIn, runtime: Runtime, tiny_model: Path) -> None:
    from tests.support.chat import installed
    from tests.support.openai_standin import Script, StandIn

    installed(runtime.registry, tiny_model, name="tiny-base")
    with StandIn() as model:  # tiny-base answers slowly from a served stand-in; tiny-chat in process
        served_by(runtime, "tiny-base", model.endpoint)
        model.script = Script.in_pieces(ARENA_ANSWER, 6, 0.35)  # 12 pieces over about four seconds
        slack.command("arena Say hello.", user=USER)
        voting = standin.wait("chat.update", lambda c: any("/arena vote" in b.get("value", "") for b in c.buttons()),
                              timeout=120)[0]
    battle = runtime.arena.get(int(voting.buttons()[0]["value"].split()[2]))
    side = "A" if battle.a.model == "tiny-base" else "B"
    card = [c for c in [*standin.to("chat.postMessage"), *standin.to("chat.update")]
            if c.args.get("ts", c.args.get("_ts")) == voting.args["ts"]]
    growing = [c for c in card if c.at < voting.at and _in(c, f"Model {side}", ARENA_ANSWER[:6], "▍")
               and ARENA_ANSWER not in c.text()]
    assert growing, [c.args.get("text") for c in card]  # the same message, edited while the answers were written
    assert len(standin.to("chat.postMessage")) == 1 and _in(voting, ARENA_ANSWER)  # one card, then both in full
    assert _in(voting, "Model A", "Model B") and "tiny-base" not in voting.text()  # anonymous until the vote
    values = [b["value"] for b in voting.buttons()]
    assert values == [f"/arena vote {battle.id} {code}" for code in ("a", "b", "tie", "bad")]

    slack.button(_button(voting, "A is better"), user=USER, message_ts=voting.args["ts"])
    revealed = standin.wait("response_url", lambda c: _in(c, "Thanks for your vote"))[0]
    assert revealed.args["response_type"] == "ephemeral" and _in(revealed, battle.a.label, battle.b.label)
    assert not any(_in(c, "Model A was") for c in standin.to("chat.postMessage") + standin.to("chat.update"))
    slack.button(_button(voting, "B is better"), user=USER, message_ts=voting.args["ts"])
    again = standin.wait("response_url", lambda c: _in(c, f"You already voted on battle #{battle.id}"))[0]
    assert again.args["response_type"] == "ephemeral" and "Traceback" not in again.text()
    assert runtime.arena.counts().votes == 1
