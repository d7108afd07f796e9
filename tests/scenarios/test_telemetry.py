"""Prometheus metrics, the events export and trackEvent through the real API, on both databases and the machine's
Redis: a chat answer shows in /metrics, queued jobs and queue depth are read at scrape time, an embedded job run is
timed, the export streams CSV and JSON Lines to admins, and a tracked answer shows in /analytics model."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from modelbay.adapters.api import create_app
from modelbay.bot import Actor, Dispatcher
from modelbay.config import Settings, load_settings
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.jobs import JobStatus
from modelbay.engine.errors import ModelNotFound
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, wait_for
from tests.support.asgi import serve
from tests.support.chat import installed

TOKEN = "test-token"
HERE = Place("slack", "C1", "T1")
ALICE = "slack:UALICE"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def runtime(database: Database, redis, tmp_path: Path, tiny_chat_model: Path) -> Iterator[Runtime]:  # noqa: ANN001
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             environment="test", chat_temperature=0.0, chat_max_tokens=16)
    settings.api_token = SecretStr(TOKEN)
    settings.roles = {"admin": ["api:*"]}
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[httpx.Client]:
    with serve(create_app(runtime)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            yield client


def test_an_answer_and_queued_jobs_show_in_metrics(runtime: Runtime, client: httpx.Client) -> None:
    chat = runtime.chats.open(HERE, ALICE, "tiny-chat")
    answer = list(runtime.chats.answer(chat, ALICE, "Hello there"))[-1].answer
    # No worker runs (Redis is configured): these wait in the cpu queue, and the scrape counts them there.
    for n in (1, 2):
        runtime.jobs.submit("test.count", {"n": n}, requester=ALICE)

    scraped = httpx.get(f"{client.base_url}/metrics")  # no token needed unless MODELBAY_METRICS_TOKEN is set
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = _samples(scraped.text)
    tiny = (("model", "tiny-chat"),)
    assert samples[("modelbay_answers_total", (("model", "tiny-chat"), ("status", answer.status)))] == 1
    assert samples[("modelbay_response_seconds_count", tiny)] == 1
    assert samples[("modelbay_response_seconds_sum", tiny)] == pytest.approx(answer.total_ms / 1000)
    assert samples[("modelbay_tokens_total", (("direction", "output"), ("model", "tiny-chat")))] == answer.output_tokens
    assert samples[("modelbay_time_to_first_token_seconds_count", tiny)] == 1
    assert samples[("modelbay_jobs", (("kind", "test.count"), ("state", "queued")))] == 2
    assert samples[("modelbay_queue_depth", (("queue", "cpu"),))] == 2
    assert samples[("modelbay_queue_depth", (("queue", "gpu"),))] == 0


def test_opted_out_answers_are_not_counted(runtime: Runtime) -> None:
    runtime.analytics.set_opt_out(ALICE, True)
    chat = runtime.chats.open(HERE, ALICE, "tiny-chat")
    list(runtime.chats.answer(chat, ALICE, "Hello there"))
    assert not any(name == "modelbay_answers_total" for name, _ in _samples(runtime.telemetry.exposition().decode()))


def test_a_metrics_token_guards_metrics_and_the_api_token_does_not_open_it(runtime: Runtime,
                                                                           client: httpx.Client) -> None:
    runtime.settings.metrics_token = SecretStr("scrape-secret")
    base = str(client.base_url)
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        refused = httpx.get(f"{base}/metrics", headers=headers)
        assert refused.status_code == 401 and "MODELBAY_METRICS_TOKEN" in refused.json()["error"]
    allowed = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert allowed.status_code == 200 and "modelbay_queue_depth" in allowed.text


def _track(client: httpx.Client, **metadata: object) -> httpx.Response:
    return client.post("/api/analytics/events", json={
        "modelId": "tiny-chat", "userId": "user123", "sessionId": "session456", "eventType": "inference_complete",
        "metadata": {"inputTokens": 50, "outputTokens": 100, "responseTime": 1200, **metadata}})


def test_track_event_is_counted_in_analytics_and_exported(runtime: Runtime, client: httpx.Client) -> None:
    recorded = _track(client)
    assert recorded.status_code == 201
    assert recorded.json() == {"recorded": True, "model": "tiny-chat", "revision": "main"}
    assert _track(client, responseTime=800).status_code == 201

    metrics = client.get("/api/analytics/models/tiny-chat").json()
    # Reported answers count (requests, tokens, times) but their speed was not measured here: no tokens/s, so an
    # outside caller cannot set the "measured here" speed that search's speed:, /models info and recommend use.
    assert metrics["requests"] == 2 and metrics["tokens_per_s"] is None
    assert runtime.registry.get("tiny-chat").speed_source != "answers"
    fast = asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line(
        "/models search speed:1", Actor("slack", "UALICE"), HERE))
    assert "tiny-chat" not in fast.plain()
    reply = asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line(
        "/analytics model tiny-chat", Actor("slack", "UALICE"), HERE))
    assert "2" in reply.plain() and "No answers recorded yet" not in reply.plain()

    chat = runtime.chats.open(HERE, ALICE, "tiny-chat")
    answer = list(runtime.chats.answer(chat, ALICE, "Hello there"))[-1].answer

    with client.stream("GET", "/api/analytics/events", params={"format": "jsonl"}) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        rows = [json.loads(line) for line in response.iter_lines() if line]
    assert [r["source"] for r in rows] == ["trackEvent", "trackEvent", "modelbay"]
    assert rows[0]["user_key"] == "external:user123" and rows[0]["external_session"] == "session456"
    assert rows[0]["total_ms"] == 1200 and rows[0]["output_tokens"] == 100 and rows[0]["backend"] == "external"
    assert rows[0]["tokens_per_s"] is None and rows[2]["tokens_per_s"] is not None  # ours is measured here
    assert rows[2]["message_id"] == answer.message_id and rows[2]["model"] == "tiny-chat"

    csv_response = client.get("/api/analytics/events", params={"format": "csv", "model": "tiny-chat"})
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert 'filename="modelbay-events.csv"' in csv_response.headers["content-disposition"]
    read = list(csv.DictReader(io.StringIO(csv_response.text, newline="")))
    assert [int(r["id"]) for r in read] == [r["id"] for r in rows]


def test_export_is_for_admins_and_bad_input_is_one_line(runtime: Runtime, client: httpx.Client) -> None:
    assert client.get("/api/analytics/events", params={"format": "xml"}).status_code == 422
    missing = client.get("/api/analytics/events", params={"model": "no-such-model"})
    assert missing.status_code == 404 and "\n" not in missing.json()["error"]
    unknown = client.post("/api/analytics/events", json={
        "modelId": "no-such-model", "userId": "u", "metadata": {"responseTime": 5}})
    assert unknown.status_code == 404 and unknown.json()["type"] == ModelNotFound.__name__
    negative = _track(client, responseTime=-1)
    assert negative.status_code == 422 and "responseTime" in negative.json()["error"]
    assert client.post("/api/analytics/events", json={"modelId": "tiny-chat", "userId": "u", "metadata": {
        "responseTime": 5, "extra": 1}}).status_code == 422

    runtime.settings.roles = {}  # the token's holder is a plain user now
    refused = client.get("/api/analytics/events")
    assert refused.status_code == 403 and "admin" in refused.json()["error"]
    assert _track(client).status_code == 201  # tracking needs only a user


def test_an_embedded_job_run_is_timed(settings: Settings) -> None:
    runtime = Runtime(settings)
    try:
        runtime.prepare()
        runtime.start_embedded_workers()
        job = runtime.jobs.submit("test.count", {"n": 2, "delay": 0.0}, requester=ALICE).job
        wait_for(lambda: runtime.jobs.get(job.id).status == JobStatus.FINISHED)
        samples = _samples(runtime.telemetry.exposition().decode())
        assert samples[("modelbay_job_seconds_count", (("kind", "test.count"), ("outcome", "finished")))] == 1
        assert samples[("modelbay_jobs", (("kind", "test.count"), ("state", "finished")))] == 1
    finally:
        runtime.close()
