"""The bot core through its dispatcher: parsing, validation, roles, the error table and the commands."""

from __future__ import annotations

import asyncio
import logging

import pytest

from modelbay.bot import COMMANDS, Actor, Arg, ArgType, CommandSet, Dispatcher, Reply, command
from modelbay.bot.spec import ArgumentInvalid, UnknownCommand
from modelbay.runtime import Runtime

ADMIN = Actor("console", "root")
ALICE = Actor("slack", "U1", "alice")
BOB = Actor("slack", "U2", "bob")
VIEWER = Actor("discord", "7", "vic", groups=("role:guests",))


@pytest.fixture
def runtime(settings) -> Runtime:
    settings.roles = {"admin": ["console:*"], "viewer": ["discord:role:guests"]}
    runtime = Runtime(settings)
    runtime.prepare()
    yield runtime
    runtime.close()


@pytest.fixture
def run(runtime: Runtime):
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def run(line: str, actor: Actor = ALICE) -> Reply:
        return asyncio.run(dispatcher.dispatch_line(line, actor))

    return run


def test_the_same_line_parses_in_every_argument_style() -> None:
    for line in ("/models list code 5", "/models list category:code limit:5", "/models list --category code --limit=5",
                 "/MODELS LIST limit=5 category=code"):
        cmd, values = COMMANDS.parse(line)
        assert cmd.name == "/models list"
        assert values == {"category": "code", "installed": None, "limit": 5, "page": 1}
    cmd, values = COMMANDS.parse("/jobs")  # an alias
    assert cmd.name == "/jobs list" and values["all"] is False
    assert COMMANDS.parse("/models list --installed")[1]["installed"] is True


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/modles list", "Unknown command `/modles list`. Did you mean `/models list`? Type `/help` to see every command."),
        ("/jbos", "Unknown command `/jbos`. Did you mean `/jobs`? Type `/help` to see every command."),
        ("/models list limit:0", "`limit` must be a whole number from 1 to 100 (got 0). Usage: "
                                 "`/models list [category] [installed:true|false] [limit:N] [page:N]`"),
        ("/models list installed:perhaps", "`installed` must be true or false (got 'perhaps'). Usage: "
                                           "`/models list [category] [installed:true|false] [limit:N] [page:N]`"),
        ("/models info", "`model` is missing (model name or hugging face repo id). Usage: `/models info <model>`"),
        ("/models info a b", "`b` is one argument too many for /models info. Usage: `/models info <model>`"),
        ("/jobs cancel abc forse:true", "`forse` is not an argument of /jobs cancel; did you mean `force`. Usage: "
                                        "`/jobs cancel <job> [force:true|false]`"),
        ("/models info 'unclosed", "Unknown command `/models info 'unclosed`. Type `/help` to see every command."),
    ],
)
def test_bad_input_gets_one_line_naming_the_problem(run, line: str, message: str) -> None:
    reply = run(line)
    assert reply.text == message
    assert reply.ephemeral and reply.tone == "warning" and "\n" not in reply.text


def test_nul_bytes_and_overlong_text_are_refused() -> None:
    with pytest.raises(ArgumentInvalid, match="must not contain NUL"):
        COMMANDS.parse("/models info abc\x00def")
    with pytest.raises(ArgumentInvalid, match="at most 200 characters"):
        COMMANDS.parse("/models info " + "x" * 201)
    with pytest.raises(UnknownCommand):
        COMMANDS.parse("models list")


def test_help_lists_what_the_caller_may_run(run) -> None:
    everything = run("/help", ADMIN)
    assert [row[0].split()[0:2] for row in everything.table.rows][:3] == [["/analytics", "compare"],
                                                                          ["/analytics", "dashboard"],
                                                                          ["/analytics", "model"]]
    viewer = run("/help", VIEWER)
    assert not any(row[0].startswith("/jobs cancel") for row in viewer.table.rows)
    assert "Your role: viewer" in viewer.footer
    detail = run("/help models list")
    assert detail.title == "/models list" and [f.name for f in detail.fields] == ["category", "installed", "limit",
                                                                                  "page"]


def test_models_list_and_info_show_the_catalog(run) -> None:
    page = run("/models list category:embedding")
    assert page.table.columns == ["Name", "Category", "Params", "Size", "License", "Installed"]
    names = [row[0] for row in page.table.rows]
    assert "all-minilm-l6-v2" in names and all(row[1] == "embedding" for row in page.table.rows)
    paged = run("/models list limit:2 page:2")
    assert paged.footer.startswith("3–4 of ") and "Next: `/models list page:3`" in paged.footer

    info = run("/models info Qwen/Qwen2.5-0.5B-Instruct")
    fields = {f.name: f.value for f in info.fields}
    assert info.title == "Qwen2.5 0.5B Instruct"
    assert fields["Parameters"] == "494M" and fields["Size"] == "988 MB" and fields["Context"] == "32,768 tokens"
    gated = {f.name for f in run("/models info llama-3.2-1b-instruct").fields}
    assert "Access" in gated

    missing = run("/models info qwen2.5-0.5")
    assert missing.title == "Model not found" and "`qwen2.5-0.5b-instruct`" in missing.text


def test_roles_guard_job_cancellation(run, runtime: Runtime) -> None:
    record, _ = runtime.jobs.submit("test.count", {"n": 1}, requester=ALICE.key)
    assert run(f"/jobs cancel {record.id}", VIEWER).text.startswith("`/jobs cancel` needs the user role and you have "
                                                                      "viewer.")
    refused = run(f"/jobs cancel {record.id}", BOB)
    assert refused.title == "Not allowed" and f"cancelling another person's job {record.id}" in refused.text
    assert "admin" in run(f"/jobs cancel {record.id} force:true", ALICE).text
    assert run(f"/jobs cancel {record.id}", ALICE).text == f"Job `{record.id}` (test.count) is canceled."
    assert run(f"/jobs cancel {record.id}", ALICE).text == f"Job `{record.id}` has already canceled; there is " \
                                                           "nothing to cancel."


def test_jobs_list_and_watch(run, runtime: Runtime) -> None:
    assert run("/jobs").text.startswith("No jobs yet.")
    mine, _ = runtime.jobs.submit("test.count", {"n": 1}, requester=ALICE.key)
    theirs, _ = runtime.jobs.submit("test.count", {"n": 1}, requester=BOB.key)
    listing = run("/jobs")
    assert [row[0] for row in listing.table.rows] == [mine.id]
    assert listing.buttons[0].command == f"/jobs cancel {mine.id}"
    assert run("/jobs all:true").title == "Not allowed"
    assert {row[0] for row in run("/jobs all:true", ADMIN).table.rows} == {mine.id, theirs.id}
    watch = run(f"/jobs watch {mine.id}")
    assert watch.progress.job_id == mine.id and watch.progress.status == "queued"


def test_unknown_errors_are_logged_with_a_reference_never_shown(runtime: Runtime, caplog) -> None:
    commands = CommandSet()

    @command("boom", help="Fails.", registry=commands)
    async def boom(ctx) -> Reply:  # noqa: ANN001
        raise RuntimeError("database password is hunter2")

    dispatcher = Dispatcher(runtime, commands)
    with caplog.at_level(logging.ERROR):
        reply = asyncio.run(dispatcher.dispatch_line("/boom", ALICE))
    assert reply.title == "Unexpected error" and "hunter2" not in reply.text and "Traceback" not in reply.text
    ref = reply.text.split("`")[1]
    record = next(r for r in caplog.records if ref in r.getMessage())
    assert record.exc_info and "hunter2" in str(record.exc_info[1])

    strict = Dispatcher(runtime, commands, reraise_unknown=True)
    with pytest.raises(RuntimeError):
        asyncio.run(strict.dispatch_line("/boom", ALICE))


def test_typed_platform_options_go_through_the_same_validation(runtime: Runtime) -> None:
    dispatcher = Dispatcher(runtime, reraise_unknown=True)
    reply = asyncio.run(dispatcher.dispatch(("models", "list"), {"category": "code", "limit": 2}, ALICE))
    assert len(reply.table.rows) == 2
    bad = asyncio.run(dispatcher.dispatch(("models", "list"), {"limit": 500}, ALICE))
    assert bad.text.startswith("`limit` must be a whole number from 1 to 100")
    unknown = asyncio.run(dispatcher.dispatch(("model", "list"), {}, ALICE))
    assert "Did you mean `/models list`?" in unknown.text


def test_extensions_register_like_built_ins() -> None:
    commands = CommandSet()

    @command("hello", help="Greets.", args=(Arg("times", "How often.", ArgType.INTEGER, default=1, min=1, max=3),),
             registry=commands)
    async def hello(ctx, times: int) -> Reply:  # noqa: ANN001
        return Reply(text="hi " * times)

    cmd, values = commands.parse("/hello 2")
    assert cmd.handler is hello and values == {"times": 2}


def test_a_lone_surrogate_in_any_argument_is_refused_in_one_line(run) -> None:
    # A JSON payload from Slack or Discord can carry "\udc7a"; no database stores it (SQLite raised).
    reply = run("/jobs watch \udc7a")
    assert reply.title == "Check the command" and reply.text.startswith("`job` must be valid UTF-8 text")
    assert run("/models info a\ud800b").text.startswith("`model` must be valid UTF-8 text")
    unknown = run("/\udc7a list")
    assert unknown.title == "Unknown command" and "\\udc7a" in unknown.text
    for text in (reply.text, unknown.text):
        text.encode("utf-8")


@pytest.mark.parametrize(
    ("line", "shown_part"),
    [
        ("/models info 'a\x1b[2Jb'", "No model named `a\\x1b[2Jb`."),
        ("/models install 'a/b\x1b[2J'", "`a/b\\x1b[2J` is not a valid model id"),
        ("/models info 'two\nlines'", "`two\\nlines`"),
        ("/jobs cancel '\u202eevil'", "\\u202eevil"),
        ("/models list installed:" + "y" * 50_000, "(got '" + "y" * 79 + "…')"),
        ("/jobs watch abc " + "z" * 50_000, "`" + "z" * 79 + "…` is one argument too many"),
        ("/models list limit:" + "9" * 5_000, "(got '" + "9" * 79 + "…')"),
        ("/models info 'back`tick'", "`back'tick`"),
    ],
)
def test_error_replies_echo_input_as_one_short_escaped_line(run, line: str, shown_part: str) -> None:
    reply = run(line, ADMIN)
    assert shown_part in reply.text, reply.text
    assert "\n" not in reply.text and "\x1b" not in reply.text and len(reply.text) < 300


def test_shown_escapes_and_cuts_between_escapes() -> None:
    from modelbay.engine.errors import one_line, shown

    assert shown("plain-name") == "plain-name"
    assert shown("a\nb\r\tc\x00\x1b\x85\u2028\udc7a\u202e") == "a\\nb\\r\\tc\\x00\\x1b\\x85\\u2028\\udc7a\\u202e"
    assert shown("x" * 80) == "x" * 80 and shown("x" * 81) == "x" * 79 + "…"
    assert shown("\x00" * 50) == "\\x00" * 19 + "…"  # never half an escape
    assert shown("`") == "'" and one_line("`kept`", 10) == "`kept`"
    assert len(one_line("é" * 10_000, 1000)) == 1000


def test_rate_takes_a_comment_after_the_reason_and_the_answer_only_by_name() -> None:
    _, values = COMMANDS.parse("/rate up helpful some comment")
    assert values == {"rating": "up", "reason": "helpful", "message": None, "comment": "some comment"}
    _, values = COMMANDS.parse("/rate down wrong message:12 it said 7")
    assert values == {"rating": "down", "reason": "wrong", "message": 12, "comment": "it said 7"}
    _, values = COMMANDS.parse("/rate up message:3")  # what the 👍 button sends
    assert values == {"rating": "up", "reason": None, "message": 3, "comment": None}
    rate = COMMANDS.get(("rate",))
    assert rate.usage == "/rate <rating> [reason] [message:N] [comment]"
    with pytest.raises(ArgumentInvalid, match="`reason` must be one of"):
        COMMANDS.parse("/rate down 3")
    with pytest.raises(ArgumentInvalid, match="from 1 to 2,147,483,647 \\(got 0\\)"):
        COMMANDS.parse("/rate up message:0")


def test_rate_stores_the_comment_of_either_form(settings, tiny_chat_model) -> None:
    from sqlalchemy import select

    from modelbay.engine.chat.records import Place
    from modelbay.engine.db.schema.chat import Feedback
    from tests.support.chat import installed

    settings.chat_temperature, settings.chat_max_tokens = 0.0, 8
    runtime = Runtime(settings)
    try:
        runtime.prepare()
        installed(runtime.registry, tiny_chat_model)
        here = Place("slack", "C1", "T1")
        dispatcher = Dispatcher(runtime, reraise_unknown=True)

        def run(line: str) -> Reply:
            return asyncio.run(dispatcher.dispatch_line(line, ALICE, here))

        assert run("/chat tiny-chat").tone == "success"
        session = runtime.chats.current(here)
        answers = [list(runtime.chats.answer(session.id, ALICE.key, text))[-1].answer for text in ("Hi", "Bye")]
        first, last = (a.message_id for a in answers)
        rated = run("/rate up helpful some comment")
        assert rated.text == f"Rated answer #{last} 👍 (helpful). Thank you!"
        assert run(f"/rate down wrong message:{first} it said 7").text == f"Rated answer #{first} 👎 (wrong). Thank you!"
        with runtime.db.session() as db:
            stored = {f.message_id: (f.rating, f.reason, f.comment) for f in db.scalars(select(Feedback))}
        assert stored == {last: (1, "helpful", "some comment"), first: (-1, "wrong", "it said 7")}
    finally:
        runtime.close()
