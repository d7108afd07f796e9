"""The job runner finds a job's function: where it is named, or where its kind names it after a move."""

from __future__ import annotations

import pytest

from modelbay.workers.jobs.install import install
from modelbay.workers.jobs.probe import probe
from modelbay.workers.runner import _resolve


def test_a_job_function_is_found_where_it_is_named() -> None:
    assert _resolve("modelbay.workers.jobs.install.install", "install") is install


@pytest.mark.parametrize(("queued_as", "kind", "function"), [
    ("modelbay.workers.install.install", "install", install),  # queued before job functions moved to workers/jobs/
    ("modelbay.workers.hardware.probe", "hardware.probe", probe),
    ("modelbay.workers.jobs.install.gone", "install", install),
])
def test_a_job_queued_before_its_function_moved_runs_the_function_its_kind_names(queued_as: str, kind: str,
                                                                                 function: object) -> None:
    assert _resolve(queued_as, kind) is function


def test_a_missing_function_of_an_unknown_kind_still_fails() -> None:
    with pytest.raises(ImportError):
        _resolve("modelbay.workers.nowhere.run", "no.such.kind")
