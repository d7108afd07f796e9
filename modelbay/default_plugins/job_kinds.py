"""The built-in job kinds, as listed in `modelbay/engine/jobs/kinds.py`: install, model.serve, hardware.probe."""

from __future__ import annotations

from collections.abc import Callable

from modelbay.engine.jobs.kinds import BUILT_IN, JobKind
from modelbay.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def register_job_kinds(register: Callable[[JobKind], JobKind]) -> None:
    """Register every built-in kind."""
    for kind in BUILT_IN:
        register(kind)
