"""Fine-tuning from chat and REST (`/train`, `/api/training/jobs`): one real training of the tiny chat model per
surface, on the made-up secret-colour task of tests/support/training.py, with embedded workers as each front end
runs by default; what training learns is tested in test_training.py, here only what each surface shows of it.

The console runs as a process (`/datasets add`, `/train start` with its live loss lines, the result card with the
chart's path, `/chat` with the new model); Slack presses "Train on this", answers its form, watches the card move
and end with the results, the chart uploaded into the card's thread, and chats through "Try it"; Discord starts a
run, cancels it with the card's button and resumes it from the canceled card; REST posts the seed's body, follows
the event stream to the end and fetches the chart. Refusals (pre-flight, settings, roles) are one line everywhere.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from modelbay.adapters.api import create_app
from modelbay.adapters.slack import SlackAdapter
from modelbay.bot import Actor, Dispatcher, Reply
from modelbay.config import Settings
from modelbay.engine.training.progress import TrainingDetail
from modelbay.runtime import Runtime
from tests.conftest import ROOT, wait_for
from tests.support.asgi import serve
from tests.support.asgi import sse_events as _events
from tests.support.chat import front_end_runtime, installed
from tests.support.commands import COMMANDS_HERE
from tests.support.discord import BOT_TOKEN as DISCORD_TOKEN
from tests.support.discord import Call as DiscordCall
from tests.support.discord import Bot as DiscordBot
from tests.support.discord import DiscordStandIn, member
from tests.support.discord import option as _opt
from tests.support.hub import HubStandIn
from tests.support.slack import BOT_TOKEN, SIGNING_SECRET, Call, SignedRequests, SlackStandIn
from tests.support.training import dataset_bytes, held_out_rows, training_rows, write_dataset

# Few steps at a high rate: the held-out loss falls within a dozen steps (test_training.py measures how far).
TASK = "steps:12 lr:2e-3 batch:8 max_length:256 settings:lora.dropout=0,evaluation.max_new_tokens=12"
TIMEOUT = 300  # seconds for a run: loading, training, evaluating and answering on a loaded two-core machine
PNG = b"\x89PNG\r\n\x1a\n"
USER = "UUSER"  # a Slack user with the trainer role
DISCORD_USER = "500000000000000002"


def _held_out(text: str) -> tuple[float, float]:
    before, after = re.search(r"Held-out loss ([\d.]+) → ([\d.]+)", text).groups()  # type: ignore[union-attr]
    return float(before), float(after)


# -- console --------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_console_adds_a_dataset_trains_on_it_live_and_chats_with_the_new_model(settings: Settings,
                                                                                  tiny_chat_model: Path,
                                                                                  tmp_path: Path) -> None:
    runtime = Runtime(settings)  # what an earlier `/models install` left: the tiny chat model in the registry
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    runtime.close()
    write_dataset(tmp_path / "pairs.jsonl", training_rows())
    script = [
        "/datasets add ./pairs.jsonl",
        f"/train start tiny-chat pairs {TASK} name:tiny-colors",
        "/chat tiny-colors",
        "What is the secret color of the fish?",
        "/train list",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(MODELBAY_HOME=str(settings.home), PYTHONPATH=str(ROOT), COLUMNS="160", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "modelbay", "console"], input="\n".join(script) + "\n",
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Dataset #1 · pairs" in out and "Fine-tuning tiny-chat → tiny-colors" in out

    # Live: one line a quarter of the way, each with the step and its loss.
    live = re.findall(r"^train tiny-colors: started \d+% step (\d+)/12 · loss ([\d.]+)", out, re.M)
    assert live, out
    job = re.search(r"^train tiny-colors (\w+): finished$", out, re.M).group(1)  # type: ignore[union-attr]

    # The result card: lower held-out loss, the answers side by side, the chart saved where it says, Try it.
    before, after = _held_out(out)
    assert after < before
    assert "Fine-tuned tiny-colors" in out and "Prompt" in out and "Tuned" in out and "/chat tiny-colors" in out
    chart = settings.home / "files" / f"train-{job}-loss.png"
    assert chart.read_bytes().startswith(PNG) and f"attachment: {chart}" in out.replace("\n", "")

    # Try it: the chat answers with the new model's version (a LoRA over its base, in this process).
    assert re.search(r"^#\d+ · transformers · \d+ tokens", out, re.M), out
    runtime = Runtime(settings)
    try:
        tuned = runtime.registry.get("tiny-colors").versions[0]
        assert tuned.lineage == "finetune" and tuned.lineage_params["metrics"]["eval_loss_after"] < before
        session = runtime.chats.recent(f"console:{getpass.getuser()}", 1)[0]
        assert session.model_version_id == tuned.id
    finally:
        runtime.close()
    assert re.search(rf"{job} │ tiny-colors │ tiny-chat │ pairs +│ finished │ 12/12", out)  # /train list


# -- refusals -------------------------------------------------------------------------------------------------------

ANN, BOB = Actor("console", "ann"), Actor("console", "bob")


@pytest.fixture
def bot(settings: Settings, tiny_chat_model: Path) -> Iterator:
    """Run lines as people: Ann is a trainer, Bob a user (no workers: nothing here reaches one)."""
    settings.roles = {"trainer": [ANN.key], "admin": ["console:root"]}
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    runtime.datasets.add(ANN.key, "colors.jsonl", [dataset_bytes(training_rows())], source="console")
    runtime.datasets.add(ANN.key, "three.jsonl", [dataset_bytes(training_rows()[:3])], source="console")
    runtime.datasets.add(BOB.key, "bobs.jsonl", [dataset_bytes(held_out_rows())], source="console")
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str, actor: Actor = ANN) -> Reply:
        return asyncio.run(dispatcher.dispatch_line(line, actor))

    run.runtime = runtime  # type: ignore[attr-defined]
    yield run
    runtime.close()


def test_refusals_are_one_line_and_nothing_is_queued(bot) -> None:  # noqa: ANN001
    def refused(line: str, actor: Actor = ANN) -> str:
        reply = bot(line, actor)
        assert reply.tone in ("warning", "error") and "\n" not in reply.text and len(reply.text) < 400, reply.text
        return reply.text

    assert "needs the trainer role" in refused("/train start tiny-chat bobs", BOB)
    assert "needs the trainer role" in refused("/train resume abc", BOB)
    assert "/models" in refused("/train start no-such-model colors")
    assert "fewer than the 8" in refused("/train start tiny-chat three")
    assert "No dataset `bobs`" in refused("/train start tiny-chat bobs")  # another person's dataset
    assert "chat-lora" in refused("/train start tiny-chat colors no-such-template")
    assert "no such setting" in refused("/train start tiny-chat colors settings:nope=1")
    assert "`settings` must be key=value pairs" in refused("/train start tiny-chat colors settings:oops")
    assert "`parameters.lora.dropout`" in refused("/train start tiny-chat colors settings:lora.dropout=2")
    assert "`epochs`" in refused("/train start tiny-chat colors epochs:0")
    assert "No job `nope`" in refused("/train status nope")
    assert bot.runtime.jobs.list() == []

    templates = bot("/train templates")
    assert [row[0] for row in templates.table.rows] == ["chat-lora", "instruction-lora", "code-completion",
                                                         "qlora-4bit", "continued-pretraining"]
    assert "No training jobs yet" in bot("/train list").text


@pytest.mark.slow  # each start waits for the (absent) gpu workers' hardware before measuring this machine
def test_a_name_another_run_makes_a_dataset_a_queued_run_reads_and_another_kind_of_job_are_refused(
        bot) -> None:  # noqa: ANN001
    from modelbay.engine.jobs.kinds import PROBE

    def refused(line: str) -> str:
        reply = bot(line)
        assert reply.tone in ("warning", "error") and "\n" not in reply.text, reply.text
        return reply.text

    bot.runtime.datasets.add(ANN.key, "more.jsonl", [dataset_bytes(training_rows()[::-1])], source="console")
    first = bot("/train start tiny-chat colors steps:3 name:tiny-same")
    job = bot.runtime.training.list()[0].id
    assert "tiny-same" in first.title and "already queued" not in first.text
    # The very same request again is that run; another dataset (or other settings) under that name is refused: it
    # answered with the first run's card, so the second dataset was never trained on.
    assert "already queued or running: this is it" in bot("/train start tiny-chat colors steps:3 name:tiny-same").text
    busy = refused("/train start tiny-chat more steps:3 name:tiny-same")
    assert f"Training job `{job}` is already making a model named `tiny-same`" in busy and "name:" in busy
    assert len(bot.runtime.training.list()) == 1

    # The queued run reads its dataset when it starts: deleting it now would fail the run.
    in_use = refused("/datasets delete colors")
    assert f"used by training job `{job}`" in in_use and f"/jobs cancel {job}" in in_use
    assert "Deleted dataset" in bot("/datasets delete more").text  # no run reads that one

    # A queued run cannot be resumed; the refusal says it is queued, not 'started'.
    queued = bot(f"/train resume {job}").text
    assert f"is queued; only a canceled or failed one resumes. `/train status {job}`" in queued

    # /train status and resume of another kind of job say what it is and where to follow it (not 'Cannot resume').
    probe = bot.runtime.jobs.submit(PROBE.name, {}, requester=ANN.key).job.id
    for line in (f"/train status {probe}", f"/train resume {probe}"):
        reply = bot(line)
        assert reply.title == "Not a training job" and f"/jobs watch {probe}" in reply.text, reply.text

    bot(f"/jobs cancel {job}")
    assert "Deleted dataset" in bot("/datasets delete colors").text


# -- Slack ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def slack_runtime(settings: Settings, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path,
                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Runtime, SlackStandIn]]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with SlackStandIn() as standin:
        runtime = front_end_runtime(settings, hub, tiny_model, tiny_chat_model, slack_api_url=standin.api_url,
                                    slack_bot_token=SecretStr(BOT_TOKEN),
                                    slack_signing_secret=SecretStr(SIGNING_SECRET),
                                    roles={"trainer": [f"slack:{USER}"]})
        try:
            yield runtime, standin
        finally:
            runtime.close()


def _in(call: Call | DiscordCall, *words: str) -> bool:
    return all(w in call.text() for w in words)


def _slack_button(call: Call, label: str) -> dict:
    return next(b for b in call.buttons() if b["text"]["text"] == label)


@pytest.mark.slow
def test_slack_train_on_this_asks_for_the_model_then_the_card_moves_ends_with_results_and_try_it_chats(
        slack_runtime: tuple[Runtime, SlackStandIn]) -> None:
    runtime, standin = slack_runtime
    runtime.datasets.add(f"slack:{USER}", "colors.jsonl", [dataset_bytes(training_rows())], source="slack")
    adapter = SlackAdapter(runtime, dispatcher=Dispatcher(runtime, COMMANDS_HERE))
    with serve(create_app(runtime, slack=adapter)) as url:
        slack = SignedRequests(f"{url}/slack/events", standin)
        try:
            slack.command("datasets info colors", user=USER)
            card = standin.wait("chat.update", lambda c: _in(c, "Dataset #1 · colors", "Train on this"))[0]
            slack.button(_slack_button(card, "Train on this"), user=USER, message_ts=card.args["ts"])
            form = standin.wait("views.open")[0].args["view"]
            assert _in(standin.to("views.open")[0], "Which installed model")
            slack.submit(form, {"model": {"model": {"type": "plain_text_input", "value": "tiny-chat"}}}, user=USER)

            # The card moves in place (at most an edit a second: which reports it shows depends on the pace, so
            # tests/unit/bot/commands/test_train.py checks what a step looks like), then the results replace it.
            final = standin.wait("chat.update", lambda c: _in(c, "Fine-tuned"), timeout=TIMEOUT)[0]
            moving = [c for c in standin.to("chat.update") if c.args["ts"] == final.args["ts"] and c.status == 200
                      and _in(c, "Fine-tuning tiny-chat", "train tiny-chat-ft-")]
            assert moving and final.args["channel"] == "C1"
            assert _in(final, "Held-out loss", "Perplexity", "Validation prompts", "Prompt", "Tuned")
            name = _slack_button(final, "Try it")["value"].removeprefix("/chat ")
            assert runtime.registry.get(name).versions[0].lineage == "finetune"

            # The chart, as an image in the card's thread (the thread the card itself is in, if any).
            posted = next(c for c in standin.to("chat.postMessage") if c.args["_ts"] == final.args["ts"])
            thread = posted.args.get("thread_ts") or final.args["ts"]
            complete = standin.wait("files.completeUploadExternal", lambda c: "loss.png" in json.dumps(c.args))[0]
            assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == thread
            assert sum(data.startswith(PNG) for data in standin.uploads.values()) == 2  # the lengths, the loss

            # Try it opens a chat with the new model, which answers in its thread.
            slack.button(_slack_button(final, "Try it"), user=USER, message_ts=final.args["ts"])
            opened = standin.wait("chat.postMessage", lambda c: _in(c, "Chatting with", name))[0]
            slack.event({"type": "message", "channel": "C1", "user": USER, "ts": "9.5", "channel_type": "channel",
                         "text": "What is the secret color of the fish?",
                         "thread_ts": opened.args.get("thread_ts") or opened.args["_ts"]})
            standin.wait("chat.stopStream", timeout=60)
            session = runtime.chats.recent(f"slack:{USER}", 1)[0]
            assert session.model_name == name and runtime.chats.history(session.id)[-1]["role"] == "assistant"
        finally:
            slack.close()


# -- Discord --------------------------------------------------------------------------------------------------------

def _component(call: DiscordCall, label: str) -> dict:
    return next(c for c in call.components() if c.get("label") == label)


@pytest.mark.slow
def test_discord_starts_a_run_cancels_it_with_its_button_and_resumes_it_from_the_canceled_card(
        settings: Settings, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with DiscordStandIn() as standin:
        runtime = front_end_runtime(settings, hub, tiny_model, tiny_chat_model, discord_api_url=standin.api_url,
                                    discord_gateway_url=standin.gateway_url, discord_token=SecretStr(DISCORD_TOKEN),
                                    roles={"trainer": [f"discord:{DISCORD_USER}"]})
        runtime.datasets.add(f"discord:{DISCORD_USER}", "colors.jsonl", [dataset_bytes(training_rows())],
                             source="discord")
        bot = DiscordBot(runtime, standin)
        try:
            # Enough small steps that the cancel lands mid-training, wherever this runs.
            token = standin.command("train", [{"name": "start", "type": 1, "options": [
                _opt("model", "tiny-chat"), _opt("dataset", "colors"), _opt("steps", 80, 4), _opt("batch", 2, 4),
                _opt("lr", 0.002, 10), _opt("max_length", 256, 4), _opt("name", "tiny-colors"),
                _opt("settings", "evaluation.max_new_tokens=12")]}], member=member(DISCORD_USER))
            assert standin.wait("POST", "/callback", lambda c: token in c.path)[0].body["type"] == 5  # deferred
            card = standin.wait("PATCH", "/messages/@original", lambda c: token in c.path and "Cancel" in c.text()
                                and "Fine-tuning tiny-chat" in c.text())[0]
            [job] = runtime.training.list()
            wait_for(lambda: (TrainingDetail.of(runtime.jobs.get(job.id).progress_detail).step or 0) >= 2,
                     timeout=TIMEOUT, interval=0.05)
            standin.press(_component(card, "Cancel"), standin.original(token)["id"], member=member(DISCORD_USER))
            canceled = standin.wait("PATCH", "/messages/@original", lambda c: token in c.path and
                                    "canceled" in c.text() and "Resume" in c.text(), timeout=60)[0]
            stopped = int(re.search(r"Stopped at step (\d+)/80", canceled.text()).group(1))  # type: ignore[union-attr]
            assert runtime.jobs.get(job.id).status == "canceled" and 2 <= stopped < 80
            assert f"/train resume {job.id}" in canceled.text()

            press = standin.press(_component(canceled, "Resume"), standin.original(token)["id"],
                                  member=member(DISCORD_USER))
            assert standin.wait("POST", "/callback", lambda c: press in c.path)[0].body["type"] == 5
            final = standin.wait("PATCH", "/messages/@original", lambda c: press in c.path and
                                 "Fine-tuned tiny-colors" in c.text(), timeout=TIMEOUT)[0]
            assert f"resumed at {stopped}" in final.text() and "Held-out loss" in final.text()
            assert _component(final, "Try it")["custom_id"] == "mb:run:/chat tiny-colors"
            chart = standin.wait("POST", "/webhooks/", lambda c: press in c.path and bool(c.body.get("_files")))[0]
            assert chart.body["_files"][0].endswith("-loss.png")
            resumed = runtime.training.list()[0]
            assert resumed.result["step"] == 80 and resumed.params["run"] == job.id
        finally:
            bot.stop()
            runtime.close()
        refused = [(c.method, c.path, c.text()[:300]) for c in standin.calls if c.status == 400]
        assert not refused, f"Discord would have refused these messages: {refused}"


# -- REST -----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_rest_starts_a_run_from_the_seed_body_streams_it_to_the_end_and_serves_its_chart(
        settings: Settings, tiny_chat_model: Path) -> None:
    settings.api_token = SecretStr("t0k3n")
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    installed(runtime.registry, tiny_chat_model)
    runtime.datasets.add("api:token", "colors.jsonl", [dataset_bytes(training_rows())], source="api")
    body = {"baseModelId": "tiny-chat", "datasetId": "colors", "name": "tiny-rest",
            "parameters": {"maxSteps": 12, "learningRate": 0.002, "batchSize": 8, "maxLength": 256,
                           "lora": {"dropout": 0}},
            "evaluation": {"maxNewTokens": 12}}
    try:
        with serve(create_app(runtime)) as url, httpx.Client(base_url=url, timeout=TIMEOUT,
                                                             headers={"Authorization": "Bearer t0k3n"}) as api:
            started = api.post("/api/training/jobs", json=body)
            assert started.status_code == 201, started.text
            job = started.json()
            assert job["status"] in ("queued", "started") and job["created"]
            assert (job["name"], job["base"], job["dataset"], job["total_steps"]) == ("tiny-rest", "tiny-chat",
                                                                                     "colors", 12)
            assert job["config"]["parameters"]["learningRate"] == 0.002 and job["config"]["template"] == "chat-lora"

            sse = {"Accept": "text/event-stream"}
            with api.stream("GET", f"/api/training/jobs/{job['id']}", headers=sse) as s:
                assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
                assert next(_events(s))[0] == "progress"  # then the client leaves: the job goes on
            with api.stream("GET", f"/api/training/jobs/{job['id']}", headers=sse) as s:
                events = list(_events(s))
            steps = [data for name, data in events if name == "progress" and data["loss"] is not None]
            assert len(steps) >= 2 and steps[-1]["step"] == steps[-1]["total_steps"] == 12
            assert steps[-1]["recent_losses"] and steps[-1]["eval_loss_before"] is not None
            name, done = events[-1]
            assert name == "complete" and done["status"] == "finished", events[-1]
            result = done["result"]
            assert result["model"] == "tiny-rest" and result["eval_loss_after"] < result["eval_loss_before"]
            assert len(result["answers"]) == 3 and {"prompt", "base", "tuned", "reference"} <= set(result["answers"][0])

            chart = api.get(done["chart_url"])
            assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
            assert chart.content.startswith(PNG)
            shown = api.get(f"/api/training/jobs/{job['id']}")
            assert shown.json()["status"] == "finished" and str(settings.home) not in shown.text  # no server paths
            assert [j["id"] for j in api.get("/api/training/jobs").json()["jobs"]] == [job["id"]]

            # Refusals before anything is queued are JSON errors of one line.
            again = api.post(f"/api/training/jobs/{job['id']}/resume")
            assert again.status_code == 409 and again.json()["type"] == "NotResumable"
            bad = api.post("/api/training/jobs", json={**body, "parameters": {"epochs": -1}})
            assert bad.status_code == 422 and "`parameters.epochs`" in bad.json()["error"]
            missing = api.post("/api/training/jobs", json={**body, "baseModelId": "no-such-model"})
            assert missing.status_code == 404 and "\n" not in missing.json()["error"]
            assert api.get("/api/training/jobs/nope/chart.png").status_code == 404
            runtime.settings.roles = {"user": ["api:*"]}
            denied = api.post("/api/training/jobs", json=body)
            assert denied.status_code == 403 and "trainer" in denied.json()["error"]
            assert len(runtime.training.list()) == 1
    finally:
        runtime.close()
