"""Optimization over REST (`/api/optimization/...`) without workers: the seed's body starts a job (queued on the cpu
queue for a cast), refusals are one-line JSON errors before anything is queued, and jobs, recipes and charts are
served as the training routes serve theirs. A job through a real worker is tests/scenarios/test_optimize.py's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from modelbay.adapters.api import create_app
from modelbay.config import Settings
from modelbay.engine.jobs.kinds import PROBE
from modelbay.engine.optimization.config import load_recipes
from modelbay.runtime import Runtime
from tests.support.asgi import serve, sse_events
from tests.support.chat import installed

TOKEN = "t0k3n"
JOBS = "/api/optimization/jobs"


@pytest.fixture
def api(settings: Settings, tiny_chat_model: Path) -> Iterator[httpx.Client]:
    """The API over a runtime with the tiny chat model installed; the token's caller is a trainer."""
    settings.api_token = SecretStr(TOKEN)
    settings.roles = {"trainer": ["api:token"]}
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    try:
        with serve(create_app(runtime)) as url, httpx.Client(base_url=url, timeout=60,
                                                             headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            client.runtime = runtime  # type: ignore[attr-defined]
            yield client
    finally:
        runtime.close()


def _refused(response: httpx.Response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "type", "title"} and "\n" not in body["error"] and len(body["error"]) < 400, body
    return body


def test_impossible_bodies_are_refused_in_one_line_and_nothing_is_queued(api: httpx.Client) -> None:
    def post(body: dict) -> dict:
        return _refused(api.post(JOBS, json={"model": "tiny-chat", **body}))

    four_int8 = post({"quantization": {"bits": 4, "dataType": "int8"}})
    assert four_int8["type"] == "OptimizationConfigInvalid" and "int8 is not a 4-bit type" in four_int8["error"]
    assert "`pruning.sparsity`" in post({"type": "pruning", "pruning": {"sparsity": 1.5}})["error"]
    static = post({"type": "export", "export": {"int8": "static"}})
    assert static["type"] == "OptimizationConfigInvalid" and "static int8 needs calibration data" in static["error"]
    assert "static int8 needs calibration data" in post({"quantization": {"bits": 8, "method": "static"}})["error"]
    assert "`quantization.bits`" in post({"quantization": {"bits": 5}})["error"]
    assert "`colour`" in post({"colour": "red"})["error"]  # unknown names are refused, not ignored
    assert "no recipe `nope`" in post({"type": "recipe", "recipe": "nope"})["error"]
    assert "`targetReduction`" in post({"targetReduction": 99})["error"]
    assert "distillation is not offered" in post({"type": "distillation"})["error"]
    missing = _refused(api.post(JOBS, json={"model": "no-such-model", "quantization": {"bits": 8}}), 404)
    assert missing["type"] == "ModelNotFound"
    assert "`model`" in _refused(api.post(JOBS, json={"quantization": {"bits": 8}}))["error"]
    nodata = _refused(api.post(JOBS, json={"model": "tiny-chat", "quantization": {"bits": 16}, "dataset": "nope"}),
                      404)
    assert nodata["type"] == "DatasetNotFound"
    assert api.runtime.optimization.list() == []  # type: ignore[attr-defined]
    assert api.get(JOBS).json() == {"jobs": []}


def test_a_job_starts_from_the_seed_body_and_is_listed_shown_and_refused_where_it_is_not_one(
        api: httpx.Client) -> None:
    started = api.post(JOBS, json={"model": "tiny-chat", "quantization": {"bits": 16}, "preserveAccuracy": 1})
    assert started.status_code == 201, started.text
    job = started.json()
    assert (job["name"], job["parent"], job["where"], job["output"], job["budget"], job["created"]) == (
        "tiny-chat-fp16", "tiny-chat", "cpu", "transformers", 1.0, True)
    assert job["steps"] == [{"method": "cast", "params": {"dtype": "float16"}}] and job["labels"]
    assert job["config"]["quantization"]["bits"] == 16 and job["kind"] == "optimize.cpu"
    assert job["status"] == "queued" and job["result"] is None and job["chart_url"] is None
    assert job["latest"]["job_id"] == job["id"] and job["dataset"] is None

    again = api.post(JOBS, json={"model": "tiny-chat", "quantization": {"bits": 16}, "preserveAccuracy": 1})
    assert again.status_code == 201 and again.json()["id"] == job["id"] and not again.json()["created"]

    shown = api.get(f"{JOBS}/{job['id']}")
    assert shown.status_code == 200 and shown.json()["name"] == "tiny-chat-fp16"
    assert [j["id"] for j in api.get(JOBS).json()["jobs"]] == [job["id"]]
    assert api.get(JOBS, params={"active": "false"}).json() == {"jobs": []}
    no_chart = _refused(api.get(f"{JOBS}/{job['id']}/chart.png"), 404)
    assert "drawn when the job finishes" in no_chart["error"]

    # Unknown jobs and jobs of another kind are 404s that say what they are.
    assert _refused(api.get(f"{JOBS}/nope"), 404)["type"] == "JobNotFound"
    probe = api.runtime.jobs.submit(PROBE.name, {}, requester="api:token").job.id  # type: ignore[attr-defined]
    for path in (f"{JOBS}/{probe}", f"{JOBS}/{probe}/chart.png"):
        other = _refused(api.get(path), 404)
        assert other["type"] == "NotAnOptimizationJob" and f"/jobs watch {probe}" in other["error"]

    # Starting needs the trainer role; everyone's jobs need an admin.
    api.runtime.settings.roles = {"user": ["api:*"]}  # type: ignore[attr-defined]
    denied = _refused(api.post(JOBS, json={"model": "tiny-chat", "quantization": {"bits": 8}}), 403)
    assert "trainer" in denied["error"]
    assert "admin" in _refused(api.get(JOBS, params={"all": "true"}), 403)["error"]
    api.runtime.settings.roles = {"trainer": ["api:token"]}  # type: ignore[attr-defined]

    # Canceled while queued: its stream ends with `error`, saying so in one line.
    assert api.delete(f"/api/jobs/{job['id']}").json()["status"] == "canceled"
    with api.stream("GET", f"{JOBS}/{job['id']}", headers={"Accept": "text/event-stream"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(stream))
    assert events[-1] == ("error", {"error": f"Optimization job `{job['id']}` was canceled; nothing partial was kept.",
                                    "job_id": job["id"]})


def test_recipes_are_listed_with_their_steps(api: httpx.Client) -> None:
    recipes = api.get("/api/optimization/recipes").json()["recipes"]
    assert [r["name"] for r in recipes] == list(load_recipes())
    slim = next(r for r in recipes if r["name"] == "slim-cpu")
    assert [s["method"] for s in slim["steps"]] == ["channels", "onnx"] and slim["description"]
    schema = api.get("/openapi.json").json()
    assert {"/api/optimization/jobs", "/api/optimization/jobs/{job_id}", "/api/optimization/jobs/{job_id}/chart.png",
            "/api/optimization/recipes"} <= set(schema["paths"])
