"""The id and path checks: only real traversal is refused, and every refusal echoes the value as one short line."""

from __future__ import annotations

import pytest

from modelbay.engine.ids import InvalidId, validate_file_path, validate_model_name, validate_repo_id, validate_revision

GOOD_PATHS = [
    "model.safetensors",
    "docs/thanks...md",  # dots inside a name are not a path component
    "a..b/c",
    "notes/..hidden",
    "..config",
    "...",
    ".gitattributes",
    "tokenizer/vocab.txt",
    "deep/" * 100 + "file.json",
    "x" * 255,
    "ü" * 126 + ".md",  # 255 bytes in UTF-8: the most a name may have
    "spaces and (brackets) [1].txt",
    "C:notes.txt",  # a drive letter means nothing to a POSIX store
    "~tilde.txt",
]

BAD_PATHS = {
    "..": "'..' may not be a part of it",
    "../etc/passwd": "'..' may not be a part of it",
    "a/../../b": "'..' may not be a part of it",
    "a/..": "'..' may not be a part of it",
    "/etc/passwd": "absolute paths are not accepted",
    "//server/share": "absolute paths are not accepted",
    "a\\b.txt": "it may not contain backslashes",
    "..\\..\\windows": "it may not contain backslashes",
    "model\x00.safetensors": "it contains a NUL byte",
    "x" * 5000: "it is longer than 1024 characters",
    "x" * 256: "a part of it is longer than 255 bytes",
    "ü" * 128: "a part of it is longer than 255 bytes",
    "a//b": "it has an empty or '.' part",
    "./a": "it has an empty or '.' part",
    "a/": "it has an empty or '.' part",
    "": "it has an empty or '.' part",
    "line\nbreak.md": "it contains control characters",
    "\x1b[31mred.md": "it contains control characters",
    "del\x7f.md": "it contains control characters",
    # Invisible or direction-changing (unicode category Cf): a name that reads as another.
    "notes/\u202etxt.exe": "it contains invisible or direction-changing characters",  # right-to-left override
    "model\u200b.safetensors": "it contains invisible or direction-changing characters",  # zero-width space
    "config\u200d.json": "it contains invisible or direction-changing characters",  # zero-width joiner
    "\ufeffconfig.json": "it contains invisible or direction-changing characters",  # byte order mark
    "a\u2066b\u2069.md": "it contains invisible or direction-changing characters",  # isolates
    "soft\u00adhyphen.md": "it contains invisible or direction-changing characters",
}


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_good_paths_pass(path: str) -> None:
    assert validate_file_path(path) == path


@pytest.mark.parametrize(("path", "reason"), BAD_PATHS.items(), ids=[repr(p[:20]) for p in BAD_PATHS])
def test_bad_paths_are_refused_in_one_short_line(path: str, reason: str) -> None:
    with pytest.raises(InvalidId) as caught:
        validate_file_path(path)
    assert caught.value.reason == reason
    message = str(caught.value)
    assert "\n" not in message and "\x00" not in message and "\x1b" not in message and "\u202e" not in message
    assert len(message) < 250


@pytest.mark.parametrize("repo_id", ["Qwen/Qwen2.5-0.5B-Instruct", "a/b", "tiny-org/tiny.llama_2"])
def test_good_repo_ids(repo_id: str) -> None:
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize("repo_id", ["a/b..c", "../etc/passwd", "/etc/passwd", "a/b/c", "a\\b", "a/b\x00",
                                     "https://evil.example/x/y", "~/x", "C:\\models\\x", "C:/x", "a", "-a/b"])
def test_bad_repo_ids(repo_id: str) -> None:
    with pytest.raises(InvalidId):
        validate_repo_id(repo_id)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "a" * 40, "release/2024.01"])
def test_good_revisions(revision: str) -> None:
    assert validate_revision(revision) == revision


@pytest.mark.parametrize("revision", ["../../main", "a..b", "main/", "a//b", "/main", "ma\x00in", "http://x"])
def test_bad_revisions(revision: str) -> None:
    with pytest.raises(InvalidId):
        validate_revision(revision)


@pytest.mark.parametrize("name", ["tiny-chat-support", "Qwen2.5-0.5B-tuned", "a", "x_", "v1.2", "x" * 96])
def test_a_model_name_is_one_part_of_a_repo_id(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("owner/name", "it must be letters, digits"), ("-lead", "it must be letters, digits"),
    ("trail-", "it must be letters, digits"), ("x" * 97, "it must be letters, digits"),
    ("a b", "it must be letters, digits"), ("../up", "'..' may not be a part of it"),
    ("a..b", "it may not contain '..'"),
    ("https://x", "URLs are not accepted"), ("~me", "absolute paths are not accepted"), ("", "it must be letters"),
])
def test_a_model_name_that_is_not_one_is_refused_in_one_line(name: str, reason: str) -> None:
    with pytest.raises(InvalidId) as refused:
        validate_model_name(name)
    assert "is not a valid model name: " + reason in str(refused.value) and "\n" not in str(refused.value)
