"""Every extension point of ModelBay, one hook each: model sources, inference backends, optimization methods, bot
commands, job kinds.

A plugin is a module (or object) with functions of these names marked `@hookimpl`. It is found through the
`modelbay` entry-point group of an installed distribution::

    [project.entry-points.modelbay]
    my_plugin = "my_package.my_plugin"

or added at run time with `modelbay.plugins.register(plugin)`. The built-ins are plugins written the same way,
in `modelbay/default_plugins/`; `examples/` has one small runnable plugin per hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from modelbay.bot.spec import CommandSet
    from modelbay.engine.catalog.sources.base import ModelSource
    from modelbay.engine.inference.backends.base import Backend
    from modelbay.engine.jobs.kinds import JobKind
    from modelbay.engine.optimization.methods.base import Method

__all__ = ["hookimpl", "hookspec"]

hookspec = HookspecMarker("modelbay")
hookimpl = HookimplMarker("modelbay")


@hookspec
def register_sources(register: Callable[[type[ModelSource]], type[ModelSource]]) -> None:
    """Add model sources: call `register(cls)` with each `ModelSource` subclass; its `name` is how it is chosen."""


@hookspec
def register_backends(register: Callable[[type[Backend]], type[Backend]]) -> None:
    """Add inference backends: call `register(cls)` with each `Backend` subclass, known by its `name`."""


@hookspec
def register_optimization_methods(register: Callable[[type[Method]], type[Method]]) -> None:
    """Add optimization methods: call `register(cls)` with each `Method` subclass, known by its `name`."""


@hookspec
def register_commands(commands: CommandSet) -> None:
    """Add bot commands to `commands`: `@command(..., registry=commands)` on an async handler, or `commands.add`."""


@hookspec
def register_job_kinds(register: Callable[[JobKind], JobKind]) -> None:
    """Add kinds of job: call `register(kind)` with each `JobKind` (its job function named by dotted path)."""
