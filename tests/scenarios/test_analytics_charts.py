"""`/analytics compare` and `/analytics dashboard` from the console, REST, Slack (thread uploads and the Home tab's
image) and Discord (attachments): real PNG charts with their text alternatives, figures from the rollups."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from rich.console import Console as RichConsole

from modelbay.adapters.api import create_app
from modelbay.adapters.console import ConsoleApp
from modelbay.adapters.slack import SlackAdapter
from modelbay.bot import Actor, Dispatcher, Reply
from modelbay.config import Settings
from modelbay.engine.analytics.analytics import AnswerEvent
from modelbay.engine.db.schema.experiments import ArenaBattle, ArenaVote
from modelbay.runtime import Runtime
from tests.support.asgi import serve
from tests.support.chat import front_end_runtime, installed
from tests.support.commands import COMMANDS_HERE
from tests.support.discord import BOT_TOKEN as DISCORD_TOKEN
from tests.support.discord import Bot, DiscordStandIn, member
from tests.support.discord import option as _opt
from tests.support.hub import HubStandIn
from tests.support.slack import BOT_TOKEN, SIGNING_SECRET, SignedRequests, SlackStandIn

PNG = b"\x89PNG\r\n\x1a\n"
TOKEN = "test-api-token"
ME = Actor("console", "me", "Me")


def _answers(runtime: Runtime, models: dict[str, float]) -> dict[str, tuple[int, int, int]]:
    """Seeded answers over the last 30 hours for each model (its 👍 chance given), some rated; (answers in the last
    24 hours, ups, downs) per model."""
    rng = random.Random(5)
    now = datetime.now(timezone.utc)
    counts: dict[str, tuple[int, int, int]] = {}
    for name, liked in models.items():
        version = runtime.registry.get(name).versions[0].id
        events = [AnswerEvent(version, f"t:U{i % 7}", None, None, "transformers", 12, rng.randrange(5, 40),
                              rng.uniform(5, 60), rng.lognormvariate(6, 0.5),
                              at=now - timedelta(hours=rng.uniform(0, 30))) for i in range(120)]
        runtime.analytics.record_answers(events)
        ups = downs = 0
        hour = (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
        with runtime.db.session() as session:
            for e in events[:60]:
                up = rng.random() < liked
                runtime.analytics.add_rating(session, version, e.at, int(up), int(not up))
                if e.at >= hour:
                    ups, downs = ups + up, downs + (not up)
        counts[name] = (sum(e.at >= hour for e in events), ups, downs)
    return counts


@pytest.fixture
def runtime(settings: Settings, tmp_path: Path) -> Iterator[Runtime]:
    """Two installed models with a day of answers and ratings; the API token set."""
    settings.api_token = SecretStr(TOKEN)
    runtime = Runtime(settings)
    runtime.prepare()
    for name in ("tiny-chat", "tiny-two"):
        installed(runtime.registry, tmp_path, name)
    yield runtime
    runtime.close()


def _run(runtime: Runtime, line: str) -> Reply:
    return asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line(line, ME))


def test_compare_lays_models_side_by_side_with_charts_and_their_text(runtime: Runtime) -> None:
    counts = _answers(runtime, {"tiny-chat": 0.9, "tiny-two": 0.3})
    reply = _run(runtime, "/analytics compare tiny-chat tiny-two 24h")
    assert reply.table is not None and reply.table.columns == ["", "tiny-chat", "tiny-two"]
    rows = {row[0]: row[1:] for row in reply.table.rows}
    assert set(rows) >= {"Requests", "Response p50", "Response p95", "First token (mean)", "Tokens/s",
                         "👍 share (95% CI)", "Arena strength (95% CI)"}
    for i, name in enumerate(("tiny-chat", "tiny-two")):
        answers, ups, downs = counts[name]
        assert rows["Requests"][i] == f"{answers:,}"
        assert rows["👍 share (95% CI)"][i].startswith(f"{ups / (ups + downs):.0%} of {ups + downs} (")
    assert [a.filename for a in reply.attachments] == ["compare-response-time.png", "compare-satisfaction.png"]
    assert all(a.content_type == "image/png" and a.data.startswith(PNG) for a in reply.attachments)
    # The text alternative of each chart is in the same reply.
    assert "Response time, as text:" in reply.text and "Satisfaction, as text:" in reply.text
    assert "tiny-chat: " in reply.text and " answers over " in reply.text and "👍 of " in reply.text


def test_compare_shows_each_models_arena_strength_with_its_interval(runtime: Runtime) -> None:
    _answers(runtime, {"tiny-chat": 0.7, "tiny-two": 0.6})
    a, b = (runtime.registry.get(n).versions[0].id for n in ("tiny-chat", "tiny-two"))
    with runtime.db.session() as session:  # 30 votes: tiny-chat wins 22, loses 6, ties 2
        for i, outcome in enumerate(["a"] * 22 + ["b"] * 6 + ["tie"] * 2):
            battle = ArenaBattle(category="chat", user_key=f"t:U{i}", model_a_version_id=a, model_b_version_id=b,
                                 status="ready")
            session.add(battle)
            session.flush()
            session.add(ArenaVote(battle_id=battle.id, user_key=f"t:U{i}", outcome=outcome))
    board = {s.version_id: s for s in runtime.arena.leaderboard().standings}
    reply = _run(runtime, "/analytics compare tiny-chat tiny-two 24h")
    strengths = next(row[1:] for row in reply.table.rows if row[0] == "Arena strength (95% CI)")
    for cell, version in zip(strengths, (a, b), strict=True):
        s = board[version]
        assert cell == s.interval == f"{s.strength:,.0f} (−{s.strength - s.low:.0f}/+{s.high - s.strength:.0f})"
    assert board[a].strength > board[b].strength


def test_compare_refuses_an_unknown_model_in_one_line_and_says_when_nothing_was_answered(runtime: Runtime) -> None:
    missing = _run(runtime, "/analytics compare tiny-chat no-such-model")
    assert missing.tone == "warning" and "no-such-model" in missing.text and "\n" not in missing.text
    quiet = _run(runtime, "/analytics compare tiny-chat tiny-two 1h")
    assert "No answers recorded" in quiet.text and not quiet.attachments


def test_compare_names_the_periods_for_a_word_that_only_looks_like_one(runtime: Runtime) -> None:
    for line in ("/analytics compare tiny-chat tiny-two 1y", "/analytics compare tiny-chat 12mo",
                 "/analytics compare tiny-chat tiny-two alltime"):
        refused = _run(runtime, line)
        assert refused.tone == "warning" and "\n" not in refused.text, line
        assert "`period` must be one of 1h, 24h, 7d, 30d, 90d, all" in refused.text and "No model" not in refused.text
    alone = _run(runtime, "/analytics compare 7d")
    assert "needs at least one model name before the period" in alone.text and "No model" not in alone.text
    installed(runtime.registry, runtime.settings.home, "4o")  # a model whose name looks like a period is a model
    assert _run(runtime, "/analytics compare tiny-chat 4o").title.startswith("Tiny")


def test_one_answer_gives_charts_of_one_bucket_with_its_words_in_the_singular(runtime: Runtime) -> None:
    version = runtime.registry.get("tiny-chat").versions[0].id
    runtime.analytics.record_answers([AnswerEvent(version, "t:U1", None, None, "transformers", 12, 20, 30.0, 640.0,
                                                  at=datetime.now(timezone.utc))])
    with runtime.db.session() as session:
        runtime.analytics.add_rating(session, version, datetime.now(timezone.utc), 1, 0)
    reply = _run(runtime, "/analytics compare tiny-chat tiny-two 24h")
    assert [a.filename for a in reply.attachments] == ["compare-response-time.png", "compare-satisfaction.png"]
    assert "tiny-chat: 1 answer over 1 hour; p95 highest" in reply.text and "1 rating over 1 hour" in reply.text
    dashboard = _run(runtime, "/analytics dashboard")
    assert "tiny-chat: 1 answer · p50" in dashboard.text and dashboard.attachments[0].data.startswith(PNG)


def test_the_dashboard_is_one_card_with_a_chart_and_its_text(runtime: Runtime) -> None:
    counts = _answers(runtime, {"tiny-chat": 0.8})
    reply = _run(runtime, "/analytics dashboard")
    assert reply.table is not None and [row[0] for row in reply.table.rows] == ["tiny-chat", "tiny-two"]
    assert reply.table.rows[0][1] == f"{counts['tiny-chat'][0]:,}" and reply.table.rows[1][1] == "0"
    assert [a.filename for a in reply.attachments] == ["dashboard.png"] and reply.attachments[0].data.startswith(PNG)
    assert "Chart, as text:" in reply.text and "tiny-two: no answers" in reply.text


def test_the_console_saves_the_charts_as_files(runtime: Runtime, settings: Settings) -> None:
    _answers(runtime, {"tiny-chat": 0.8, "tiny-two": 0.5})
    buffer = io.StringIO()
    out = RichConsole(file=buffer, force_terminal=False, width=160, color_system=None)
    app = ConsoleApp(Dispatcher(runtime, reraise_unknown=True),
                     stdin=io.StringIO("/analytics compare tiny-chat tiny-two 24h\n/analytics dashboard\n"), out=out)
    assert app.run() == 0
    files = settings.home / "files"
    for name in ("compare-response-time.png", "compare-satisfaction.png", "dashboard.png"):
        assert (files / name).read_bytes().startswith(PNG)
        assert str(files / name) in buffer.getvalue().replace("\n", "")
    assert "Response time, as text:" in buffer.getvalue()


def test_rest_compares_and_serves_charts_as_png_with_their_text(runtime: Runtime) -> None:
    counts = _answers(runtime, {"tiny-chat": 0.9, "tiny-two": 0.4})
    with serve(create_app(runtime)) as url, httpx.Client(base_url=url, timeout=60,
                                                        headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        compared = client.get("/api/analytics/compare", params={"models": "tiny-chat,tiny-two", "period": "24h"})
        assert compared.status_code == 200, compared.text
        body = compared.json()
        assert [m["model"] for m in body["models"]] == ["tiny-chat", "tiny-two"] and body["period"] == "24h"
        first = body["models"][0]
        assert first["requests"] == counts["tiny-chat"][0] and first["ups"] == counts["tiny-chat"][1]
        assert first["satisfaction_low"] < first["satisfaction"] < first["satisfaction_high"]
        for chart in ("response-time", "satisfaction"):
            image = client.get(f"/api/analytics/charts/{chart}.png", params=[("models", "tiny-chat"),
                                                                               ("models", "tiny-two")])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
            assert image.content.startswith(PNG)
            text = client.get(f"/api/analytics/charts/{chart}.txt", params={"models": "tiny-chat,tiny-two"})
            assert text.headers["content-type"].startswith("text/plain") and "tiny-two: " in text.text
        board = client.get("/api/analytics/charts/dashboard.png")
        assert board.headers["content-type"] == "image/png" and board.content.startswith(PNG)
        assert client.get("/api/analytics/charts/pie.png").status_code == 404
        unnamed = client.get("/api/analytics/charts/satisfaction.png")
        assert unnamed.status_code == 422 and "models=" in unnamed.json()["error"]
        assert client.get("/api/analytics/compare", params={"models": "nope"}).status_code == 404


# -- Slack and Discord --------------------------------------------------------------------------------------------

@pytest.fixture
def slack_standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


@pytest.fixture
def slack_runtime(settings: Settings, slack_standin: SlackStandIn, hub: HubStandIn, tiny_model: Path,
                  tiny_chat_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runtime = front_end_runtime(settings, hub, tiny_model, tiny_chat_model, slack_api_url=slack_standin.api_url,
                                slack_bot_token=SecretStr(BOT_TOKEN), slack_signing_secret=SecretStr(SIGNING_SECRET))
    yield runtime
    runtime.close()


@pytest.fixture
def slack(slack_runtime: Runtime, slack_standin: SlackStandIn) -> Iterator[SignedRequests]:
    adapter = SlackAdapter(slack_runtime, dispatcher=Dispatcher(slack_runtime, COMMANDS_HERE))
    with serve(create_app(slack_runtime, slack=adapter)) as url:
        requests = SignedRequests(f"{url}/slack/events", slack_standin)
        yield requests
        requests.close()


def test_slack_gets_the_dashboard_chart_as_an_upload_in_the_thread(slack: SignedRequests,
                                                                   slack_standin: SlackStandIn,
                                                                   slack_runtime: Runtime) -> None:
    _answers(slack_runtime, {"tiny-chat": 0.8})
    slack.command("analytics dashboard")
    posted = slack_standin.wait("chat.update", lambda c: "ModelBay dashboard" in c.text())[0]
    assert "Chart, as text:" in posted.text()
    complete = slack_standin.wait("files.completeUploadExternal")[0]
    hosted = next(iter(slack_standin.hosted.values()))
    assert hosted["name"] == "dashboard.png" and hosted["mimetype"] == "image/png" and hosted["data"].startswith(PNG)
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == posted.args["ts"]


def test_the_home_tab_shows_the_last_day_and_the_chart_as_an_uploaded_slack_file(
        slack: SignedRequests, slack_standin: SlackStandIn, slack_runtime: Runtime) -> None:
    counts = _answers(slack_runtime, {"tiny-chat": 0.8})
    slack_standin.processing_checks = 2  # Slack processes the upload for a while: files.info says when it is done
    slack.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"})
    published = slack_standin.wait("views.publish")[0]
    blocks = published.args["view"]["blocks"]
    image = next(b for b in blocks if b["type"] == "image")
    hosted = slack_standin.hosted[image["slack_file"]["id"]]
    assert hosted["mimetype"] == "image/png" and hosted["data"].startswith(PNG) and not hosted["channels"]
    assert "tiny-chat: " in image["alt_text"] and len(image["alt_text"]) <= 2000
    assert len(slack_standin.to("files.info")) == 3  # two while processing, then done
    assert "Last 24 hours" in published.text() and f"{counts['tiny-chat'][0]:,} answers" in published.text()
    # Opened again with the same figures: the chart already uploaded is shown again, not uploaded twice.
    slack.event({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"})
    again = slack_standin.wait("views.publish", count=2)[1]
    assert next(b for b in again.args["view"]["blocks"] if b["type"] == "image") == image
    assert len(slack_standin.to("files.completeUploadExternal")) == 1


def test_an_image_block_naming_a_file_slack_has_not_processed_is_refused(slack_standin: SlackStandIn) -> None:
    view = {"type": "home", "blocks": [{"type": "image", "slack_file": {"id": "F0000000099"}, "alt_text": "chart"}]}
    refused = httpx.post(f"{slack_standin.api_url}views.publish", json={"user_id": "U1", "view": view},
                         headers={"Authorization": f"Bearer {BOT_TOKEN}"}).json()
    assert refused == {"ok": False, "error": "invalid_blocks"}


@pytest.fixture
def discord_standin() -> Iterator[DiscordStandIn]:
    with DiscordStandIn() as server:
        yield server


@pytest.fixture
def discord_runtime(settings: Settings, discord_standin: DiscordStandIn, hub: HubStandIn, tiny_model: Path,
                    tiny_chat_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    runtime = front_end_runtime(settings, hub, tiny_model, tiny_chat_model, discord_api_url=discord_standin.api_url,
                                discord_gateway_url=discord_standin.gateway_url,
                                discord_token=SecretStr(DISCORD_TOKEN))
    yield runtime
    runtime.close()


def test_discord_gets_the_compare_charts_as_attachments(discord_runtime: Runtime,
                                                        discord_standin: DiscordStandIn) -> None:
    installed(discord_runtime.registry, discord_runtime.settings.home, "tiny-two")
    _answers(discord_runtime, {"tiny-chat": 0.8, "tiny-two": 0.5})
    bot = Bot(discord_runtime, discord_standin)
    try:
        token = discord_standin.command("analytics", [{"name": "compare", "type": 1, "options": [
            _opt("models", "tiny-chat tiny-two 24h")]}], member=member("500000000000000002"))
        discord_standin.wait("PATCH", "/messages/@original", lambda c: token in c.path and "Tiny Chat" in c.text())
        sent = discord_standin.wait("POST", "/webhooks/", lambda c: token in c.path and bool(c.body.get("_files")))[0]
        assert sent.body["_files"] == ["compare-response-time.png", "compare-satisfaction.png"]
        assert [a.filename for a in discord_standin.attachments] == sent.body["_files"]
        # discord.py sends files as application/octet-stream; Discord shows them as images by their name and bytes.
        assert all(a.data.startswith(PNG) for a in discord_standin.attachments)
    finally:
        bot.stop()
