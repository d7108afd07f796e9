"""Validation of model ids, revisions and repo file paths, before any I/O touches them."""

from __future__ import annotations

import re
import unicodedata

from modelbay.engine.errors import InvalidId

__all__ = ["MAX_PATH_CHARS", "MAX_PATH_PART_BYTES", "InvalidId", "is_repo_id", "validate_file_path",
           "validate_model_name", "validate_repo_id", "validate_revision"]

_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
# Most file systems cap a name at 255 bytes; a repo path longer than this is no model file but an attack.
MAX_PATH_PART_BYTES = 255
MAX_PATH_CHARS = 1024


def _traversal(kind: str, value: str, example: str) -> None:
    """Refuse what could step outside a folder: NUL, backslashes, absolute paths and `..` components."""
    if "\x00" in value:
        raise InvalidId(kind, value, "it contains a NUL byte", example)
    if "\\" in value:
        raise InvalidId(kind, value, "it may not contain backslashes", example)
    if value.startswith("/"):
        raise InvalidId(kind, value, "absolute paths are not accepted", example)
    if ".." in value.split("/"):
        raise InvalidId(kind, value, "'..' may not be a part of it", example)


def _id(kind: str, value: str, example: str) -> None:
    """Refuse, in a model id or revision, traversal plus URLs, home and drive paths, and '..' anywhere."""
    _traversal(kind, value, example)
    if "://" in value or value.lower().startswith(("file:", "http:", "https:")):
        raise InvalidId(kind, value, "URLs are not accepted", example)
    if value.startswith("~") or re.match(r"^[A-Za-z]:", value):
        raise InvalidId(kind, value, "absolute paths are not accepted", example)
    if ".." in value:  # neither the hub's repo names nor git refs may contain it
        raise InvalidId(kind, value, "it may not contain '..'", example)


def validate_repo_id(value: str) -> str:
    """Return value if it is a Hugging Face style owner/name id, else raise InvalidId."""
    example = "owner/name, e.g. Qwen/Qwen2.5-0.5B-Instruct"
    _id("model id", value, example)
    parts = value.split("/")
    if len(parts) != 2 or not all(_PART.match(p) for p in parts):
        raise InvalidId("model id", value, "it must be owner/name with letters, digits, '.', '_' or '-'", example)
    return value


def validate_model_name(value: str) -> str:
    """Return value if it can name a model ModelBay makes (a fine-tune), else raise InvalidId.

    A name follows the rules of one part of a repo id (letters, digits, '.', '_' and '-', starting with a letter or
    digit and ending with one or '_', at most 96 characters), so it is also a folder name in the model store.
    """
    example = "letters, digits, '.', '_' or '-', e.g. tiny-chat-support"
    _id("model name", value, example)
    if not _PART.match(value):
        raise InvalidId("model name", value, "it must be letters, digits, '.', '_' or '-' (at most 96), "
                                             "starting with a letter or digit", example)
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
    _id("revision", value, example)
    if not (_SHA.match(value) or _REVISION.match(value)) or value.endswith("/") or "//" in value:
        raise InvalidId("revision", value, "it has characters a git ref cannot have", example)
    return value


def validate_file_path(value: str) -> str:
    """Return value if it is a relative path that stays inside a model's folder, else raise InvalidId.

    Dots inside a name (`docs/thanks...md`) are fine; only a `..` component steps out. Control characters, invisible
    and direction-changing characters, and names longer than a file system holds are refused too: they are never a
    model's file, only a way in or a disguise.
    """
    example = "a relative path such as model.safetensors"
    _traversal("file path", value, example)
    if len(value) > MAX_PATH_CHARS:
        raise InvalidId("file path", value, f"it is longer than {MAX_PATH_CHARS} characters", example)
    parts = value.split("/")
    if any(part in ("", ".") for part in parts):
        raise InvalidId("file path", value, "it has an empty or '.' part", example)
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_PART_BYTES for part in parts):
        raise InvalidId("file path", value, f"a part of it is longer than {MAX_PATH_PART_BYTES} bytes", example)
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidId("file path", value, "it contains control characters", example)
    # Bidi overrides and zero-width characters (category Cf) make a name read as another: `\u202etxt.exe`.
    if any(unicodedata.category(char) == "Cf" for char in value):
        raise InvalidId("file path", value, "it contains invisible or direction-changing characters", example)
    return value
