"""RQ job functions and the processes that run them; heavy ML imports happen inside jobs only."""

from modelbay.workers.context import JobContext

__all__ = ["JobContext"]
