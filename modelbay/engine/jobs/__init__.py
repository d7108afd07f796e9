"""Jobs: the list of kinds, submission, typed progress, cancel and reconciliation with RQ, and retry scheduling."""

from modelbay.engine.jobs.jobs import JobCanceled, Jobs, UnknownJobKind
from modelbay.engine.jobs.kinds import (
    BUILT_IN,
    INSTALL,
    KINDS,
    PROBE,
    QUEUES,
    SERVE,
    JobKind,
    RetryPolicy,
    register_kind,
)
from modelbay.engine.jobs.progress import ProgressDetail, ProgressEvent

__all__ = [
    "BUILT_IN", "INSTALL", "JobCanceled", "JobKind", "Jobs", "KINDS", "PROBE", "ProgressDetail", "ProgressEvent",
    "QUEUES", "register_kind", "RetryPolicy", "SERVE", "UnknownJobKind",
]
