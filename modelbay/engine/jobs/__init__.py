"""Jobs: kinds, submission, progress, cancel and reconciliation with RQ, and retry scheduling."""

from modelbay.engine.jobs.jobs import JobCanceled, JobKind, Jobs, ProgressEvent, RetryPolicy, register_kind

__all__ = [
    "JobCanceled", "JobKind", "Jobs", "ProgressEvent", "register_kind", "RetryPolicy",
]
