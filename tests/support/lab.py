"""A runtime with two tiny models installed (`tiny-chat`, `tiny-base`) and a dispatcher for command lines: what the
experiment and arena scenario tests drive, as different people in different rooms."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from modelbay.bot import Actor, Dispatcher, Reply
from modelbay.config import Settings
from modelbay.engine.chat.records import Answered, Place
from modelbay.runtime import Runtime
from tests.support.chat import installed

__all__ = ["ADMIN", "Lab", "ask", "two_model_lab"]

ADMIN = Actor("console", "admin")


class Lab(Protocol):
    """Runs one command line as a person in a room; `.runtime` is the runtime behind it."""

    runtime: Runtime

    def __call__(self, line: str, actor: Actor = ADMIN, room: str = "lab") -> Reply: ...


@contextmanager
def two_model_lab(settings: Settings, database_url: str, chat_model: Path, base_model: Path, *, token: str,
                  **overrides: Any) -> Iterator[Lab]:
    """The lab on this database: greedy answers of at most 8 tokens unless `overrides` says otherwise, the console
    admin and every API caller (bearer `token`) admins."""
    settings.database_url = database_url
    settings.chat_temperature = 0.0
    settings.chat_max_tokens = 8
    for name, value in overrides.items():
        setattr(settings, name, value)
    settings.roles = {"admin": ["console:admin", "api:*"]}
    settings.api_token = SecretStr(token)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, chat_model, name="tiny-chat")
    installed(runtime.registry, base_model, name="tiny-base")
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str, actor: Actor = ADMIN, room: str = "lab") -> Reply:
        return asyncio.run(dispatcher.dispatch_line(line, actor, Place("console", room)))

    run.runtime = runtime  # type: ignore[attr-defined]
    try:
        yield run  # type: ignore[misc]
    finally:
        runtime.close()


def ask(runtime: Runtime, session_id: int, user: str, text: str) -> int:
    """Answer one message in a chat session as `user`; the answer's message id."""
    answered = [e for e in runtime.chats.answer(session_id, user, text) if isinstance(e, Answered)]
    return answered[0].answer.message_id
