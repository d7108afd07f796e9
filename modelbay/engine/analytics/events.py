"""Answer events in and out: the export (CSV or JSON Lines, read in pages) and the seed's `trackEvent` (answers a
model gave outside ModelBay, recorded like our own so `/analytics model` counts them)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select

from modelbay.engine.analytics.analytics import Analytics, AnswerEvent
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.catalog import Model, ModelVersion
from modelbay.engine.records import VersionRecord

__all__ = ["EXPORT_FIELDS", "TrackedEvent", "csv_cell", "csv_lines", "export_events", "jsonl_lines", "track"]

# One row per event, in this order (the CSV header). Times are UTC ISO 8601; durations in milliseconds.
EXPORT_FIELDS = ("id", "at", "event_type", "model", "revision", "model_version_id", "user_key", "session_id",
                 "message_id", "backend", "input_tokens", "output_tokens", "ttft_ms", "total_ms", "tokens_per_s",
                 "failed", "source", "external_session")
PAGE = 1000  # events read per query: each page is its own short transaction, so an export holds no long one
TRACKED_BACKEND = "external"  # the backend of an answer given outside ModelBay
# A CSV cell starting with one of these is a formula to a spreadsheet (OWASP "CSV Injection"): it gets a leading '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_events(db: Database, since: datetime | None = None, version_ids: Iterable[int] | None = None,
                  page: int = PAGE) -> Iterator[dict[str, Any]]:
    """Yield analytics events oldest first as plain dicts with `EXPORT_FIELDS`, `page` rows per query (keyset
    pagination on the id), since `since` and for `version_ids` when given."""
    e, v, m = AnalyticsEvent, ModelVersion, Model
    ids = list(version_ids) if version_ids is not None else None
    where = [*([e.created_at >= since] if since is not None else []),
             *([e.model_version_id.in_(ids)] if ids is not None else [])]
    last = 0
    while True:
        with db.session() as session:
            rows = session.execute(
                select(e, m.name, v.revision).outerjoin(v, v.id == e.model_version_id).outerjoin(m, m.id == v.model_id)
                .where(e.id > last, *where).order_by(e.id).limit(page)
            ).all()
            found = [_exported(event, name, revision) for event, name, revision in rows]
        yield from found
        if len(found) < page:
            return
        last = found[-1]["id"]


def _exported(event: AnalyticsEvent, model: str | None, revision: str | None) -> dict[str, Any]:
    details = event.details or {}
    at = event.created_at if event.created_at.tzinfo else event.created_at.replace(tzinfo=timezone.utc)
    return {
        "id": event.id, "at": at.isoformat(), "event_type": event.event_type, "model": model, "revision": revision,
        "model_version_id": event.model_version_id, "user_key": event.user_key, "session_id": event.session_id,
        "message_id": event.message_id, "backend": event.backend, "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens, "ttft_ms": event.ttft_ms, "total_ms": event.total_ms,
        "tokens_per_s": event.tokens_per_s, "failed": bool(details.get("failed", False)),
        "source": details.get("source", "modelbay"), "external_session": details.get("session"),
    }


def csv_cell(value: Any) -> Any:
    """A value made safe for a spreadsheet: text starting with = + - @, a tab or a carriage return gets a leading
    `'` so that it is read as text, not run as a formula (OWASP, "CSV Injection"); other values are unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The rows as CSV (the csv module's quoting, a header line first), one string per line; None is empty. Text
    that a spreadsheet would run as a formula is neutralised (`csv_cell`); JSON Lines keeps values as they are."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_cell(value) for key, value in row.items()})
        if buffer.tell() >= 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The rows as JSON Lines: one JSON object per line, keys as `EXPORT_FIELDS`."""
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class TrackedEvent:
    """An answer a model gave outside ModelBay, as the seed's `trackEvent` describes it (times in ms)."""

    model: str
    user_id: str
    session_id: str | None
    event_type: str  # inference_complete, or inference_error for an answer that failed
    input_tokens: int | None
    output_tokens: int | None
    response_ms: float

    @property
    def user_key(self) -> str:
        """The person's key in analytics: the caller's own id, marked as coming from outside."""
        return f"external:{self.user_id}"


def track(analytics: Analytics, registry: Registry, event: TrackedEvent) -> VersionRecord | None:
    """Record a tracked answer against the model's version (its newest installed one, else its newest, else a
    `main` version registered for it) through `Analytics.record_answers`; return that version, or None when
    the person opted out of being measured (nothing is stored).

    Raises:
        ModelNotFound: the registry has no model of that name or repo id.
    """
    model = registry.get(event.model)
    if analytics.opted_out(event.user_key):
        return None
    installed = [v for v in model.versions if v.install_state == "installed"]
    version = (installed or model.versions or [None])[-1] or registry.add_version(model.id, "main")
    analytics.record_answers([AnswerEvent(
        model_version_id=version.id, user_key=event.user_key, session_id=None, message_id=None,
        backend=TRACKED_BACKEND, input_tokens=event.input_tokens, output_tokens=event.output_tokens, ttft_ms=None,
        total_ms=event.response_ms, failed=event.event_type == "inference_error", measured=False,
        details={"source": "trackEvent", **({"session": event.session_id} if event.session_id else {})},
    )])
    return version
