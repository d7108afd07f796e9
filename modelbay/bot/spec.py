"""The one command spec: every adapter builds its surface (slash commands, REPL, routes) from it."""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from modelbay.bot.errors import ArgumentInvalid, UnknownCommand
from modelbay.engine.errors import shown

if TYPE_CHECKING:
    from modelbay.bot.reply import Reply

__all__ = [
    "COMMANDS",
    "Arg",
    "Parsed",
    "ArgType",
    "ArgumentInvalid",
    "Command",
    "CommandSet",
    "UnknownCommand",
    "command",
]

Handler = Callable[..., Awaitable["Reply"]]
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


class ArgType(str, Enum):
    """The type of an argument, as platforms declare option types."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class Arg:
    """One argument of a command."""

    name: str
    help: str
    type: ArgType = ArgType.STRING
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    max_length: int = 200
    autocomplete: Literal["model", "job"] | None = None
    rest: bool = False  # takes the rest of the line (free text such as a system prompt)
    named: bool = False  # given only as name:value, never by position (a number after free words is ambiguous)
    # A rest argument whose words that held spaces or quotes come back shell-quoted, so its handler can tell a quoted
    # `"a | b"` from `a | b` (the line parser removes quotes; platform options keep them as typed).
    keep_quotes: bool = False

    def expected(self) -> str:
        """Describe the accepted form in a few words."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is ArgType.BOOLEAN:
            return "true or false"
        if self.type in (ArgType.INTEGER, ArgType.NUMBER):
            kind = "a whole number" if self.type is ArgType.INTEGER else "a number"
            if self.min is not None and self.max is not None:
                return f"{kind} from {_number(self.min)} to {_number(self.max)}"
            return kind
        return f"text of at most {self.max_length} characters"

    def convert(self, command: Command, raw: Any) -> Any:
        """Turn a raw value (text from a line or a typed platform option) into the argument's value."""
        if self.type is ArgType.BOOLEAN:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ArgumentInvalid(command, self.name, f"must be true or false (got '{shown(raw)}')")
        if self.type in (ArgType.INTEGER, ArgType.NUMBER):
            try:
                value: float = int(str(raw)) if self.type is ArgType.INTEGER else float(str(raw))
            except ValueError:  # also a number of more than 4,300 digits
                raise ArgumentInvalid(command, self.name, f"must be {self.expected()} (got '{shown(raw)}')") from None
            if (not math.isfinite(value) or (self.min is not None and value < self.min)
                    or (self.max is not None and value > self.max)):
                raise ArgumentInvalid(command, self.name, f"must be {self.expected()} (got {shown(raw)})")
            return value
        text = str(raw).strip()
        if "\x00" in text:
            raise ArgumentInvalid(command, self.name, "must not contain NUL characters")
        if not _is_utf8(text):
            raise ArgumentInvalid(command, self.name, "must be valid UTF-8 text (it has a lone surrogate)")
        if len(text) > self.max_length:
            raise ArgumentInvalid(command, self.name, f"must be at most {self.max_length} characters")
        if self.choices and text.lower() not in self.choices:
            raise ArgumentInvalid(command, self.name, f"must be {self.expected()} (got '{shown(text)}')")
        return text.lower() if self.choices else text


@dataclass(frozen=True)
class Command:
    """A command: its path (group and name), arguments, help, required role and handler."""

    path: tuple[str, ...]
    help: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    role: Literal["viewer", "user", "trainer", "admin"] = "viewer"
    aliases: tuple[tuple[str, ...], ...] = ()
    slow: bool = False  # adapters defer (show that it is working) before running it
    opens_thread: bool = False  # adapters open a thread for it (where they can) and run it there

    @property
    def name(self) -> str:
        """The command as typed, e.g. '/models list'."""
        return "/" + " ".join(self.path)

    @property
    def usage(self) -> str:
        """A one-line synopsis, e.g. '/models list [category] [limit:N]'."""
        parts = [self.name]
        for arg in self.args:
            token = arg.name if arg.type is not ArgType.INTEGER else f"{arg.name}:N"
            if arg.type is ArgType.BOOLEAN:
                token = f"{arg.name}:true|false"
            parts.append(f"<{token}>" if arg.required else f"[{token}]")
        return " ".join(parts)

    def bind(self, positional: list[str], named: dict[str, Any]) -> dict[str, Any]:
        """Match raw positional and named values to arguments, converting and validating each."""
        known = {a.name: a for a in self.args}
        for key in named:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean `{close[0]}`" if close else f"; {self.name} takes {', '.join(known) or 'no arguments'}"
                raise ArgumentInvalid(self, key, f"is not an argument of {self.name}{hint}")
        values: dict[str, Any] = {}
        queue = list(positional)
        for arg in self.args:
            if arg.name in named:
                raw = named[arg.name]
            elif queue and arg.type is not ArgType.BOOLEAN and not arg.named:  # flags are named (--installed)
                raw = _rest(queue, arg.keep_quotes) if arg.rest else queue.pop(0)
                if arg.rest:
                    queue = []
            elif arg.required:
                raise ArgumentInvalid(self, arg.name, f"is missing ({arg.help.rstrip('.').lower()})")
            else:
                values[arg.name] = arg.default
                continue
            values[arg.name] = arg.convert(self, raw)
        if queue:
            raise ArgumentInvalid(self, queue[0], f"is one argument too many for {self.name}")
        return values


class Parsed(NamedTuple):
    """A typed line parsed: its command and the converted values of its arguments, by name."""

    command: Command
    values: dict[str, Any]


class CommandSet:
    """The registry of commands; built-in commands register the same way extensions do."""

    def __init__(self) -> None:
        self._commands: dict[tuple[str, ...], Command] = {}
        self._aliases: dict[tuple[str, ...], Command] = {}

    def add(self, cmd: Command) -> Command:
        """Register a command (replacing one with the same path)."""
        self._commands[cmd.path] = cmd
        for alias in cmd.aliases:
            self._aliases[alias] = cmd
        return cmd

    def __iter__(self) -> Iterable[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: c.path))

    def get(self, path: tuple[str, ...]) -> Command | None:
        """Return the command at path (or an alias of it)."""
        return self._commands.get(path) or self._aliases.get(path)

    def parse(self, line: str, more: dict[str, Any] | None = None) -> Parsed:
        """Parse a typed line like '/models list chat limit:5' into its command and bound arguments.

        `more` adds named values that did not come on the line (what a form asked for before a button ran it).
        Raises UnknownCommand or ArgumentInvalid.
        """
        text = line.strip()
        if not text.startswith("/"):
            raise UnknownCommand(text[:40], "/help")
        try:
            tokens = shlex.split(text[1:])
        except ValueError:
            raise UnknownCommand(text[:40], None) from None
        if not tokens:
            raise UnknownCommand("/", "/help")
        words = [t.lower() for t in tokens]
        for size in (2, 1):
            cmd = self.get(tuple(words[:size]))
            if cmd is not None and len(words) >= size:
                positional, named = _split_args(cmd, tokens[size:])
                return Parsed(cmd, cmd.bind(positional, {**named, **(more or {})}))
        raise UnknownCommand("/" + " ".join(tokens[:2]), self.suggest(" ".join(words[:2])))

    def suggest(self, typed: str) -> str | None:
        """Return the command nearest to what was typed."""
        names = {" ".join(c.path): c.name for c in self}
        names.update({" ".join(a): "/" + " ".join(a) for a in self._aliases})
        close = difflib.get_close_matches(typed, list(names), n=1, cutoff=0.5)
        if not close and " " in typed:
            close = difflib.get_close_matches(typed.split()[0], list(names), n=1, cutoff=0.5)
        return names[close[0]] if close else None


def _split_args(cmd: Command, tokens: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split tokens into positional values and name:value / name=value / --name value pairs."""
    names = {a.name: a for a in cmd.args}
    positional: list[str] = []
    named: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--") and len(token) > 2:
            key, sep, value = token[2:].partition("=")
            arg = names.get(key)
            if not sep:
                if arg is not None and arg.type is ArgType.BOOLEAN:
                    value = "true"
                elif i + 1 < len(tokens):
                    i += 1
                    value = tokens[i]
                else:
                    raise ArgumentInvalid(cmd, key, "needs a value")
            named[key] = value
        elif (":" in token or "=" in token) and not token.startswith(("http:", "https:")):
            key, value = _pair(token)
            # A near miss of an argument name is a typo to report, not a value (model names may hold ':').
            if key in names or difflib.get_close_matches(key, names, n=1, cutoff=0.8):
                named[key] = value
            else:
                positional.append(token)
        else:
            positional.append(token)
        i += 1
    return positional, named


def _rest(words: list[str], keep_quotes: bool) -> str:
    """The words of a rest argument as one text; with keep_quotes, a word with whitespace or a quote in it (it was
    quoted or escaped on the line) is quoted again with shlex.quote."""
    if not keep_quotes:
        return " ".join(words)
    return " ".join(shlex.quote(w) if re.search(r"[\s'\"]", w) else w for w in words)


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"  # 2**53 reads 9,007,199,254,740,992


def _is_utf8(text: str) -> bool:
    """Whether text encodes as UTF-8 (a JSON payload's lone surrogate does not, and no database stores it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _pair(token: str) -> tuple[str, str]:
    colon, equals = token.find(":"), token.find("=")
    cut = min(i for i in (colon, equals) if i >= 0)
    return token[:cut], token[cut + 1 :]


COMMANDS = CommandSet()


def command(
    *path: str,
    help: str,
    args: tuple[Arg, ...] = (),
    role: Literal["viewer", "user", "trainer", "admin"] = "viewer",
    aliases: tuple[tuple[str, ...], ...] = (),
    slow: bool = False,
    opens_thread: bool = False,
    registry: CommandSet = COMMANDS,
) -> Callable[[Handler], Handler]:
    """Register the decorated async handler as a command."""

    def decorate(handler: Handler) -> Handler:
        registry.add(Command(tuple(path), help, handler, args, role, aliases, slow, opens_thread))
        return handler

    return decorate

