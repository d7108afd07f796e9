"""The REST API through a real HTTP server and client, over an embedded runtime and the hub stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from modelbay.adapters.api import create_app
from modelbay.config import Settings
from modelbay.runtime import Runtime
from tests.conftest import wait_for
from tests.support.asgi import serve
from tests.support.asgi import sse_events as _events
from tests.support.hub import Fault, HubStandIn

TOKEN = "test-token"
REPO = "tiny-org/tiny-llama"
PATHS = {
    "/healthz", "/api/marketplace/models", "/api/marketplace/models/{model_id}",
    "/api/marketplace/models/{model_id}/install", "/api/marketplace/search", "/api/jobs/{job_id}",
}


def _install(client: httpx.Client, model: str, **body: str) -> list[tuple[str, dict]]:
    with client.stream("POST", f"/api/marketplace/models/{model}/install", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return list(_events(response))


@pytest.fixture
def runtime(settings: Settings, hub: HubStandIn, tiny_model: Path, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """An embedded runtime (SQLite, in-process jobs) installing from the hub stand-in, with the API token set."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub.add_repo(REPO, tiny_model, tags=["llama", "license:apache-2.0"], downloads=42)
    settings.hub_endpoint = hub.endpoint
    settings.disk_margin_bytes = 0
    settings.hub_download_timeout = 2  # a stalled download gives up, and so notices a cancel, within seconds
    settings.api_token = SecretStr(TOKEN)
    settings.roles = {"admin": ["api:*"]}
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[httpx.Client]:
    """An HTTP client with the token, against the API served over the runtime."""
    with serve(create_app(runtime)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
            yield client


def test_the_token_is_required_except_for_health_and_the_schema(client: httpx.Client) -> None:
    base = str(client.base_url)
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = httpx.get(f"{base}/api/marketplace/models", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "MODELBAY_API_TOKEN" in refused.json()["error"] and "\n" not in refused.json()["error"]
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}

    schema = httpx.get(f"{base}/openapi.json").json()
    assert schema["info"]["title"] == "ModelBay API"
    assert PATHS <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/api/marketplace/models"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    stream = schema["paths"]["/api/marketplace/models/{model_id}/install"]["post"]["responses"]
    assert "text/event-stream" in stream["200"]["content"] and "application/json" in stream["422"]["content"]


def test_without_a_configured_token_the_api_serves_nothing(settings: Settings) -> None:
    runtime = Runtime(settings)  # MODELBAY_API_TOKEN unset
    try:
        with serve(create_app(runtime)) as url:
            refused = httpx.get(f"{url}/api/marketplace/models", headers={"Authorization": "Bearer anything"})
            assert refused.status_code == 503 and "set MODELBAY_API_TOKEN" in refused.json()["error"]
            assert httpx.get(f"{url}/healthz").status_code == 200
    finally:
        runtime.close()


def test_list_filters_and_pages(client: httpx.Client) -> None:
    code = client.get("/api/marketplace/models", params={"category": "code"}).json()
    assert code["total"] == 4 and {m["category"] for m in code["models"]} == {"code"}

    tagged = client.get("/api/marketplace/models", params={"category": "code", "q": "tag:code-generation"}).json()
    assert tagged["total"] == 3 and all("code-generation" in m["tags"] for m in tagged["models"])
    both = client.get("/api/marketplace/models", params=[("tags", "small"), ("tags", "code-generation")]).json()
    assert {m["id"] for m in both["models"]} == {"qwen2.5-coder-1.5b-instruct", "deepseek-coder-1.3b-instruct"}

    assert client.get("/api/marketplace/models", params={"installed": "true"}).json() == {"models": [], "total": 0}
    everything = client.get("/api/marketplace/models", params={"sort": "name", "limit": 100}).json()
    page = client.get("/api/marketplace/models", params={"sort": "name", "limit": 2, "offset": 1}).json()
    assert page["total"] == everything["total"] == 24
    assert [m["id"] for m in page["models"]] == [m["id"] for m in everything["models"][1:3]]


def test_bad_parameters_answer_422_in_one_line(client: httpx.Client) -> None:
    too_few = client.get("/api/marketplace/models", params={"limit": 0})
    assert too_few.status_code == 422
    assert too_few.json() == {
        "error": "The query parameter `limit` should be greater than or equal to 1 (got '0').",
        "type": "RequestValidationError", "title": "Check the request",
    }
    category = client.get("/api/marketplace/models", params={"category": "poetry"}).json()["error"]
    assert category.startswith("The query parameter `category` should be 'chat', 'code'") and "\n" not in category
    source = client.get("/api/marketplace/search", params={"source": "ftp"}).json()["error"]
    assert "`source`" in source and "'huggingface'" in source


def test_get_a_model_by_name_or_repo_id(client: httpx.Client) -> None:
    model = client.get("/api/marketplace/models/qwen2.5-0.5b-instruct").json()
    assert model["id"] == "qwen2.5-0.5b-instruct" and model["repo_id"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert model["versions"] == [] and not model["installed"]
    assert [f["precision"] for f in model["fits"]] == ["fp16", "int8", "4bit"]
    assert all(f["memory_bytes"] > 0 for f in model["fits"])
    assert client.get("/api/marketplace/models/Qwen/Qwen2.5-0.5B-Instruct").json()["id"] == model["id"]

    missing = client.get("/api/marketplace/models/qwen2.5-0.5b-instrct")
    assert missing.status_code == 404
    body = missing.json()
    assert body["type"] == "ModelNotFound" and body["title"] == "Model not found"
    assert "Did you mean `qwen2.5-0.5b-instruct`" in body["error"]


def test_search_each_source_and_degrade_without_the_hub(client: httpx.Client, hub: HubStandIn,
                                                        tiny_model: Path) -> None:
    hub.add_repo("tiny-org/tiny-coder", tiny_model, tags=["code"])

    def ids(**params: str) -> tuple[set[str], list[str]]:
        answer = client.get("/api/marketplace/search", params={"q": "tiny", **params})
        assert answer.status_code == 200
        return {hit["id"] for hit in answer.json()["results"]}, answer.json()["notices"]

    registry, _ = ids(source="registry")
    assert "tinyllama-1.1b-chat" in registry and REPO not in registry
    hub_only, _ = ids(source="huggingface")
    assert hub_only == {REPO, "tiny-org/tiny-coder"}
    everywhere, notices = ids(source="all")
    assert everywhere == registry | hub_only and notices == []
    hit = next(h for h in client.get("/api/marketplace/search", params={"q": "tiny"}).json()["results"]
               if h["id"] == REPO)
    assert hit == {"id": REPO, "repo_id": REPO, "source": "huggingface", "category": "chat",
                   "parameter_count": hit["parameter_count"], "size_bytes": hit["size_bytes"], "downloads": 42,
                   "license": "apache-2.0", "installed": False, "in_registry": False, "tokens_per_s": None,
                   "speed_source": None}  # a source states no speed

    hub.stop()
    degraded, notices = ids(source="all")
    assert degraded == registry
    assert len(notices) == 1 and notices[0].startswith("huggingface did not answer within")


def test_install_streams_progress_then_complete_and_uninstall(client: httpx.Client, hub: HubStandIn,
                                                              tmp_path: Path) -> None:
    # A one-second hiccup mid-file keeps the download running while the stream reports on it.
    hub.inject(REPO, "model.safetensors", Fault("stall", after_bytes=1000, seconds=1, times=1))
    events = _install(client, REPO)
    names = [name for name, _ in events]
    assert names[-1] == "complete" and set(names[:-1]) == {"progress"}
    downloads = [data for name, data in events if name == "progress" and data["bytes"] is not None]
    assert downloads and downloads[-1]["bytes"] == downloads[-1]["total"] > 0
    assert {"rate", "eta", "message", "status", "job_id"} <= set(downloads[-1])
    complete = events[-1][1]
    assert complete["model"] == "tiny-llama" and complete["revision"] == "main" and len(complete["sha"]) == 40
    assert complete["files"] >= 3 and complete["bytes"] == downloads[-1]["total"]
    assert complete["job_id"] == downloads[-1]["job_id"]

    installed = client.get("/api/marketplace/models", params={"installed": "true"}).json()
    assert [m["id"] for m in installed["models"]] == ["tiny-llama"]
    detail = client.get(f"/api/marketplace/models/{REPO}")
    assert detail.json()["versions"][0]["install_state"] == "installed"
    assert str(tmp_path) not in detail.text  # the server's paths stay on the server
    job = client.get(f"/api/jobs/{complete['job_id']}").json()
    assert job["kind"] == "install" and job["status"] == "finished" and job["requester"] == "api:token"
    assert client.delete(f"/api/jobs/{complete['job_id']}").status_code == 409  # nothing left to cancel

    again = _install(client, "tiny-llama")
    assert [name for name, _ in again] == ["complete"]
    assert again[0][1]["job_id"] is None and again[0][1]["notices"][0] == "Already installed."

    removed = client.delete(f"/api/marketplace/models/{REPO}/install")
    assert removed.status_code == 200
    assert [v["install_state"] for v in removed.json()["removed"]] == ["uninstalled"]
    twice = client.delete(f"/api/marketplace/models/{REPO}/install")
    assert twice.status_code == 409 and twice.json()["type"] == "NotInstalled"


def test_refusals_before_the_stream_are_json(client: httpx.Client, hub: HubStandIn, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    hub.add_repo("old/pickled", folder)

    refused = client.post("/api/marketplace/models/old/pickled/install", json={})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/json"
    assert refused.json()["type"] == "UnsafeWeights" and "MODELBAY_ALLOW_PICKLE" in refused.json()["error"]
    bad_revision = client.post(f"/api/marketplace/models/{REPO}/install", json={"revision": "../main"})
    assert bad_revision.status_code == 422 and bad_revision.json()["type"] == "InvalidId"
    assert client.post("/api/marketplace/models/nobody/nothing/install").status_code == 404


def test_a_corrupted_download_ends_the_stream_with_an_error(client: httpx.Client, hub: HubStandIn) -> None:
    hub.inject(REPO, "model.safetensors", Fault("corrupt", after_bytes=100, times=0))
    events = _install(client, REPO)
    name, data = events[-1]
    assert name == "error" and "failed its checksum" in data["error"] and data["job_id"]
    assert {n for n, _ in events[:-1]} <= {"progress"}
    assert client.get("/api/marketplace/models", params={"installed": "true"}).json()["total"] == 0


def test_leaving_the_stream_keeps_the_job_and_cancel_stops_it(client: httpx.Client, hub: HubStandIn) -> None:
    # Each request (and resume) stops after a bit more than the 1 MiB the downloader reports in, so the job is
    # seen downloading, and after a cancel the next resumed chunk stops it.
    hub.inject(REPO, "model.safetensors", Fault("stall", after_bytes=1_100_000, seconds=120, times=0))
    with client.stream("POST", f"/api/marketplace/models/{REPO}/install") as response:
        job_id = next(data["job_id"] for name, data in _events(response) if name == "progress" and data["bytes"])

    # The server stops watching for the client that left; the job, which others may share, runs on.
    wait_for(lambda: f"watch-{job_id}" not in {t.name for t in threading.enumerate()}, timeout=15)
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "started"
    assert client.delete(f"/api/jobs/{job_id}").status_code == 200
    wait_for(lambda: client.get(f"/api/jobs/{job_id}").json()["status"] == "canceled", timeout=30)


@pytest.mark.usefixtures("runtime")  # it migrates the shared SQLite database and loads the catalog
def test_a_viewer_can_browse_but_not_install(settings: Settings) -> None:
    viewer = Runtime(settings.model_copy(update={"roles": {"viewer": ["api:*"]}}))
    try:
        with serve(create_app(viewer)) as url:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(f"{url}/api/marketplace/models", headers=auth).status_code == 200
            refused = httpx.post(f"{url}/api/marketplace/models/{REPO}/install", headers=auth, json={})
            assert refused.status_code == 403 and refused.json()["type"] == "NotAllowed"
            assert "needs the admin role and you have viewer" in refused.json()["error"]
            assert httpx.delete(f"{url}/api/marketplace/models/{REPO}/install", headers=auth).status_code == 403
    finally:
        viewer.close()


def test_model_metrics_over_http(client: httpx.Client, runtime: Runtime) -> None:
    from datetime import datetime, timezone

    from modelbay.engine.analytics.analytics import AnswerEvent

    model = runtime.registry.get("qwen2.5-0.5b-instruct")
    version = runtime.registry.add_version(model.id, "main")
    now = datetime.now(timezone.utc)
    runtime.analytics.record_answers([
        AnswerEvent(version.id, "api:token", None, None, "vllm", 10, 20, 50.0, ms, at=now) for ms in (100.0, 400.0)
    ])
    with runtime.db.session() as session:
        runtime.analytics.add_rating(session, version.id, now, ups=1, downs=0)
    body = client.get("/api/analytics/models/qwen2.5-0.5b-instruct", params={"period": "24h"}).json()
    assert (body["requests"], body["ups"], body["downs"], body["satisfaction"]) == (2, 1, 0, 1.0)
    assert 95 <= body["p50_ms"] <= 105 and 380 <= body["p95_ms"] <= 420
    assert body["satisfaction_low"] < 1.0 and body["satisfaction_high"] == pytest.approx(1.0)
    bad = client.get("/api/analytics/models/qwen2.5-0.5b-instruct", params={"period": "forever"})
    assert bad.status_code == 422 and "period" in bad.json()["error"]
    assert client.get("/api/analytics/models/nope").status_code == 404
