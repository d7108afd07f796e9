"""Chat messages for tests: one helper per role, and whether a conversation alternates as strict templates demand."""

from __future__ import annotations

__all__ = ["SYSTEM", "assistant", "roles_alternate", "system", "user"]

SYSTEM = "Answer briefly."


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str = SYSTEM) -> dict[str, str]:
    return {"role": "system", "content": text}


def roles_alternate(messages: list[dict[str, str]]) -> bool:
    """Whether the non-system turns start with the user and never repeat a role."""
    roles = [m["role"] for m in messages if m["role"] != "system"]
    return roles[:1] == ["user"] and all(a != b for a, b in zip(roles, roles[1:]))
