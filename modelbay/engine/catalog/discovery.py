"""Discovery: one search over the registry and every model source, de-duplicated, marking what is installed."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from modelbay.config import Settings
from modelbay.engine.errors import ModelBayError
from modelbay.engine.hardware import HardwareInfo, max_parameters
from modelbay.engine.records import ModelQuery, ModelRecord, SpeedSource, record_from_row
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.catalog.sources.base import SOURCES, RemoteModel

__all__ = ["Discovery", "SearchHit", "SearchResults"]

log = logging.getLogger(__name__)
# Threads start on demand; room for several searches at once, each asking every source, so a source that hangs
# in one search does not queue the sources of the next behind it.
_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="source-search")


@dataclass(frozen=True)
class SearchHit:
    """One search result, from the registry or straight from a source."""

    name: str  # what to type to install it: the registry name, or the repo id for source-only hits
    repo_id: str | None
    source: str
    category: str
    parameter_count: int | None
    size_bytes: int | None
    downloads: int
    license: str | None
    installed: bool
    in_registry: bool
    tokens_per_s: float | None = None  # measured here or the catalog's (speed_source says which); sources give none
    speed_source: SpeedSource | None = None

    @classmethod
    def of(cls, m: ModelRecord) -> SearchHit:
        """A registry model as a hit."""
        return record_from_row(cls, m, in_registry=True)

    @classmethod
    def remote(cls, m: RemoteModel, source: str) -> SearchHit:
        """A model only a source has, as a hit named by its repo id, with the category and size it would register."""
        values = m.registry_values()
        return record_from_row(cls, m, name=m.repo_id, source=source, category=values["category"],
                               size_bytes=values["size_bytes"], installed=False, in_registry=False)


class SearchResults(NamedTuple):
    """The hits of one search, and notices about what was left out (a source that failed or was too slow)."""

    hits: list[SearchHit]
    notices: list[str]


# How a notice names a source that is not the registry.
SOURCE_LABELS = {"huggingface": "the Hugging Face Hub", "local": "the local models folder"}


def _speed_notice(names: list[str]) -> str:
    """The notice of a speed search, which asks only the registry: "Only the registry was searched (the models
    installed or catalogued here): the Hugging Face Hub and the local models folder state no tokens/s, so their
    other models are left out."."""
    labels = [SOURCE_LABELS.get(n, n) for n in names]
    states = "states" if len(labels) == 1 else "state"
    return (f"Only the registry was searched (the models installed or catalogued here): {' and '.join(labels)} "
            f"{states} no tokens/s, so their other models are left out.")


class Discovery:
    """Searches the registry and the sources; a source that fails becomes a notice, not an error."""

    def __init__(self, settings: Settings, registry: Registry, hardware: HardwareInfo) -> None:
        self.settings = settings
        self.registry = registry
        self.hardware = hardware

    def search(self, text: str, *, source: str = "all", category: str | None = None, fits: bool = False,
               limit: int = 15, min_tokens_per_s: float | None = None) -> SearchResults:
        """Return up to limit hits (registry first, then each source's) and notices about what was left out.

        A speed bound (`min_tokens_per_s`, or a `speed:` term in text) keeps to the registry, whose models carry
        tokens/s measured here or stated by the catalog; the sources state none, so they are not asked.

        Raises:
            SearchTermInvalid: a `speed:` term that is not a number of tokens/s.
            ModelStoreUnusable: fits is set and neither the GPU workers nor this machine's store can be measured.
            (A source that fails to answer becomes a notice, not an error.)
        """
        notices: list[str] = []
        largest = None
        if fits:
            hardware, notice = self.hardware.current()
            largest = max_parameters(hardware, "4bit")
            notices += [notice] if notice else []
        query = ModelQuery.parse(text, category=category, max_parameters=largest, limit=limit,
                                 min_tokens_per_s=min_tokens_per_s)
        hits: list[SearchHit] = []
        seen: set[str] = set()
        if source in ("all", "registry"):
            for m in self.registry.search(query).models:
                seen.add((m.repo_id or m.name).lower())
                hits.append(SearchHit.of(m))
        names = [n for n in SOURCES if source in ("all", n) and (n != "local" or self.settings.local_models_dir)]
        if query.min_tokens_per_s is not None and names:
            notices.append(_speed_notice(names))
            names = []
        # Every source at once, with one deadline for all: the slowest source bounds the wait, not their sum.
        futures: dict[str, Future] = {
            name: _POOL.submit(SOURCES[name](self.settings).search, query.text, category=category, limit=limit)
            for name in names
        }
        # The hub client retries an unreachable server for about 20 s; a person searching won't wait.
        deadline = time.monotonic() + self.settings.source_search_timeout
        for name, future in futures.items():
            try:
                found = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                future.cancel()  # not started yet (the pool is busy): it never will be
                notices.append(f"{name} did not answer within {self.settings.source_search_timeout:g}s; showing the "
                               "other results.")
                continue
            except ModelBayError as exc:
                log.warning("search of %s failed: %s", name, exc)
                notices.append(f"{name} could not be searched ({exc}); showing the other results.")
                continue
            for remote in found:
                too_big = largest is not None and (remote.parameter_count or 0) > largest
                if remote.repo_id.lower() in seen or too_big:
                    continue
                seen.add(remote.repo_id.lower())
                hits.append(SearchHit.remote(remote, name))
        return SearchResults(hits[:limit], notices)
