"""Model servers: vLLM's OpenAI-compatible server started and supervised by a serve job on a gpu worker.

`/models serve` submits a `model.serve` job; the job (workers/serve.py) launches vLLM on a free port, waits
until it is healthy, records the endpoint here and then watches it for as long as it runs. `/models stop`
asks that job to stop (a cancel request it sees within a second), so stopping never queues behind the very
job it stops. Whatever way the job ends, the `settle` hook leaves the server row stopped or down.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import httpx
from sqlalchemy import select

from modelbay.config import Settings
from modelbay.engine.db.database import Database
from modelbay.engine.errors import BaseModelMissing, NeedsInstall, ServerFailed, ServerNotRunning, ServingUnsupported
from modelbay.engine.installs.loadable import tuned_parts
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.jobs.kinds import SERVE
from modelbay.engine.records import JobRecord, ModelRecord, VersionRecord, record_from_row
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.schema.catalog import Model, ModelVersion
from modelbay.engine.db.schema.serving import Server, ServerState

__all__ = ["ServerRecord", "Servers", "Started", "installed_version", "served_name", "settle"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerRecord:
    """A model server as the bot sees it."""

    id: int
    model_version_id: int
    job_id: str
    state: str
    endpoint: str | None
    served_name: str
    host: str | None
    pid: int | None
    adapters: list[str] = field(default_factory=list)
    api_key: str | None = field(default=None, repr=False)  # the bearer token the server requires
    error: str | None = None
    requester: str = ""
    created_at: datetime | None = None
    ready_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def live(self) -> bool:
        """Whether it runs or is on its way up or down."""
        return ServerState(self.state).live


class Started(NamedTuple):
    """What starting a server gives: the server, its serve job, and whether it is new (False: joined a live one)."""

    server: ServerRecord
    job: JobRecord
    created: bool


def _record(row: Server) -> ServerRecord:
    return record_from_row(ServerRecord, row)


def served_name(model: ModelRecord) -> str:
    """The name requests use for the base model: the registry name, which clients already know."""
    return model.name


def installed_version(model: ModelRecord, action: str = "chat with") -> VersionRecord:
    """Return the newest installed version of a model, or raise NeedsInstall.

    Raises:
        NeedsInstall: no version of the model is installed.
    """
    installed = [v for v in model.versions if v.install_state == "installed" and v.local_path]
    if not installed:
        raise NeedsInstall(model.name, action)
    return max(installed, key=lambda v: (v.installed_at or datetime.min.replace(tzinfo=timezone.utc), v.id))


def settle(db: Database, job: JobRecord) -> None:
    """The serve kind's end hook: a server whose job ended is stopped (asked to) or down (it failed)."""
    with db.session() as session:
        row = session.scalars(select(Server).where(Server.job_id == job.id)).first()
        if row is None or not row.state.live:
            return
        if job.status == "failed":
            row.state, row.error = ServerState.DOWN, row.error or job.error
        else:
            row.state = ServerState.STOPPED
        row.ended_at = row.ended_at or datetime.now(timezone.utc)


class Servers:
    """Starts, finds and stops model servers; the serve job does the process work on a gpu worker."""

    def __init__(self, settings: Settings, db: Database, registry: Registry, jobs: Jobs) -> None:
        self.settings = settings
        self._db = db
        self.registry = registry
        self.jobs = jobs

    def start(self, name: str, requester: str) -> Started:
        """Serve the newest installed version of a model (or join the server already live); True if new.

        A LoRA fine-tune without merged weights starts (or joins) its base model's server instead, which answers it
        with the adapter hot-loaded.

        Raises:
            ModelNotFound: no model has that name.
            NeedsInstall: no version of it is installed.
            BaseModelMissing: a LoRA fine-tune's base model is not installed any more.
            ServingUnsupported: it is an ONNX export.
        """
        model = self.registry.get(name)
        version = installed_version(model, "serve")
        if version.format == "onnx":
            raise ServingUnsupported(model.name, "it is an ONNX export (onnxruntime runs it, vLLM does not)")
        parts = tuned_parts(version)
        if parts is not None and parts.merged is None:
            # A LoRA fine-tune without merged weights runs on its base model's server (chats hot-load the adapter).
            base = self._base_name(version)
            if base is None or not self.registry.get(base).installed:
                raise BaseModelMissing(model.name, base)
            return self.start(base, requester)
        live = self.live_for(version.id)
        if live is not None:
            return Started(live, self.jobs.get(live.job_id), False)
        job, created = self.jobs.submit(SERVE.name, {"version_id": version.id}, requester=requester,
                                        dedup_key=f"version:{version.id}", model_version_id=version.id)
        if not created:
            existing = self.for_job(job.id)
            if existing is not None:
                return Started(existing, job, False)
        with self._db.session() as session:
            row = session.scalars(select(Server).where(Server.job_id == job.id)).first()
            if row is None:
                row = Server(model_version_id=version.id, job_id=job.id, state=ServerState.STARTING,
                             served_name=served_name(model), requester=requester, adapters=[])
                session.add(row)
                session.flush()
            record = _record(row)
        return Started(record, job, created)

    def _base_name(self, version: VersionRecord) -> str | None:
        """The name of the model a fine-tune's base version belongs to, None when that version is gone."""
        with self._db.session() as session:
            return session.scalar(select(Model.name).join(ModelVersion).where(
                ModelVersion.id == version.parent_version_id)) if version.parent_version_id else None

    def stop(self, name: str) -> ServerRecord:
        """Ask the live servers of a model to stop; the serve job terminates vLLM and records it.

        Raises:
            ModelNotFound: no model has that name.
            ServerNotRunning: no server of it is live.
        """
        model = self.registry.get(name)
        stopping = [s for s in self.list(live=True) if s.model_version_id in {v.id for v in model.versions}]
        if not stopping:
            raise ServerNotRunning(model.name)
        for server in stopping:
            self._set(server.id, state=ServerState.STOPPING)
            job = self.jobs.get(server.job_id)
            if job.active:
                self.jobs.cancel(server.job_id)
            else:
                settle(self._db, job)
        return self.get(stopping[0].id)

    def get(self, server_id: int) -> ServerRecord:
        """Return one server."""
        with self._db.session() as session:
            row = session.get(Server, server_id)
            if row is None:
                raise LookupError(f"no server #{server_id}")
            return _record(row)

    def for_job(self, job_id: str) -> ServerRecord | None:
        """Return the server a serve job runs."""
        with self._db.session() as session:
            row = session.scalars(select(Server).where(Server.job_id == job_id)).first()
            return _record(row) if row is not None else None

    def live_for(self, version_id: int) -> ServerRecord | None:
        """Return the live server of a model version, reconciling it with its job first."""
        with self._db.session() as session:
            rows = session.scalars(select(Server).where(
                Server.model_version_id == version_id,
                Server.state.in_([ServerState.STARTING, ServerState.RUNNING, ServerState.STOPPING]),
            ).order_by(Server.id.desc())).all()
            records = [_record(r) for r in rows]
        for record in records:
            self.jobs.get(record.job_id)  # a job whose worker died ends here, and settle() marks it down
            fresh = self.get(record.id)
            if fresh.live:
                return fresh
        return None

    def running_for(self, version_id: int) -> ServerRecord | None:
        """Return the server of a version that is ready to answer (state running with an endpoint)."""
        with self._db.session() as session:
            row = session.scalars(select(Server).where(
                Server.model_version_id == version_id, Server.state == ServerState.RUNNING,
                Server.endpoint.is_not(None),
            ).order_by(Server.id.desc())).first()
            return _record(row) if row is not None else None

    def list(self, *, live: bool | None = None, limit: int = 50) -> list[ServerRecord]:
        """Return servers, newest first."""
        query = select(Server).order_by(Server.id.desc()).limit(limit)
        if live is not None:
            states = [ServerState.STARTING, ServerState.RUNNING, ServerState.STOPPING]
            query = query.where(Server.state.in_(states) if live else Server.state.not_in(states))
        with self._db.session() as session:
            return [_record(r) for r in session.scalars(query)]

    def _set(self, server_id: int, **values: Any) -> None:
        with self._db.session() as session:
            row = session.get(Server, server_id)
            if row is not None and row.state.live:
                for key, value in values.items():
                    setattr(row, key, value)

    # -- LoRA adapters -------------------------------------------------------------------------------------
    def load_adapter(self, server: ServerRecord, name: str, path: str) -> ServerRecord:
        """Hot-load a LoRA adapter into a running server; requests then pick it by name.

        Raises:
            ServerNotRunning: the server has no endpoint (it is not running).
            ServerFailed: the server could not be reached or refused the adapter.
        """
        if not _ADAPTER_NAME.fullmatch(name):
            raise ValueError(f"adapter names are letters, digits, '.', '_' and '-' (got {name!r})")
        if name in server.adapters:
            return server
        if server.endpoint is None:
            raise ServerNotRunning(server.served_name)
        root = server.endpoint.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
        try:
            resp = httpx.post(f"{root}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path},
                              headers=headers, timeout=120.0)
        except httpx.HTTPError as exc:
            raise ServerFailed(server.served_name, f"loading adapter {name} failed ({type(exc).__name__})") from None
        if resp.status_code != 200 and "already been loaded" not in resp.text:
            raise ServerFailed(server.served_name, f"loading adapter {name} failed: HTTP {resp.status_code} "
                                                   f"{resp.text[:200]}")
        with self._db.session() as session:
            row = session.get(Server, server.id)
            if row is not None and name not in (row.adapters or []):
                row.adapters = [*(row.adapters or []), name]
        return self.get(server.id)


_ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
