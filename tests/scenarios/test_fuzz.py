"""Fuzzing the dispatcher: thousands of hostile lines and typed options, each answered in one bounded, clean line.

A fixed seed makes a failure repeat; the time each run may take is bounded, not the number of lines, so a slow
machine checks fewer lines instead of timing out.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import time
import unicodedata
from typing import Any

import pytest

from modelbay.bot import COMMANDS, Actor, Dispatcher, Reply
from modelbay.bot.errors import ERRORS
from modelbay.bot.spec import ArgType
from modelbay.runtime import Runtime

SEED = 20261130
BUDGET = 6.0  # seconds of fuzzing per test, enough for a few thousand lines on a quiet machine
ERROR_LINE = 500  # an error line stays this short: echoed values are cut to about 80 characters each
ADMIN = Actor("console", "root")
ALICE = Actor("slack", "U1", "alice")
ERROR_TITLES = {style.title for style in ERRORS.values()}

HOSTILE = [
    "", " ", "\x00", "a\x00b", "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "a\nb", "a\r\nb", "\x85", "\u2028", "\u2029",
    "\udc7a", "\ud800x", "x\udfff", "\u202eevil", "\t", "\x7f", "`", "``", "`/models`", "'", '"', "\\", "'unclosed",
    "x" * 50_000, "9" * 5_000, "💥" * 1_000, str(2**63), str(-(2**63) - 1), str(2**64), "-1", "0", "1.5", "1e309",
    "nan", "inf", "-inf", "١٢٣", "１２", "true", "maybe", "--", "--force", "--limit", "-", "a/b", "../..", "/etc/passwd",
    "C:\\x", "http://evil.example/x", "qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "up", "down",
    "helpful", "wrong", "chat", "message:1", "message:\udc7a", "limit:99999999999999999999", "page:0", "all:true",
    "category:code", "force:true", "<!channel>", "@everyone", "*bold*", "%s%n", "{0}", "null", "[]",
]


def _random_text(rng: random.Random) -> str:
    size = rng.choice((1, 2, 8, 40, 300))
    ranges = ((0, 0x20), (0x20, 0x7F), (0x80, 0x100), (0x100, 0x3000), (0xD800, 0xE000), (0x1F300, 0x1F700))
    return "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(size))


def _value(rng: random.Random) -> str:
    return rng.choice(HOSTILE) if rng.random() < 0.7 else _random_text(rng)


def _line(rng: random.Random, paths: list[tuple[str, ...]]) -> str:
    path = list(rng.choice(paths))
    if rng.random() < 0.05:
        path = [_value(rng)]
    cmd = COMMANDS.get(tuple(path))
    tokens: list[str] = []
    for _ in range(rng.randrange(0, 5)):
        value = _value(rng)
        if cmd is not None and cmd.args and rng.random() < 0.4:
            value = f"{rng.choice(cmd.args).name}:{value}"
        tokens.append(shlex.quote(value) if rng.random() < 0.6 else value)
    return "/" + " ".join(path + tokens)


def _options(rng: random.Random, cmd_path: tuple[str, ...]) -> dict[str, Any]:
    cmd = COMMANDS.get(cmd_path)
    names = [a.name for a in cmd.args] if cmd else []
    options: dict[str, Any] = {}
    for name in rng.sample(names, k=rng.randrange(0, len(names) + 1)):
        options[name] = rng.choice([_value(rng), rng.choice([2**63, -(2**63), 2**200, 0, -1]),
                                    float("nan"), float("inf"), 1e308, True, False, None])
    if rng.random() < 0.05:
        options[_value(rng)] = _value(rng)
    return options


def _strings(reply: Reply) -> list[str]:
    found = [reply.text or "", reply.title or "", reply.footer or ""]
    found += [part for f in reply.fields for part in (f.name, f.value)]
    if reply.table is not None:
        found += [str(cell) for row in reply.table.rows for cell in row]
    return found


def _raw(text: str) -> list[str]:
    """The characters of text that a chat or terminal would not show as written (control, surrogate, line breaks)."""
    hidden = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c == "\u202e"]
    return [c for c in hidden if c != "\n"]  # a reply's own layout may break lines; an error's may not (below)


def _check(reply: Reply, what: str) -> None:
    assert reply.title != "Unexpected error", what
    for text in _strings(reply):
        text.encode("utf-8")  # a lone surrogate would fail here, as it fails Slack's and Discord's JSON
        assert not _raw(text), (what, text[:200])
    if reply.title in ERROR_TITLES:
        assert "\n" not in reply.text and len(reply.text) <= ERROR_LINE, (what, reply.text[:600])


@pytest.fixture
def runtime(settings) -> Runtime:
    settings.roles = {"admin": ["console:*"]}
    settings.hub_endpoint = "http://127.0.0.1:9"  # nothing listens: a pre-flight that gets that far fails at once
    runtime = Runtime(settings)
    runtime.prepare()
    yield runtime
    runtime.close()


# Commands that wait on something outside whatever they are given: search on each source's deadline, the hardware
# view on a GPU worker's probe. Their arguments go through the same checks as every other command's.
WAITING = {("models", "search"), ("system", "hardware")}


def _paths() -> list[tuple[str, ...]]:
    return [cmd.path for cmd in COMMANDS if cmd.path not in WAITING]


def test_hostile_lines_get_one_clean_line_each(runtime: Runtime) -> None:
    rng = random.Random(SEED)
    dispatcher = Dispatcher(runtime, reraise_unknown=True)  # an unknown error fails the test with its traceback
    paths = _paths()

    async def fuzz() -> int:
        count = 0
        deadline = time.monotonic() + BUDGET
        while time.monotonic() < deadline:
            for _ in range(50):
                line = _line(rng, paths)
                actor = ADMIN if rng.random() < 0.5 else ALICE
                _check(await dispatcher.dispatch_line(line, actor), ascii(line[:300]))
                count += 1
        return count

    assert asyncio.run(fuzz()) >= 200


def test_hostile_typed_options_get_one_clean_line_each(runtime: Runtime) -> None:
    rng = random.Random(SEED + 1)
    dispatcher = Dispatcher(runtime, reraise_unknown=True)
    paths = _paths()

    async def fuzz() -> int:
        count = 0
        deadline = time.monotonic() + BUDGET / 2
        while time.monotonic() < deadline:
            for _ in range(50):
                path = rng.choice(paths)
                options = _options(rng, path)
                _check(await dispatcher.dispatch(path, options, ADMIN), ascii((path, options))[:300])
                count += 1
        return count

    assert asyncio.run(fuzz()) >= 100


@pytest.mark.parametrize("value", ["\x1b[2J\x1b[31mred", "line\nbreak", "x" * 50_000, "\udc7a", "\u202eevil", "9" * 5000])
def test_every_argument_of_every_command_refuses_or_bounds_hostile_text(runtime: Runtime, value: str) -> None:
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    async def each() -> None:
        for cmd in COMMANDS:
            if cmd.path in WAITING:
                continue
            for arg in cmd.args:
                options = {a.name: "qwen2.5-0.5b-instruct" for a in cmd.args if a.required and a is not arg}
                if arg.choices:
                    options = {**options, **{a.name: a.choices[0] for a in cmd.args if a.required and a.choices
                                             and a is not arg}}
                reply = await dispatcher.dispatch(cmd.path, {**options, arg.name: value}, ADMIN)
                _check(reply, f"{cmd.name} {arg.name}")
                line = f"{cmd.name} {arg.name}:{shlex.quote(value)}"
                _check(await dispatcher.dispatch_line(line, ADMIN), f"{cmd.name} {arg.name} (line)")

    asyncio.run(each())


def test_every_numeric_argument_is_bounded() -> None:
    # A number without bounds reaches the database as given: 2**64 overflows SQLite and PostgreSQL's bigint.
    numeric = [(cmd.name, a) for cmd in COMMANDS for a in cmd.args if a.type in (ArgType.INTEGER, ArgType.NUMBER)]
    assert numeric
    for name, arg in numeric:
        assert arg.min is not None and arg.max is not None and arg.max <= 2**53, f"{name} {arg.name}"
