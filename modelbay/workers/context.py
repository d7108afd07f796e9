"""What a job function receives: its id, the settings and database, and a throttled progress reporter."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modelbay.config import Settings
from modelbay.engine.db.database import Database
from modelbay.engine.jobs.jobs import JobCanceled, Jobs
from modelbay.engine.jobs.progress import ProgressDetail, ProgressEvent

__all__ = ["JobContext"]

# Reports can come thousands of times a second (bytes downloaded); listeners need far fewer.
PUBLISH_EVERY = 0.1
STORE_EVERY = 1.0


@dataclass
class JobContext:
    """Handed to every job function as its first argument."""

    job_id: str
    attempt: int
    settings: Settings
    db: Database
    jobs: Jobs
    _published_at: float = field(default=0.0, repr=False)
    _stored_at: float = field(default=0.0, repr=False)
    _message: str | None = field(default=None, repr=False)
    _fraction: float = field(default=0.0, repr=False)
    _phase: str | None = field(default=None, repr=False)

    def progress(self, fraction: float | None = None, message: str | None = None, *, force: bool = False,
                 detail: ProgressDetail | None = None, **values: Any) -> None:
        """Report progress (0..1), a message and details, throttled unless forced; raise JobCanceled on cancel.

        The details are a `ProgressDetail` (or a subclass), its fields given as keywords (`phase=`, `bytes=`,
        `total=`, `rate=`, `eta=`...; other names go to its `extra`), or both.
        """
        self.check_canceled()
        if fraction is not None:
            self._fraction = min(max(float(fraction), 0.0), 1.0)
        if message is not None:
            self._message = message
        detail = ProgressDetail.of(values) if detail is None else type(detail).of({**detail, **values})
        now = time.monotonic()
        # A new phase goes out at once; anything else (counters in the message included) waits its turn.
        new_phase = detail.phase is not None and detail.phase != self._phase
        if "phase" in detail:
            self._phase = detail.phase
        if force or new_phase or now - self._published_at >= PUBLISH_EVERY:
            self._published_at = now
            self.jobs.publish_progress(ProgressEvent(self.job_id, "started", self._fraction, self._message, detail))
        if force or new_phase or now - self._stored_at >= STORE_EVERY:
            self._stored_at = now
            self.jobs.save_progress(self.job_id, self._fraction, self._message, detail)

    def check_canceled(self) -> None:
        """Raise JobCanceled if someone asked to cancel this job."""
        if self.jobs.cancel_requested(self.job_id):
            raise JobCanceled(self.job_id)
