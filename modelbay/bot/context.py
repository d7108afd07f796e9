"""Who is asking and where: the actor, and the context a command handler runs with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from modelbay.config import ROLES
from modelbay.engine.chat.records import Place
from modelbay.engine.errors import NoChatHere, NotAllowed
from modelbay.engine.records import JobRecord

if TYPE_CHECKING:
    from modelbay.runtime import Runtime

__all__ = ["Actor", "Context"]

T = TypeVar("T")


@dataclass(frozen=True)
class Actor:
    """A person on a platform, with the platform groups (Discord roles, Slack user groups) they belong to."""

    platform: str
    user_id: str
    display_name: str = ""
    groups: tuple[str, ...] = ()  # e.g. ("role:1234",) on Discord, ("group:S0123",) on Slack

    @property
    def key(self) -> str:
        """The stable identity stored with jobs and chats, e.g. 'slack:U123'."""
        return f"{self.platform}:{self.user_id}"

    def identities(self) -> list[str]:
        """Every identity a role map entry may name for this actor."""
        return [self.key, f"{self.platform}:*", *(f"{self.platform}:{g}" for g in self.groups)]

    def role(self, role_map: dict[str, list[str]], default: str) -> str:
        """Return the highest role the role map grants this actor, or the default when it names them nowhere."""
        mine = set(self.identities())
        granted = [role for role, members in role_map.items() if mine & set(members)]
        return max(granted, key=ROLES.index) if granted else default


@dataclass(frozen=True)
class Context:
    """What a handler gets: the runtime, the actor, their role, and where they are (for chats)."""

    runtime: Runtime
    actor: Actor
    role: str
    place: Place | None = None

    def where(self) -> Place:
        """The place this command came from; commands about chats need one."""
        if self.place is None:
            raise NoChatHere()
        return self.place

    def has_role(self, role: str) -> bool:
        """Whether the actor's role includes role."""
        return ROLES.index(self.role) >= ROLES.index(role)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous engine call off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def cancel_job(self, job_id: str, *, force: bool) -> JobRecord:
        """Cancel a job if the actor may: their own, or anyone's as an admin; only admins force."""
        record = await self.call(self.runtime.jobs.get, job_id)
        if record.requester != self.actor.key and not self.has_role("admin"):
            raise NotAllowed(f"cancelling another person's job {job_id}", self.role, "admin")
        if force and not self.has_role("admin"):
            raise NotAllowed("force-cancelling a job", self.role, "admin")
        return await self.call(self.runtime.jobs.cancel, job_id, force=force)
