"""The shape of job progress: `ProgressDetail` (what a job measures) and `ProgressEvent` (one report of it).

A detail is written the same way on the pub/sub channel and in the job row's `progress_detail` column: a JSON
object of the fields given, plus any other names a job kind sends. A stored row of any age reads back (names
this code does not know land in `extra`). It also reads as a mapping of those names, as the JSON object does.
Kinds that measure more (training's step and loss, an optimizer's trials) subclass it with their own fields
and read an event's detail with `TheirDetail.of(event.detail)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TERMINAL", "ProgressDetail", "ProgressEvent"]

TERMINAL = frozenset({"finished", "failed", "canceled"})


@dataclass(frozen=True, eq=False)
class ProgressDetail(Mapping[str, Any]):
    """What a job reports beside its fraction and message; every field is optional.

    A field given as None stays on the wire as null (an `eta` of null: not known yet); one not given is absent.
    """

    phase: str | None = None  # the step the job is in ("download", "install", "starting", "running"); a new
    # phase is published at once
    bytes: int | None = None  # bytes done
    total: int | None = None  # bytes in all
    rate: float | None = None  # bytes per second, over the last few seconds
    eta: float | None = None  # seconds left at that rate
    endpoint: str | None = None  # where a model server answers
    ready: bool | None = None  # a long-lived job (a model server) is up: watchers stop following it
    message: str | None = None  # the job's latest message (the stored row keeps it here)
    retry_at: str | None = None  # when a scheduled retry runs (ISO 8601, UTC)
    extra: Mapping[str, Any] = field(default_factory=dict)  # anything else a job kind sends, under its names
    _nulls: frozenset[str] = field(default=frozenset(), repr=False)  # fields given as None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names of the typed fields (a subclass's included), in order."""
        return _names(cls)

    @classmethod
    def of(cls, values: Mapping[str, Any] | None = None, /, **more: Any) -> ProgressDetail:
        """Read a detail from its JSON object (or keyword arguments): known names as fields, others in `extra`."""
        given = {**(values or {}), **more}
        names = cls.names()
        typed = {k: v for k, v in given.items() if k in names}
        return cls(**typed, extra={k: v for k, v in given.items() if k not in names},
                   _nulls=frozenset(k for k, v in typed.items() if v is None))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written on the channel and in the row."""
        return dict(self.items())

    def __getitem__(self, name: str) -> Any:
        if name in self.names():
            value = getattr(self, name)
            if value is not None or name in self._nulls:
                return value
            raise KeyError(name)
        return self.extra[name]

    def __iter__(self) -> Iterator[str]:
        names = self.names()
        for name in names:
            if getattr(self, name) is not None or name in self._nulls:
                yield name
        yield from (k for k in self.extra if k not in names)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # equal to dicts, which are not hashable


@functools.cache
def _names(cls: type[ProgressDetail]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "_nulls"))


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of a job, as published on its channel: status, fraction done (0..1), message, detail."""

    job_id: str
    status: str
    progress: float
    message: str | None = None
    detail: ProgressDetail = field(default_factory=ProgressDetail)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.status in TERMINAL

    def to_json(self) -> str:
        """Serialize for the pub/sub channel."""
        return json.dumps(
            {"job_id": self.job_id, "status": self.status, "progress": self.progress,
             "message": self.message, "detail": self.detail.to_dict()}
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> ProgressEvent:
        """Parse a channel message."""
        raw = json.loads(data)
        return cls(raw["job_id"], raw["status"], raw["progress"], raw.get("message"),
                   ProgressDetail.of(raw.get("detail") or {}))
