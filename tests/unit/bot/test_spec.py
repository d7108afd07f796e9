"""bot/spec.py on a command set of its own: a line parsed in every argument style (`CommandSet.parse`) and each
raw value converted and bounded (`Arg.convert`), refusals naming the argument and the command's usage."""

from __future__ import annotations

import pytest

from modelbay.bot.errors import ArgumentInvalid, UnknownCommand
from modelbay.bot.reply import Reply
from modelbay.bot.spec import Arg, ArgType, CommandSet, command

COMMANDS = CommandSet()


@command("things", "list", help="Lists things.", aliases=(("things",),), registry=COMMANDS, args=(
    Arg("kind", "Kind of thing.", choices=("big", "small")),
    Arg("limit", "How many.", ArgType.INTEGER, default=10, min=1, max=100),
    Arg("all", "Everyone's.", ArgType.BOOLEAN, default=False),
    Arg("ratio", "A share.", ArgType.NUMBER, min=0, max=1, named=True),
))
async def things(ctx, kind: str | None, limit: int, all: bool, ratio: float | None) -> Reply:  # noqa: ANN001, A002
    return Reply(text="")


@command("note", help="Keeps a note.", registry=COMMANDS, args=(
    Arg("model", "Model name.", required=True), Arg("text", "The note.", rest=True, max_length=20),
))
async def note(ctx, model: str, text: str | None) -> Reply:  # noqa: ANN001
    return Reply(text="")


def test_every_argument_style_binds_the_same_values() -> None:
    expected = {"kind": "big", "limit": 5, "all": True, "ratio": None}
    for line in ("/things list big 5 all:true", "/things list kind:big limit:5 --all",
                 "/THINGS LIST --kind big --limit=5 all=yes", "/things big 5 --all"):
        cmd, values = COMMANDS.parse(line)
        assert cmd.name == "/things list" and values == expected, line
    assert COMMANDS.parse("/things list").values == {"kind": None, "limit": 10, "all": False, "ratio": None}
    assert COMMANDS.parse("/things list ratio:0.25").values["ratio"] == 0.25


def test_free_text_takes_the_rest_of_the_line_and_a_value_with_a_colon_stays_a_value() -> None:
    assert COMMANDS.parse("/note org/model:v2 keep  it 'short'").values == {"model": "org/model:v2",
                                                                        "text": "keep it short"}
    assert COMMANDS.parse("/note https://example.com/x").values == {"model": "https://example.com/x", "text": None}


@pytest.mark.parametrize(("line", "said"), [
    ("/things list huge", "`kind` must be one of big, small (got 'huge')"),
    ("/things list limit:0", "`limit` must be a whole number from 1 to 100 (got 0)"),
    ("/things list limit:2.5", "`limit` must be a whole number from 1 to 100 (got '2.5')"),
    ("/things list all:maybe", "`all` must be true or false (got 'maybe')"),
    ("/things list ratio:nan", "`ratio` must be a number from 0 to 1 (got nan)"),
    ("/things list ratio:inf", "`ratio` must be a number from 0 to 1 (got inf)"),
    ("/things list big 5 0.5", "`0.5` is one argument too many for /things list"),  # ratio is given only by name
    ("/things list limt:5", "`limt` is not an argument of /things list; did you mean `limit`"),
    ("/note", "`model` is missing (model name)"),
    ("/note m " + "x" * 21, "`text` must be at most 20 characters"),
    ("/note 'a\x00b'", "`model` must not contain NUL characters"),
    ("/note a\udc7a", "`model` must be valid UTF-8 text"),
    ("/things list --limit", "`limit` needs a value"),
])
def test_a_bad_value_is_refused_naming_the_argument_and_the_usage(line: str, said: str) -> None:
    with pytest.raises(ArgumentInvalid) as refused:
        COMMANDS.parse(line)
    said_all = str(refused.value)
    assert said_all.startswith(said) and said_all.endswith(f"Usage: `{refused.value.command.usage}`")


def test_usage_shows_required_optional_numeric_and_flag_arguments() -> None:
    assert COMMANDS.get(("things",)).usage == "/things list [kind] [limit:N] [all:true|false] [ratio]"
    assert COMMANDS.get(("note",)).usage == "/note <model> [text]"


@pytest.mark.parametrize(("line", "suggestion"), [
    ("/thigns list", "/things list"), ("/nte", "/note"), ("things list", "/help"), ("/", "/help"),
    ("/note 'unclosed", None),
])
def test_an_unknown_command_suggests_the_nearest(line: str, suggestion: str | None) -> None:
    with pytest.raises(UnknownCommand) as unknown:
        COMMANDS.parse(line)
    assert unknown.value.suggestion == suggestion


def test_typed_platform_options_convert_like_text() -> None:
    cmd = COMMANDS.get(("things", "list"))
    assert cmd.bind([], {"limit": 7, "all": True, "kind": "BIG"}) == {"kind": "big", "limit": 7, "all": True,
                                                                      "ratio": None}
    limit = cmd.args[1]
    assert limit.convert(cmd, "42") == 42 and limit.expected() == "a whole number from 1 to 100"
    with pytest.raises(ArgumentInvalid, match="from 1 to 100"):
        limit.convert(cmd, "9" * 5000)  # more digits than int() takes
