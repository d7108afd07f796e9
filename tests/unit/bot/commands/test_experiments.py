"""/experiments start's variant and split syntax: quoted values keep their `|`, and malformed input is one line that
names the problem and the fix."""

from __future__ import annotations

import pytest

from modelbay.bot.commands.experiments import parse_split, parse_variants
from modelbay.bot.spec import COMMANDS
from modelbay.engine.errors import ExperimentInvalid
from modelbay.engine.experiments.experiments import VariantSpec


def _spec(model: str, temperature: float | None = None, max_tokens: int | None = None,
          system: str | None = None) -> VariantSpec:
    return VariantSpec(model=model, temperature=temperature, max_tokens=max_tokens, system_prompt=system)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a | b", [_spec("a"), _spec("b")]),
        ("a|b", [_spec("a"), _spec("b")]),  # no spaces needed around the separator
        ("Qwen/Qwen2.5-0.5B-Instruct | b", [_spec("Qwen/Qwen2.5-0.5B-Instruct"), _spec("b")]),
        ('a system:"You are | terse" | b', [_spec("a", system="You are | terse"), _spec("b")]),
        ("a system='He said \"hi\" | ok' | b", [_spec("a", system='He said "hi" | ok'), _spec("b")]),
        ('a system="x || y" temperature=0.2 | b', [_spec("a", 0.2, system="x || y"), _spec("b")]),
        # the unquoted form of before: the prompt runs to the next option or |
        ("a | a temperature=0.5 system=Answer briefly. max_tokens=64",
         [_spec("a"), _spec("a", 0.5, 64, "Answer briefly.")]),
        ("a system=Reply as JSON: {a:1} | b", [_spec("a", system="Reply as JSON: {a:1}"), _spec("b")]),
        ("a TEMPERATURE:1 max_tokens:8 | b", [_spec("a", 1.0, 8), _spec("b")]),
        ('a system:"" | b', [_spec("a"), _spec("b")]),  # an empty prompt is none
        ("a system:日本語で答えて | naïve-model system:«Réponds» 🙂",
         [_spec("a", system="日本語で答えて"), _spec("naïve-model", system="«Réponds» 🙂")]),
        ("a", [_spec("a")]),  # one variant: the engine says two are needed
    ],
)
def test_variants_parse(text: str, expected: list[VariantSpec]) -> None:
    assert parse_variants(text) == expected


def test_a_hundred_variants_parse_with_a_split_each() -> None:
    text = " | ".join(f"m{i} temperature={i / 100}" for i in range(100))
    specs = parse_variants(text)
    assert [s.model for s in specs] == [f"m{i}" for i in range(100)] and specs[99].temperature == 0.99
    assert parse_split("/".join(["1"] * 100), 100) == [1.0] * 100


@pytest.mark.parametrize(
    ("text", "problem", "fix"),
    [
        ('a system:"You are | terse | b', "quote is not closed", "close it"),
        ("a | | b", "variant 2: it is empty", "remove the extra |"),
        ("a || b", "variant 2: it is empty", "remove the extra |"),
        ("a | b |", "variant 3: it is empty", "remove the extra |"),
        ("| a", "variant 1: it is empty", "remove the extra |"),
        ("", "variant 1: it is empty", "give at least two variants"),
        ("temperature=0.2 | b", "variant 1: start it with a model name", "tiny-chat |"),
        ("a top_p=0.9 | b", "`top_p` is not an option", "options are temperature, max_tokens, system"),
        ("a temp=0.2 | b", "did you mean temperature?", "options are"),
        ("a extra words | b", "`extra` is not an option", 'system:"..."'),
        ("a temperature=0.2 temperature=0.3 | b", "temperature is given twice", "give it once"),
        ("a temperature=warm | b", "variant 1", "temperature takes a number"),
        ("a | b max_tokens=1.5", "variant 2", "max_tokens a whole number"),
        ("a | b max_tokens=", "variant 2", "max_tokens a whole number"),
    ],
)
def test_malformed_variants_are_one_line_naming_the_problem_and_the_fix(text: str, problem: str, fix: str) -> None:
    with pytest.raises(ExperimentInvalid) as raised:
        parse_variants(text)
    message = str(raised.value)
    assert problem in message and fix in message and "\n" not in message, message


def test_nan_and_infinite_temperatures_parse_for_the_engine_to_refuse() -> None:
    # float() reads them; the engine's range check (0 to 2, finite) refuses them with its own line.
    assert parse_variants("a temperature=nan | b")[0].temperature != parse_variants("a | b")[0].temperature


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        (None, 3, [1.0, 1.0, 1.0]),
        ("", 2, [1.0, 1.0]),
        ("50/50", 2, [50.0, 50.0]),
        ("20,80", 2, [20.0, 80.0]),
        ("1:1:1", 3, [1.0, 1.0, 1.0]),
        ("60%/40%", 2, [60.0, 40.0]),
        (" 0.5 / 0.25 / 0.25 ", 3, [0.5, 0.25, 0.25]),
        ("1e-3/1", 2, [0.001, 1.0]),  # tiny but positive: the engine's 1% floor decides
    ],
)
def test_splits_parse(text: str | None, count: int, expected: list[float]) -> None:
    assert parse_split(text, count) == expected


@pytest.mark.parametrize(
    ("text", "count", "words"),
    [
        ("0/100", 2, "above 0"),
        ("-1/2", 2, "above 0"),
        ("nan/1", 2, "above 0"),
        ("inf/1", 2, "above 0"),
        ("1e999/1", 2, "above 0"),
        ("1/1/1", 2, "give one weight per variant (2 variants, 3 weights), like 1/1"),
        ("50", 2, "give one weight per variant (2 variants, 1 weights)"),
        ("fifty/fifty", 2, "is not numbers like 50/50"),
        ("50//50", 2, "is not numbers like 50/50"),
        ("1/1", 100, "like 1/1/1/1/1/1/1/1/1/1/…"),
    ],
)
def test_bad_splits_are_refused_in_one_line(text: str, count: int, words: str) -> None:
    with pytest.raises(ExperimentInvalid) as raised:
        parse_split(text, count)
    assert words in str(raised.value) and str(raised.value).startswith("Check the experiment's split:")


def test_the_command_line_keeps_quoted_pipes_for_the_parser() -> None:
    # The line parser removes quotes; the variants argument gets words that held spaces back quoted.
    parsed = COMMANDS.parse('/experiments start tone tiny-chat system:"You are | terse" temperature=0.2 | tiny-base '
                            "split:70/30")
    assert parsed.values["split"] == "70/30"
    assert parse_variants(parsed.values["variants"]) == [_spec("tiny-chat", 0.2, system="You are | terse"),
                                                         _spec("tiny-base")]
    quoted = COMMANDS.parse("/experiments start tone a system:\"it's | fine\" | b")
    assert parse_variants(quoted.values["variants"])[0].system_prompt == "it's | fine"
    # Other rest arguments are joined as before.
    assert COMMANDS.parse('/models search "qwen chat"').values["query"] == "qwen chat"
