"""Inference backends: context fitting, in-process transformers streaming, and HTTP failures mid-stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelbay.engine.errors import BackendFailed
from modelbay.engine.inference import Finished, Generation, OpenAIBackend, TransformersBackend, fit_to_context
from tests.support.openai_standin import Script, StandIn
from tests.support.tinymodel import chat_corpus

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) + 2 for m in messages)


def _turns(n: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "word " * 8} for i in range(n)]


def test_the_oldest_turns_go_first_in_pairs_and_the_system_prompt_stays() -> None:
    messages = [SYSTEM, *_turns(9)]  # ends with a user message
    prompt = fit_to_context(messages, _words, context_length=60, max_tokens=20)
    assert prompt.messages[0] == SYSTEM and prompt.messages[-1] == messages[-1]
    assert prompt.messages[1]["role"] == "user"  # never an answer without its question
    assert _words(prompt.messages) <= 40 and len(prompt.messages) < len(messages)
    assert "oldest messages" in prompt.notices[0] and "60-token context" in prompt.notices[0]
    assert prompt.max_tokens == min(20, 60 - prompt.tokens)


def test_an_over_long_message_is_cut_with_a_notice() -> None:
    long = {"role": "user", "content": "word " * 500}
    prompt = fit_to_context([SYSTEM, long], _words, context_length=100, max_tokens=30)
    assert prompt.messages[-1]["content"] and long["content"].startswith(prompt.messages[-1]["content"])
    assert _words(prompt.messages) <= 70
    assert "cut to its first" in prompt.notices[-1]


def test_a_system_prompt_that_fills_the_context_is_refused() -> None:
    huge = {"role": "system", "content": "word " * 500}
    with pytest.raises(BackendFailed, match="system prompt alone"):
        fit_to_context([huge, {"role": "user", "content": "hi"}], _words, context_length=100, max_tokens=30)


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
    assert len(pieces) == finished.output_tokens - 1 or len(pieces) >= 3  # one piece per visible token
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
