"""The composition root: builds the database, Redis, jobs and registry from Settings, once per process."""

from __future__ import annotations

import logging

import fakeredis
from redis import Redis

from modelbay.config import Settings
from modelbay.engine.analytics.analytics import Analytics
from modelbay.engine.analytics.telemetry import Telemetry
from modelbay.engine.catalog.curated import load_catalog
from modelbay.engine.chat.chats import Chats
from modelbay.engine.datasets.datasets import Datasets
from modelbay.engine.db.database import Database
from modelbay.engine.catalog.discovery import Discovery
from modelbay.engine.errors import SchemaOutdated
from modelbay.engine.hardware import HardwareInfo
from modelbay.engine.installs.installs import Installs
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.records import VersionRecord
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.inference.serving import Servers
from modelbay.engine.optimization.optimization import Optimization
from modelbay.engine.experiments.arena import Arena  # arena
from modelbay.engine.experiments.experiments import Experiments  # experiments
from modelbay.engine.training.training import Training
from modelbay.workers.embedded import EmbeddedWorkers
from modelbay.workers.runner import install_resources

__all__ = ["Runtime", "SchemaOutdated"]

log = logging.getLogger(__name__)


def connect_redis(settings: Settings) -> Redis:
    """Return a Redis client for MODELBAY_REDIS_URL, or an in-process emulation when it is unset."""
    if settings.redis_url:
        return Redis.from_url(settings.redis_url)
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


class Runtime:
    """Everything a process of ModelBay shares: settings, database, Redis, jobs, registry."""

    def __init__(self, settings: Settings) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.redis = connect_redis(settings)
        self.jobs = Jobs(self.db, self.redis, worker_ttl=settings.worker_ttl, in_process=settings.embedded_jobs)
        self.registry = Registry(self.db)
        self.hardware = HardwareInfo(self.jobs, self.redis, settings)
        self.installs = Installs(settings, self.registry, self.jobs, self.hardware)
        self.discovery = Discovery(settings, self.registry, self.hardware)
        self.servers = Servers(settings, self.db, self.registry, self.jobs)
        self.analytics = Analytics(self.db)
        # telemetry: this process's Prometheus metrics (answers counted by Chats, job runs by the embedded workers)
        self.telemetry = Telemetry(self.db, self.redis)
        self.chats = Chats(settings, self.db, self.redis, self.registry, self.servers, self.analytics,
                           telemetry=self.telemetry)
        self.datasets = Datasets(settings, self.db)
        self.training = Training(settings, self.db, self.registry, self.jobs, self.hardware, self.datasets)
        self.optimization = Optimization(settings, self.db, self.registry, self.jobs, self.hardware, self.datasets)
        self.arena = Arena(settings, self.db, self.chats)  # arena: blind battles, votes, the leaderboard
        self.experiments = Experiments(settings, self.db, self.registry, self.chats, self.analytics)  # A/B tests
        self._embedded: EmbeddedWorkers | None = None

    def prepare(self) -> None:
        """Bring the schema up to date (SQLite) or check it is (PostgreSQL), then load the shipped catalog."""
        if self.db.url.startswith("sqlite"):
            self.db.upgrade()
        else:
            head = self.schema_head()
            current = self.db.current_revision()
            if current != head:
                raise SchemaOutdated(current, head)
        self.registry.sync_catalog(load_catalog())

    def schema_head(self) -> str:
        """Return the newest migration revision this code ships."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.db.alembic_config()).get_current_head() or ""

    def start_embedded_workers(self) -> None:
        """Run jobs in this process when no Redis is configured."""
        if self.settings.redis_url or self._embedded is not None:
            return
        install_resources(self.settings, self.db, self.redis, telemetry=self.telemetry)
        self._embedded = EmbeddedWorkers(self.redis).start()

    def uninstall(self, name: str, revision: str | None = None, *, force: bool = False) -> list[VersionRecord]:
        """Remove installed versions (Installs.uninstall) and free the models this process had loaded from them."""
        removed = self.installs.uninstall(name, revision, force=force)
        for version in removed:
            self.chats.release(version.id)
        return removed

    def close(self) -> None:
        """Stop embedded workers, free loaded models and release connections."""
        self.chats.release_all()
        if self._embedded is not None:
            self._embedded.stop(timeout=2.0)
            self._embedded = None
        self.db.dispose()
