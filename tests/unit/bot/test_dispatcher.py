"""bot/dispatcher.py and the forms of bot/reply.py on a command set of their own: an Invocation is prepared once
(parsed, converted, the role known) and says what adapters need (`defer`, `opens_thread`); a button that asks first
carries its form's name and value, and a pressed payload comes back as the same button."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from modelbay.bot.context import Actor
from modelbay.bot.dispatcher import Dispatcher
from modelbay.bot.reply import Ask, Button, Reply, form
from modelbay.bot.spec import Arg, ArgType, CommandSet, command

COMMANDS = CommandSet()
VIEWER, ADMIN = Actor("test", "viewer"), Actor("test", "admin")
RUNTIME = SimpleNamespace(settings=SimpleNamespace(roles={"admin": ["test:admin"]}, default_role="viewer"))


@command("talk", help="Opens a talk.", registry=COMMANDS, role="admin", slow=True, opens_thread=True,
         args=(Arg("model", "Model name.", required=True), Arg("system", "A prompt.", rest=True)))
async def talk(ctx, model: str, system: str | None) -> Reply:  # noqa: ANN001
    return Reply(text=f"{model}|{system}|{ctx.place}")


@command("score", help="Scores a thing.", registry=COMMANDS, args=(
    Arg("rating", "up or down.", required=True, choices=("up", "down")), Arg("why", "Why.", choices=("bad", "slow")),
    Arg("item", "Which.", ArgType.INTEGER, min=1, max=99, named=True),
))
async def score(ctx, rating: str, why: str | None, item: int | None) -> Reply:  # noqa: ANN001
    return Reply(text=f"{rating}|{why}|{item}")


SCORE_DOWN = form("scoredown", "/score down item:{}", "Score #{}",
                  (Ask("why", "What was wrong?", (("bad", "Bad"), ("slow", "Slow")), skip="No reason"),), legacy=True)
TALK = form("talkto", "/talk {}", "Prompt", (Ask("system", "How?", long=True),))
DISPATCHER = Dispatcher(RUNTIME, COMMANDS)  # type: ignore[arg-type]


def _run(invocation) -> str:  # noqa: ANN001
    return asyncio.run(invocation.run()).text


def test_an_invocation_is_prepared_once_and_says_what_adapters_do() -> None:
    ready = DISPATCHER.prepare_line("/talk tiny", ADMIN)
    assert (ready.allowed, ready.defer, ready.opens_thread, ready.values) == (True, True, True,
                                                                              {"model": "tiny", "system": None})
    refused = DISPATCHER.prepare_line("/talk tiny", VIEWER)  # a refusal needs no placeholder and no thread
    assert (refused.allowed, refused.defer, refused.opens_thread) == (False, False, False)
    assert "admin" in _run(refused)
    wrong = DISPATCHER.prepare_line("/talk", ADMIN)  # neither does a mistake
    assert wrong.error is not None and not wrong.defer and "missing" in _run(wrong)
    unknown = DISPATCHER.prepare_line("/tlak tiny", ADMIN)
    assert unknown.command is None and "/talk" in _run(unknown)
    typed = DISPATCHER.prepare(("talk",), {"model": "tiny", "system": None}, ADMIN)
    assert typed.values == ready.values and typed.opens_thread
    assert _run(ready.at("a thread")) == "tiny|None|a thread"  # run where the adapter opened a thread


def test_a_form_completes_its_line_with_what_it_asked_for() -> None:
    button = SCORE_DOWN.button("👎", 7, "danger")
    assert (button.command, button.payload) == ("/score down item:7", "mb:scoredown:7")
    assert _run(DISPATCHER.prepare_line(button.command, VIEWER, more={"why": "slow"})) == "down|slow|7"
    assert "must be one of" in _run(DISPATCHER.prepare_line(button.command, VIEWER, more={"why": "rude"}))
    assert TALK.button("Go", "two words").command == "/talk 'two words'"  # the value stays one word
    assert _run(DISPATCHER.prepare_line(TALK.line_for("two words"), ADMIN, more={"system": "Be brief."})) == \
        "two words|Be brief.|None"


def test_a_pressed_payload_is_the_button_it_came_from() -> None:
    for button in (SCORE_DOWN.button("👎", 7), TALK.button("Go", "tiny"), Button("Go", "/score up item:3")):
        pressed = Button.pressed(button.payload)
        assert (pressed.command, pressed.form, pressed.value) == (button.command, button.form, button.value)
    legacy = Button.pressed("/score down item:12")  # sent before the button carried its form
    assert legacy.form is SCORE_DOWN and legacy.value == "12"
    for line in ("/score down item:12 more", "/talk tiny", "mb:nosuchform:3"):
        assert Button.pressed(line).form is None and Button.pressed(line).command == line


def test_a_form_value_fills_its_argument_whatever_it_holds() -> None:
    from modelbay.bot import COMMANDS as BUILT_IN
    from modelbay.bot.commands.chat import SYSTEM_PROMPT

    for value in ("tiny-chat", "org/model:v2", "system:x", "model:y", "modl:z", "--x", "two words"):
        parsed = BUILT_IN.parse(SYSTEM_PROMPT.line_for(value), {"system": "Be brief."})
        assert parsed.values == {"model": value, "system": "Be brief."}
