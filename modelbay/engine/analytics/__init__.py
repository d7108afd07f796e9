"""Analytics: answer events rolled up into per-model metrics (latency percentiles, token rates, ratings)."""

from modelbay.engine.analytics.analytics import AnswerEvent, Analytics, Metrics

__all__ = [
    "Analytics", "AnswerEvent", "Metrics",
]
