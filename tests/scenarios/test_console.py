"""The console: driven through a pseudo-terminal, scripted on stdin, and its rendering and job progress."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from rich.console import Console as RichConsole

from modelbay.adapters.console import ConsoleApp
from modelbay.bot import Dispatcher
from modelbay.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "/help\n/models list category:code\n# a comment\n\n/jobs\n/modle list\n/models info starcoder2-3b\n"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env.update(MODELBAY_HOME=str(home), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="160", LINES="50", PYTHONPATH=str(ROOT))
    return env


def _spawn_console(env: dict[str, str], cwd: Path, timeout: int) -> pexpect.spawn:
    """Start `modelbay console` on a pseudo-terminal, as a person would."""
    return pexpect.spawn(sys.executable, ["-m", "modelbay", "console"], env=env, cwd=str(cwd), dimensions=(50, 160),
                         encoding="utf-8", timeout=timeout)


def test_interactive_session_through_a_pty(tmp_path: Path) -> None:
    home = tmp_path / "home"
    child = _spawn_console(_env(home), tmp_path, timeout=30)
    try:
        child.expect("ModelBay console")
        child.expect("modelbay>")
        child.send("/help\r")
        child.expect("ModelBay commands")
        child.expect("/models list")
        child.expect("modelbay>")

        child.send("/models li\t")  # Tab completes the command
        child.send(" category:emb\t")  # and an argument's choices
        child.send("\r")
        child.expect("all-minilm-l6-v2")
        child.expect("modelbay>")

        child.send("/models info qwen2.5-0.5\r")
        child.expect("Did you mean")
        child.expect("qwen2.5-0.5b-instruct")
        child.expect("modelbay>")

        child.send("/jobs\r")
        child.expect("No jobs yet")
        child.expect("modelbay>")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    history = (home / "console_history").read_text()
    assert "/help" in history and "/models list category:embedding" in history
    log = (home / "logs" / "modelbay.log").read_text()
    assert "Running upgrade  -> 0001" in log  # the embedded default migrated its SQLite database


def test_scripted_session_prints_the_replies(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "modelbay", "console"], input=SCRIPT, capture_output=True,
                            text=True, env=_env(tmp_path / "home"), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ModelBay console" not in out  # no banner when a script is typing
    for expected in ("ModelBay commands", "/models list [category]", "qwen2.5-coder-7b-instruct", "starcoder2-3b",
                     "No jobs yet", "Did you mean /models list?", "bigcode-openrail-m", "16,384 tokens"):
        assert expected in out
    assert "\x1b[" not in out  # no terminal escapes into a pipe
    assert "Traceback" not in out + result.stderr


def test_a_settings_error_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    env = _env(tmp_path / "home") | {"MODELBAY_ROLES": '{"boss": []}'}
    result = subprocess.run([sys.executable, "-m", "modelbay", "console"], input="", capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("Configuration problem: MODELBAY_ROLES: unknown role 'boss'; roles are viewer, "
                                     "user, trainer, admin")


@pytest.fixture
def runtime(settings) -> Runtime:
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    yield runtime
    runtime.close()


def _console(runtime: Runtime, terminal: bool, script: str = "") -> tuple[ConsoleApp, io.StringIO]:
    buffer = io.StringIO()
    out = RichConsole(file=buffer, force_terminal=terminal, width=120, color_system=None)
    return ConsoleApp(Dispatcher(runtime, reraise_unknown=True), stdin=io.StringIO(script), out=out), buffer


def test_watching_a_job_follows_it_to_the_end(runtime: Runtime) -> None:
    record, _ = runtime.jobs.submit("test.count", {"n": 40, "delay": 0.02}, requester="console:me")
    app, buffer = _console(runtime, terminal=False, script=f"/jobs watch {record.id}\n")
    assert app.run() == 0
    lines = buffer.getvalue().splitlines()
    progress = [line for line in lines if line.startswith("test.count: started")]
    assert len(progress) >= 2  # one line per quarter, not one per report
    assert lines[-1] == f"test.count {record.id}: finished"


def test_a_live_bar_on_a_terminal_and_cancel(runtime: Runtime) -> None:
    record, _ = runtime.jobs.submit("test.count", {"n": 2000, "delay": 0.01}, requester="console:me")
    app, buffer = _console(runtime, terminal=True)

    async def watch_then_cancel() -> None:
        follow = asyncio.create_task(app.handle(f"/jobs watch {record.id}"))
        while runtime.jobs.get(record.id).progress < 0.01:
            await asyncio.sleep(0.05)
        await app.dispatcher.dispatch_line(f"/jobs cancel {record.id}", app.actor)
        await asyncio.wait_for(follow, 30)

    asyncio.run(watch_then_cancel())
    text = buffer.getvalue()
    assert "\x1b[2K" in text and "%" in text  # a live display redrew the bar in place
    assert f"test.count {record.id}: canceled" in text


def test_install_shows_a_live_bar_and_ctrl_c_cancels_it(tmp_path: Path, hub, tiny_model: Path) -> None:
    from tests.support.hub import Fault

    hub.add_repo("tiny-org/tiny-llama", tiny_model)
    hub.add_repo("tiny-org/slow", tiny_model)
    hub.inject("tiny-org/slow", "model.safetensors", Fault("stall", after_bytes=200_000, seconds=60, times=0))
    env = _env(tmp_path / "home") | {"MODELBAY_HUB_ENDPOINT": hub.endpoint, "MODELBAY_DISK_MARGIN_BYTES": "0",
                                     "MODELBAY_HUB_DOWNLOAD_TIMEOUT": "2", "HF_HOME": str(tmp_path / "hf"),
                                     "HF_HUB_DISABLE_XET": "1"}
    child = _spawn_console(env, tmp_path, timeout=60)
    try:
        child.expect("modelbay>")
        child.send("/models install tiny-org/tiny-llama\r")
        child.expect("Installing tiny-llama")
        child.expect("install tiny-llama \\w+: finished")
        child.expect("modelbay>")

        child.send("/models install tiny-org/slow\r")
        child.expect("Installing slow")
        child.expect("━")  # the live bar
        child.sendintr()  # Ctrl-C cancels the job being watched, not the console
        child.expect("will stop at its next checkpoint")
        child.expect("install \\w+: canceled", timeout=60)
        child.expect("modelbay>")

        child.send("/models list installed:true\r")
        child.expect("tiny-llama")
        child.expect("modelbay>")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    store = tmp_path / "home" / "models"
    assert (store / "tiny-org--tiny-llama").is_dir() and not (store / "tiny-org--slow").exists()


def test_chat_in_the_console_streams_rates_and_measures(tmp_path: Path, tiny_chat_model: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "tiny-chat").symlink_to(tiny_chat_model, target_is_directory=True)
    env = _env(tmp_path / "home")
    env.update(MODELBAY_LOCAL_MODELS_DIR=str(library), MODELBAY_CHAT_TEMPERATURE="0")
    child = _spawn_console(env, tmp_path, timeout=60)
    try:
        child.expect("modelbay>")
        child.send("What color is grass?\r")  # no chat yet: says how to start one
        child.expect("There is no chat open here. Start one with")
        child.expect("modelbay>")
        child.send("/models install local/tiny-chat\r")
        child.expect("install tiny-chat [0-9a-f]+: finished")
        child.expect("modelbay>")
        child.send("/chat tiny-chat You are a helpful assistant.\r")
        child.expect("Chatting with")
        child.expect("Answered by")
        child.expect("transformers")
        child.expect("modelbay>")
        child.send("What color is the sky?\r")
        child.expect(r"\.\r?\n")  # the streamed answer ends its sentence, then the facts line follows
        child.expect(r"#2 · transformers · \d+ tokens · first token \d+ ms")
        child.expect("modelbay>")
        child.send("/rate up helpful\r")
        child.expect("Rated answer")
        child.expect("helpful")
        child.expect("modelbay>")
        child.send("/analytics model tiny-chat\r")
        child.expect("Requests")
        child.expect("100%")
        child.expect("of 1 rating")
        child.expect("modelbay>")
        child.send("/privacy delete\r")
        child.expect("Erased ratings")
        child.expect("modelbay>")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_ctrl_c_stops_an_answer_keeps_its_text_and_returns_to_the_prompt(tmp_path: Path, tiny_chat_model: Path) -> None:
    from modelbay.config import load_settings
    from modelbay.engine.db.schema.chat import Message
    from tests.support.chat import installed, served_by
    from tests.support.openai_standin import Script, StandIn

    home = tmp_path / "home"
    with StandIn() as server:
        # A slow model server: one word every 0.3 s, sixty words in all.
        server.script = Script(pieces=[f" word{i}" for i in range(60)], delay=0.3)
        runtime = Runtime(load_settings(home=home))
        runtime.prepare()
        installed(runtime.registry, tiny_chat_model)
        served_by(runtime, "tiny-chat", server.endpoint)
        runtime.close()
        child = _spawn_console(_env(home), tmp_path, timeout=60)
        try:
            child.expect("modelbay>")
            child.send("/chat tiny-chat\r")
            child.expect("Chatting with")
            child.expect("modelbay>")
            for question in ("Tell me a long story.", "And another one."):  # Ctrl-C works every time, not once
                child.send(f"{question}\r")
                child.expect(" word2")
                child.sendintr()
                child.expect("You stopped this answer; the text so far is kept.")
                child.expect("modelbay>")
            child.send("/jobs\r")  # the console still runs commands
            child.expect("No jobs yet")
            child.expect("modelbay>")
            child.sendeof()
            child.expect(pexpect.EOF)
        finally:
            child.close()
    assert child.exitstatus == 0
    runtime = Runtime(load_settings(home=home))
    try:
        with runtime.db.session() as db:
            answers = [m for m in db.query(Message).order_by(Message.id) if m.role == "assistant"]
        assert [m.status for m in answers] == ["canceled", "canceled"]
        assert all(3 <= (m.tokens or 0) < 60 for m in answers)  # what arrived before Ctrl-C, not the whole answer
    finally:
        runtime.close()
