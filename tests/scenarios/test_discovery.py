"""Discovery: every model source is searched at once, under one deadline, beside the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbay.config import Settings
from modelbay.engine.catalog.discovery import Discovery
from modelbay.engine.hardware import HardwareInfo
from modelbay.engine.db.database import Database
from modelbay.engine.jobs.jobs import Jobs
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.catalog.sources.base import SOURCES, RemoteModel, register_source
from modelbay.engine.catalog.sources.local import LocalFolderSource
from tests.conftest import wait_for
from tests.support.hub import DripHub, HubStandIn


class _SlowSource(LocalFolderSource):
    """A source that takes `delay` seconds to answer each search (a slow mirror, a far-away folder)."""

    delay = 0.0

    def search(self, text: str, *, category: str | None = None, limit: int = 20) -> list[RemoteModel]:
        time.sleep(self.delay)
        return [RemoteModel(source=self.name, repo_id=f"{self.name}/tiny-{text}", sha="0" * 40)]


@pytest.fixture
def slow_sources() -> Iterator[None]:
    added = []
    for name, delay in (("slow-a", 2.0), ("slow-b", 2.0), ("slow-c", 2.0), ("stuck", 30.0)):
        cls = type(f"Source_{name}", (_SlowSource,), {"name": name, "delay": delay})
        register_source(cls)  # the same hook a plugin's source uses
        added.append(name)
    yield
    for name in added:
        SOURCES.pop(name, None)


@pytest.fixture
def discovery(settings: Settings, database: Database, redis, hub: HubStandIn) -> Discovery:  # noqa: ANN001
    settings.hub_endpoint = hub.endpoint
    settings.source_search_timeout = 6.0
    registry = Registry(database)
    return Discovery(settings, registry, HardwareInfo(Jobs(database, redis), redis, settings))


def test_sources_are_searched_at_once_and_a_slow_one_becomes_a_notice(discovery: Discovery, slow_sources: None,
                                                                      hub: HubStandIn, tiny_model: Path) -> None:
    hub.add_repo("tiny-org/tiny-model", tiny_model)
    started = time.monotonic()
    hits, notices = discovery.search("model", limit=50)
    took = time.monotonic() - started
    # Three 2-second sources one after another take 6 s and hit the deadline; at once they take about 2 s. The
    # stuck one is cut off at the single 6-second deadline, not at 6 s after the others finished.
    assert took < 12.0
    assert {h.repo_id for h in hits} >= {"tiny-org/tiny-model", "slow-a/tiny-model", "slow-b/tiny-model",
                                         "slow-c/tiny-model"}
    assert notices == ["stuck did not answer within 6s; showing the other results."]
    one, notices = discovery.search("model", source="slow-a", limit=50)
    assert [h.repo_id for h in one] == ["slow-a/tiny-model"] and notices == []


def test_three_slow_sources_take_about_as_long_as_one(discovery: Discovery, slow_sources: None) -> None:
    discovery.settings.source_search_timeout = 20.0
    SOURCES.pop("stuck")
    started = time.monotonic()
    hits, notices = discovery.search("x", limit=50)
    took = time.monotonic() - started
    assert {"slow-a/tiny-x", "slow-b/tiny-x", "slow-c/tiny-x"} <= {h.repo_id for h in hits} and notices == []
    assert took < 5.0  # one after another: at least 6 s


def test_a_hub_answering_500_at_once_is_named_in_the_notice_at_once(discovery: Discovery) -> None:
    # huggingface_hub retries a 500 for about 20 s; a search shows the hub's real answer instead of "did not answer".
    discovery.settings.source_search_timeout = 20.0
    with DripHub(status=500, interval=None) as broken:
        discovery.settings.hub_endpoint = broken.endpoint
        started = time.monotonic()
        hits, notices = discovery.search("tiny", source="huggingface")
        took = time.monotonic() - started
    assert hits == [] and len(notices) == 1
    assert notices[0].startswith("huggingface could not be searched (") and "HTTP 500" in notices[0], notices
    assert took < 15.0


def test_a_hub_that_drips_its_answer_frees_the_search_thread(discovery: Discovery) -> None:
    # A byte a second never times out a read: without one deadline for the whole call, the search's pool thread
    # would read forever, and 32 such searches would leave no thread for the next.
    discovery.settings.source_search_timeout = 3.0
    with DripHub(interval=1.0) as drip:
        discovery.settings.hub_endpoint = drip.endpoint
        hits, notices = discovery.search("tiny", source="huggingface")
        assert hits == [] and len(notices) == 1 and "did not answer within 3s" in notices[0], notices
        wait_for(lambda: drip.accepted >= 1 and drip.open == 0, timeout=30)  # the client hung up: its thread is free
