"""Validation of model ids, revisions and repo file paths, before any I/O touches them."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from modelbay.engine.errors import ModelBayError, shown

__all__ = ["InvalidId", "is_repo_id", "validate_file_path", "validate_repo_id", "validate_revision"]

_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


class InvalidId(ModelBayError):
    """A model id, revision or file path that could reach outside the model store or the hub."""

    def __init__(self, kind: str, value: str, reason: str, example: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"`{shown(value)}` is not a valid {kind}: {reason}. Use {example}.")


def _common(kind: str, value: str, example: str) -> None:
    if "\x00" in value:
        raise InvalidId(kind, value, "it contains a NUL byte", example)
    if "://" in value or value.lower().startswith(("file:", "http:", "https:")):
        raise InvalidId(kind, value, "URLs are not accepted", example)
    if value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value):
        raise InvalidId(kind, value, "absolute paths are not accepted", example)
    if ".." in value.split("/") or "\\" in value or ".." in value:
        raise InvalidId(kind, value, "it may not contain '..' or backslashes", example)


def validate_repo_id(value: str) -> str:
    """Return value if it is a Hugging Face style owner/name id, else raise InvalidId."""
    example = "owner/name, e.g. Qwen/Qwen2.5-0.5B-Instruct"
    _common("model id", value, example)
    parts = value.split("/")
    if len(parts) != 2 or not all(_PART.match(p) for p in parts):
        raise InvalidId("model id", value, "it must be owner/name with letters, digits, '.', '_' or '-'", example)
    return value


def is_repo_id(value: str) -> bool:
    """Whether value looks like owner/name (without raising)."""
    try:
        validate_repo_id(value)
    except InvalidId:
        return False
    return True


def validate_revision(value: str) -> str:
    """Return value if it is a branch, tag or commit sha, else raise InvalidId."""
    example = "a branch, tag or 40-character commit sha, e.g. main"
    _common("revision", value, example)
    if not (_SHA.match(value) or _REVISION.match(value)) or value.endswith("/") or "//" in value:
        raise InvalidId("revision", value, "it has characters a git ref cannot have", example)
    return value


def validate_file_path(value: str) -> str:
    """Return value if it is a relative path inside a repo, else raise InvalidId."""
    example = "a relative path such as model.safetensors"
    _common("file path", value, example)
    path = PurePosixPath(value)
    if path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise InvalidId("file path", value, "it must stay inside the model's folder", example)
    return value
