"""The serve job on a real RQ worker: vLLM started, health-checked, used by chats, stopped cleanly or found down."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbay.bot import Actor, Dispatcher
from modelbay.config import load_settings
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.errors import ModelInUse, NotServed, ServerNotRunning
from modelbay.runtime import Runtime
from modelbay.workers.jobs.serve import server_environment
from modelbay.workers.vllm_pythonpath import modelbay_vllm_auth
from tests.conftest import REDIS_URL, wait_for
from tests.support.chat import VLLM_START_TIMEOUT, installed, vllm_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")]

ADMIN = Actor("console", "root")
SERVE_ENV = {
    # The runtime below counts a worker dead after 15 s of silence: its workers beat as often as that needs (every
    # 5 s; with the default 60 s TTL, every 15 s, and a job read between two beats could be taken for lost).
    "MODELBAY_WORKER_TTL": "15",
    "MODELBAY_SERVE_ENFORCE_EAGER": "true", "MODELBAY_SERVE_MAX_MODEL_LEN": "512",
    "MODELBAY_SERVE_CPU_KV_CACHE_GIB": "1", "MODELBAY_SERVE_MAX_LORA_RANK": "8",
    "MODELBAY_SERVE_EXTRA_ARGS": '["--dtype", "float32"]', "VLLM_LOGGING_LEVEL": "WARNING",
}


@pytest.fixture
def runtime(database: Database, redis, tmp_path: Path, tiny_chat_model: Path) -> Iterator[Runtime]:  # noqa: ANN001
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             environment="test", chat_temperature=0.0, chat_max_tokens=24, worker_ttl=15)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    yield runtime
    runtime.close()


@pytest.fixture
def gpu_worker(worker_env: dict[str, str], start_worker):  # noqa: ANN001, ANN201
    worker_env.update(SERVE_ENV)
    return lambda: start_worker("gpu")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return dict(e.split("=", 1) for e in handle.read().decode().split("\0") if "=" in e)


def test_a_server_inherits_what_it_needs_and_no_secret() -> None:
    worker = {"PATH": "/usr/bin", "HOME": "/home/mb", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HF_HOME": "/hf",
              "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_x", "HUGGING_FACE_HUB_TOKEN": "hf_y",
              "CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "all", "VLLM_LOGGING_LEVEL": "INFO",
              "VLLM_API_KEY": "the-workers", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
              "MODELBAY_DATABASE_URL": "postgresql://u:p@db/m", "MODELBAY_SLACK_BOT_TOKEN": "xoxb",
              "MODELBAY_API_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "a", "DATABASE_URL": "d", "REDIS_URL": "r"}
    env = server_environment(worker, "key-1")
    assert env == {"PATH": "/usr/bin", "HOME": "/home/mb", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HF_HOME": "/hf",
                   "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "all",
                   "VLLM_LOGGING_LEVEL": "INFO", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64", "VLLM_API_KEY": "key-1",
                   "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                   "PYTHONPATH": str(Path(modelbay_vllm_auth.__file__).parent)}  # where vLLM finds the key check


def _running(runtime: Runtime, server_id: int):  # noqa: ANN202
    server = runtime.servers.get(server_id)
    assert server.state in ("starting", "running"), server.error
    return server if server.state == "running" else None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # one vLLM start is enough; PG is covered below
def test_serve_chat_and_stop_through_the_bot_and_a_real_worker(runtime: Runtime, gpu_worker) -> None:  # noqa: ANN001
    dispatcher = Dispatcher(runtime)
    started = asyncio.run(dispatcher.dispatch_line("/models serve tiny-chat", ADMIN))
    assert started.progress is not None and started.title.startswith("Starting a server for tiny-chat")
    again = asyncio.run(dispatcher.dispatch_line("/models serve tiny-chat", ADMIN))
    assert again.progress.job_id == started.progress.job_id and "(already starting)" in again.title
    gpu_worker()
    server = runtime.servers.for_job(started.progress.job_id)
    server = wait_for(lambda: _running(runtime, server.id), timeout=VLLM_START_TIMEOUT)
    auth = {"Authorization": f"Bearer {server.api_key}"}
    assert httpx.get(server.endpoint.removesuffix("/v1") + "/health", headers=auth).status_code == 200
    assert runtime.jobs.get(server.job_id).progress_detail["ready"] is True
    listed = asyncio.run(dispatcher.dispatch_line("/models servers", ADMIN)).plain()
    assert f"tiny-chat | running | {server.endpoint}" in listed
    assert server.api_key not in listed
    # Its own key guards it, and it runs without the worker's settings and secrets (its database URL here).
    for path in ("/v1/models", "/health", "/invocations", "/metrics"):  # every route: see test_vllm.py
        assert httpx.get(server.endpoint.removesuffix("/v1") + path).status_code == 401
    assert httpx.get(f"{server.endpoint}/models", headers=auth).is_success
    environ = _environ(server.pid)
    assert environ["VLLM_API_KEY"] == server.api_key and environ["HF_HUB_OFFLINE"] == "1"
    assert not [k for k in environ if k.startswith("MODELBAY_")]
    assert runtime.settings.resolved_database_url not in "\n".join(environ.values())

    place = Place("console", "terminal")
    session = runtime.chats.open(place, ADMIN.key, "tiny-chat")
    answer = list(runtime.chats.answer(session, ADMIN.key, "Hello!"))[-1].answer
    assert answer.backend == "vllm" and answer.text
    with pytest.raises(ModelInUse, match="model.serve job"):
        runtime.installs.uninstall("tiny-chat")

    stopped = asyncio.run(dispatcher.dispatch_line("/models stop tiny-chat", ADMIN))
    assert stopped.text == "The server for `tiny-chat` has stopped."
    record = runtime.servers.get(server.id)
    assert record.state == "stopped" and record.ended_at is not None
    assert runtime.jobs.get(server.job_id).status == "canceled"
    wait_for(lambda: not _alive(server.pid), timeout=10)
    with pytest.raises(ServerNotRunning):
        runtime.servers.stop("tiny-chat")
    # With the server gone, the next chat is answered in-process again (the operator allows it here).
    runtime.chats.release_all()
    assert list(runtime.chats.answer(session, ADMIN.key, "Hello!"))[-1].answer.backend == "transformers"


# One vLLM start: SQLite has the real server above and servers marked down (below); crash watching is the same on both.
@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_crashed_server_is_detected_and_marked_down(runtime: Runtime, gpu_worker) -> None:  # noqa: ANN001
    server, job, created = runtime.servers.start("tiny-chat", ADMIN.key)
    assert created and server.state == "starting"
    gpu_worker()
    server = wait_for(lambda: _running(runtime, server.id), timeout=VLLM_START_TIMEOUT)
    os.kill(server.pid, signal.SIGKILL)
    down = wait_for(lambda: (s := runtime.servers.get(server.id)).state == "down" and s, timeout=30)
    assert "vLLM exited with status -9" in down.error
    failed = runtime.jobs.wait(job.id, timeout=30)
    assert failed.status == "failed" and "vLLM exited" in failed.error
    assert runtime.servers.running_for(server.model_version_id) is None
    runtime.chats.settings = load_settings(**{**runtime.settings.model_dump(), "chat_in_process": False})
    with pytest.raises(NotServed):
        runtime.chats.open(Place("console", "terminal"), ADMIN.key, "tiny-chat")


def test_a_server_that_cannot_start_is_marked_down_with_the_reason(runtime: Runtime, gpu_worker, worker_env,
                                                                   tmp_path: Path) -> None:  # noqa: ANN001
    # A Python without vLLM: the server process exits at once, as a broken install or a bad flag makes it do.
    python = tmp_path / "python-without-vllm"
    python.write_text("#!/bin/sh\nexec /usr/bin/env -i python3 -I -c 'import vllm_is_not_here' \"$@\"\n")
    python.chmod(0o755)
    worker_env["MODELBAY_VLLM_PYTHON"] = str(python)
    server, job, _ = runtime.servers.start("tiny-chat", ADMIN.key)
    gpu_worker()
    failed = runtime.jobs.wait(job.id, timeout=60)
    assert failed.status == "failed" and "vLLM exited with status 1 while starting" in failed.error
    down = runtime.servers.get(server.id)
    assert down.state == "down" and "No module named 'vllm_is_not_here'" in down.error


def test_a_model_incomplete_on_disk_is_not_served(runtime: Runtime, gpu_worker, tiny_chat_model: Path,
                                                  tmp_path: Path) -> None:  # noqa: ANN001
    broken = tmp_path / "broken-chat"
    shutil.copytree(tiny_chat_model, broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()  # removed by hand after the install
    installed(runtime.registry, broken, name="broken-chat")
    server, job, _ = runtime.servers.start("broken-chat", ADMIN.key)
    gpu_worker()
    failed = runtime.jobs.wait(job.id, timeout=60)
    assert failed.status == "failed" and "installed but incomplete on disk" in failed.error
    assert "\n" not in failed.error and "Traceback" not in failed.error
    down = runtime.servers.get(server.id)
    assert down.state == "down" and down.pid is None  # vLLM was never started
