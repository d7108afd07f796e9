"""Inference backends: in-process transformers streaming and HTTP failures mid-stream (context fitting is a unit
test: tests/unit/engine/inference/test_context.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelbay.engine.errors import BackendFailed, TemplateRefused
from modelbay.engine.inference.backends.base import Adjusted, Finished, Generation
from modelbay.engine.inference.backends.openai import OpenAIBackend
from modelbay.engine.inference.backends.transformers import TransformersBackend
from modelbay.engine.inference.templates import no_system_notice
from tests.support.openai_standin import Script, StandIn, no_system, strictly_alternating, system_required
from tests.support.tinymodel import chat_corpus

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


@pytest.fixture(scope="module")
def local(tiny_chat_model: Path) -> TransformersBackend:
    return TransformersBackend(tiny_chat_model, device="cpu")


def test_the_quick_token_bound_is_never_below_the_exact_count(local: TransformersBackend) -> None:
    for conversation in chat_corpus(seed=3)[:40]:
        assert local.token_bound(conversation) >= local.count_tokens(conversation)
    unicode = [{"role": "user", "content": "Ünïcödé ✓ 漢字 " * 20}]
    assert local.token_bound(unicode) >= local.count_tokens(unicode)


def test_in_process_answers_stream_token_by_token(local: TransformersBackend) -> None:
    items = list(local.stream([SYSTEM, {"role": "user", "content": "What color is the sky?"}],
                              Generation(max_tokens=40, temperature=0)))
    pieces, finished = items[:-1], items[-1]
    assert isinstance(finished, Finished) and finished.reason == "stop"
    # _TokenStreamer counts every generated token and queues the text each one adds: every token of this answer
    # (plain ASCII words of a byte-level BPE) adds text, and the last one, <|im_end|>, is special and adds none.
    assert len(pieces) == finished.output_tokens - 1 and all(pieces)
    assert "".join(pieces).strip().endswith(".") and finished.input_tokens > 10


def test_in_process_answers_honour_max_tokens_and_stop_strings(local: TransformersBackend) -> None:
    question = [{"role": "user", "content": "Tell me about music."}]
    capped = list(local.stream(question, Generation(max_tokens=3, temperature=0)))
    assert capped[-1] == Finished(capped[-1].input_tokens, 3, "length")
    full = "".join(p for p in local.stream(question, Generation(max_tokens=60, temperature=0))
                   if isinstance(p, str))
    word = full.split()[2]
    stopped = "".join(p for p in local.stream(question, Generation(max_tokens=60, temperature=0, stop=(word,)))
                      if isinstance(p, str))
    assert word not in stopped and full.startswith(stopped)


def test_a_refused_request_says_why() -> None:
    with StandIn() as server:
        server.script = Script(status=400)
        backend = OpenAIBackend(server.endpoint, "m")
        with pytest.raises(BackendFailed, match="HTTP 400: This model's maximum context length"):
            list(backend.stream([{"role": "user", "content": "hi"}], Generation()))


# -- a server's chat template with rules, its files not on this host ----------------------------------------
def _same_role_twice(messages: list[dict[str, str]]) -> bool:
    return any(a["role"] == b["role"] for a, b in zip(messages, messages[1:]))


def _ask(backend: OpenAIBackend, messages: list[dict[str, str]]) -> list[object]:
    return list(backend.stream(backend.prompt(messages, Generation()).messages, Generation()))


@pytest.mark.parametrize("rules", [no_system, strictly_alternating])
def test_a_system_message_the_servers_template_refuses_is_folded_in_learned_and_said_once(rules: object) -> None:
    with StandIn() as server:
        server.script = Script(pieces=["Hi", "."], rules=rules)
        backend = OpenAIBackend(server.endpoint, "gemma", model_path=None)
        assert backend.takes_system  # nothing on this host says otherwise yet
        first = _ask(backend, [SYSTEM, {"role": "user", "content": "Hello!"}])
        assert first[0] == Adjusted(no_system_notice("gemma")) and first[1:3] == ["Hi", "."]
        assert isinstance(first[-1], Finished) and sum(isinstance(i, Adjusted) for i in first) == 1
        assert [m["role"] for m in server.bodies[0]["messages"]] == ["system", "user"]
        assert server.bodies[1]["messages"] == [{"role": "user", "content": f"{SYSTEM['content']}\n\nHello!"}]
        # Learned for that server and model: the next message is folded at once, one request, said no more.
        assert not backend.takes_system and not OpenAIBackend(server.endpoint, "gemma").takes_system
        assert OpenAIBackend(server.endpoint, "other").takes_system
        second = _ask(backend, [SYSTEM, {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."},
                                {"role": "user", "content": "Again"}])
        assert len(server.bodies) == 3 and not [i for i in second if isinstance(i, Adjusted)]
        assert server.bodies[2]["messages"][0]["content"].startswith(SYSTEM["content"])
    assert not [body for body in server.bodies[1:] if _same_role_twice(body["messages"])]


@pytest.mark.parametrize(("rules", "messages", "advice"), [
    # Already alternating (Backend.prompt sees to it) and no system message to fold: nothing to retry.
    (lambda messages: "Conversation roles must alternate user/assistant/user/assistant/...",
     [{"role": "user", "content": "Hello!"}], "Tell an admin: the model's chat template refuses this conversation."),
    (system_required, [{"role": "user", "content": "Hello!"}],
     "Set a system prompt with `/chat gemma <system prompt>`."),
    # Folded and still refused: one retry only, and nothing learned.
    (lambda messages: "System role not supported", [SYSTEM, {"role": "user", "content": "Hello!"}],
     "Tell an admin: the model's chat template refuses this conversation."),
])
def test_a_template_refusal_from_the_server_is_one_line_naming_the_model_with_advice_for_its_case(
        rules: object, messages: list[dict[str, str]], advice: str) -> None:
    with StandIn() as server:
        server.script = Script(rules=rules)
        backend = OpenAIBackend(server.endpoint, "gemma")
        with pytest.raises(TemplateRefused) as raised:
            _ask(backend, messages)
        assert len(server.bodies) == (2 if messages[0]["role"] == "system" else 1)
        assert backend.takes_system
    said = str(raised.value)
    assert said.startswith("The chat template of gemma refused the conversation: ") and said.endswith(advice)
    assert "\n" not in said and "Start a new chat" not in said


def test_a_dropped_stream_fails_after_the_text_already_sent() -> None:
    with StandIn() as server:
        server.script = Script(pieces=["One", " two"], end="drop")
        backend = OpenAIBackend(server.endpoint, "m")
        got: list[str] = []
        with pytest.raises(BackendFailed, match="connection failed"):
            for item in backend.stream([{"role": "user", "content": "hi"}], Generation()):
                got.append(item)
        assert got == ["One", " two"]
        assert server.bodies[0]["stream"] is True and server.bodies[0]["model"] == "m"


def test_a_stalled_stream_times_out() -> None:
    with StandIn() as server:
        server.script = Script(pieces=["Half"], end="stall", stall_for=5)
        backend = OpenAIBackend(server.endpoint, "m")
        got: list[str] = []
        with pytest.raises(BackendFailed, match="sent nothing for 0.5 s"):
            for item in backend.stream([{"role": "user", "content": "hi"}], Generation(idle_timeout=0.5)):
                got.append(item)
        assert got == ["Half"]


@pytest.mark.parametrize(("body", "said"), [
    (b'["context too long", 512]', 'HTTP 500: ["context too long", 512]'),
    (b'"context too long"', "HTTP 500: context too long"),
    (b'{"error": "context\\ntoo long"}', "HTTP 500: context too long"),
    (b'{"detail": [{"msg": "field required"}]}', "HTTP 500: [{'msg': 'field required'}]"),
    (b"<html>\n<b>Bad\tgateway</b>\x1b[31m\n</html>", "HTTP 500: <html> <b>Bad gateway</b>\\x1b[31m </html>"),
    (b"\xff\xfe not text", "HTTP 500: \ufffd\ufffd not text"),
    (b"", "HTTP 500: Internal Server Error"),
])
def test_an_error_answer_of_any_shape_is_one_line(body: bytes, said: str) -> None:
    with StandIn() as server:
        server.script = Script(status=500, error_body=body)
        backend = OpenAIBackend(server.endpoint, "m")
        with pytest.raises(BackendFailed) as raised:
            list(backend.stream([{"role": "user", "content": "hi"}], Generation()))
    message = str(raised.value)
    assert message == f"The model server refused the request: {said}" and "\n" not in message


def test_a_long_error_body_is_cut() -> None:
    with StandIn() as server:
        server.script = Script(status=503, error_body=b"x" * 5000)
        with pytest.raises(BackendFailed) as raised:
            list(OpenAIBackend(server.endpoint, "m").stream([{"role": "user", "content": "hi"}], Generation()))
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize(("end", "raw", "said"), [
    ("corrupt", "", "connection failed (DecodingError)"),
    ("raw", "{not json", "chunk that is not JSON: {not json"),
    ("raw", "[1, 2]", "chunk of an unknown shape: [1, 2]"),
    ("raw", '"text"', "chunk of an unknown shape"),
    ("raw", '{"choices": "all of them"}', "chunk of an unknown shape"),
    ("raw", '{"choices": [{"delta": "Hi"}]}', "chunk of an unknown shape"),
    ("raw", '{"choices": [{"delta": {"content": 7}}]}', "chunk of an unknown shape"),
    ("raw", '{"choices": [], "usage": [7]}', "chunk of an unknown shape"),
])
def test_a_broken_stream_fails_in_one_line_after_the_text_already_sent(end: str, raw: str, said: str) -> None:
    with StandIn() as server:
        server.script = Script(pieces=["One", " two"], end=end, raw=raw)
        got: list[str] = []
        with pytest.raises(BackendFailed, match=re.escape(said)) as raised:
            for item in OpenAIBackend(server.endpoint, "m").stream([{"role": "user", "content": "hi"}], Generation()):
                got.append(item)
    assert got == ["One", " two"] and "\n" not in str(raised.value)


_EXIT_SCRIPT = """
import atexit, sys, threading, time


def generating() -> int:
    return sum(t.name == "modelbay-generate" and t.is_alive() for t in threading.enumerate())


# Registered before ModelBay's own exit hook, so it runs after it (atexit runs the last registered first).
atexit.register(lambda: print("generating at exit:", generating(), flush=True))

from modelbay.engine.inference import Generation, TransformersBackend

backend = TransformersBackend(sys.argv[1], device="cpu")
# Each token takes a while, as on a big model: an answer is still being generated when the script ends.
backend.model.register_forward_pre_hook(lambda *args: time.sleep(0.05))
question = [{"role": "user", "content": "Tell me about music."}]
params = Generation(max_tokens=400, temperature=0, timeout=600)
if sys.argv[2] == "break":
    for piece in backend.stream(question, params):
        break
    print("generating after break:", generating(), flush=True)
else:
    answer = backend.stream(question, params)
    print("first piece:", next(answer), flush=True)  # the rest is never read: the stream is open at exit
"""


@pytest.mark.parametrize("how", ["leave-open", "break"])
def test_no_generation_outlives_the_interpreter(tiny_chat_model: Path, tmp_path: Path, how: str) -> None:
    script = tmp_path / "partial.py"
    script.write_text(_EXIT_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(script), str(tiny_chat_model), how], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    assert "terminate called" not in result.stderr
    assert "generating at exit: 0" in result.stdout
    if how == "break":
        assert "generating after break: 0" in result.stdout  # leaving the loop stopped and joined it
    else:
        assert "first piece:" in result.stdout
