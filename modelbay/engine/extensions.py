"""Named registries of what plugins add to the engine (model sources, inference backends, job kinds).

Each registry is filled the first time it is read, by calling its hook (`modelbay/hookspecs.py`) on every
plugin: the built-in ones in `modelbay/default_plugins/` and those installed under the `modelbay` entry-point
group. Filling on first read means every process that needs a registry has it (CLI, API, bot, RQ work horses,
tests) without an import made for its side effect. The plugin manager lives outside the engine
(`modelbay/plugins.py`) and is imported by name only when a registry is first read, as job hooks are.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Extensions"]

T = TypeVar("T")
PLUGINS = "modelbay.plugins"  # the module that runs the hooks (outside the engine, so imported lazily)


class Extensions(Mapping[str, T], Generic[T]):
    """A mapping of name -> extension (a class or a value), filled through one plugin hook on first read.

    `hook` is the hook's name in `modelbay.hookspecs`; it is called as `hook(register=self.register)`.
    `name_of` gives an item's name; `check` raises ValueError for an item that cannot be registered.
    """

    def __init__(self, hook: str, name_of: Callable[[T], str], check: Callable[[T], None] | None = None) -> None:
        self.hook = hook
        self._name_of = name_of
        self._check = check
        self._items: dict[str, T] = {}
        self._ready = False  # filled by the plugins
        self._filling = False
        self._lock = threading.RLock()  # other readers wait while one thread fills; that thread re-enters

    def register(self, item: T) -> T:
        """Add an item under its name (replacing one of the same name) and return it, so it works as a decorator."""
        if self._check is not None:
            self._check(item)
        self._fill()  # the plugins' items first, so that an item registered by hand replaces theirs
        with self._lock:
            self._items[self._name_of(item)] = item
        return item

    def pop(self, name: str, default: T | None = None) -> T | None:
        """Remove an item by name and return it (default when there is none)."""
        self._fill()
        with self._lock:
            return self._items.pop(name, default)

    def _fill(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready or self._filling:
                return  # filled meanwhile, or this is the hook's own call to register()
            self._filling = True
            try:
                importlib.import_module(PLUGINS).fill(self.hook, self.register)
                self._ready = True
            finally:
                self._filling = False  # a plugin that raised is tried again at the next read

    def __getitem__(self, name: str) -> T:
        self._fill()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._fill()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Extensions({self.hook!r}, {sorted(self._items)!r})"
