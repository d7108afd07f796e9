"""The plugin manager: the plugins installed as entry points, and the built-in ones (`modelbay/default_plugins/`).

Registries read their hook the first time they are read (`engine/extensions.py` for sources, backends, optimization
methods and job kinds; the bot package for commands), so every process (CLI, API, bot, RQ work horses, tests) has
them without importing anything for its side effects. A plugin added later with `register()` is called at once for the
registries already filled. Built-in hooks run first (`tryfirst`), so a plugin replaces a built-in by registering
the same name.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from modelbay import hookspecs

if TYPE_CHECKING:
    from modelbay.bot.spec import CommandSet

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINTS", "fill", "get_plugin_manager", "register", "register_commands"]

ENTRY_POINTS = "modelbay"  # the entry-point group installed plugins declare
# The built-in plugins, registered exactly as an installed one is.
DEFAULT_PLUGINS = (
    "modelbay.default_plugins.sources",
    "modelbay.default_plugins.backends",
    "modelbay.default_plugins.methods",
    "modelbay.default_plugins.commands",
    "modelbay.default_plugins.job_kinds",
)

log = logging.getLogger(__name__)

_pm = pluggy.PluginManager("modelbay")
_pm.add_hookspecs(hookspecs)
_lock = threading.RLock()
_started = False  # loading began: a plugin importing modelbay while it loads sees the built-ins only
_filled: dict[str, dict[str, Any]] = {}  # hook name -> the arguments it was called with (the registry filled)


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the plugin manager, with the built-in plugins and the installed entry points loaded.

    The built-ins are registered first. Each entry point is then loaded on its own: one that fails to import is
    logged and skipped, so a broken plugin never takes the built-ins down with it. A plugin that reads a registry
    while it is being imported (e.g. `import modelbay.bot`) sees the built-ins, and gets its own hooks called
    for that registry once it is registered.
    """
    global _started
    with _lock:
        if _started:
            return _pm
        _started = True
        for name in DEFAULT_PLUGINS:
            _pm.register(importlib.import_module(name), name)
        for point in entry_points(group=ENTRY_POINTS):
            if _pm.has_plugin(point.name) or _pm.is_blocked(point.name):
                continue
            try:
                plugin = point.load()
            except Exception:
                log.exception("the plugin %s (%s) could not be loaded; going on without it", point.name, point.value)
                continue
            register(plugin, point.name)
    return _pm


def fill(hook: str, register: Callable[[Any], Any]) -> None:
    """Call a `register_*(register)` hook on every plugin (a registry does this on its first read)."""
    _call(hook, register=register)


def register_commands(commands: CommandSet) -> None:
    """Call the `register_commands` hook on every plugin with the command set to add to."""
    _call("register_commands", commands=commands)


def _call(hook: str, **kwargs: Any) -> None:
    pm = get_plugin_manager()
    with _lock:
        _filled[hook] = kwargs
    getattr(pm.hook, hook)(**kwargs)


def register(plugin: object, name: str | None = None) -> None:
    """Add a plugin at run time; the registries already filled get what it registers now, the others when read."""
    pm = get_plugin_manager()
    with _lock:
        pm.register(plugin, name)
        others = [p for p in pm.get_plugins() if p is not plugin]
        filled = dict(_filled)
    for hook, kwargs in filled.items():
        pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
