"""engine/inference/context.py: a conversation fitted to a context window (oldest turns first, in pairs, then the
newest message cut), counted here in words so no tokenizer is needed."""

from __future__ import annotations

import random

import pytest

from modelbay.engine.errors import BackendFailed
from modelbay.engine.inference.context import fit_to_context

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


def test_a_fitted_prompt_fits_keeps_the_newest_question_and_never_starts_with_an_answer() -> None:
    rng = random.Random(11)
    for _ in range(500):
        messages = [*([SYSTEM] if rng.random() < 0.5 else []), *_turns(rng.randint(0, 20)),
                    {"role": "user", "content": "last " * rng.randint(1, 80)}]
        context_length, max_tokens = rng.randint(30, 200), rng.randint(1, 100)
        budget = context_length - max(1, min(max_tokens, context_length // 2))
        prompt = fit_to_context(messages, _words, context_length, max_tokens)
        assert prompt.tokens == _words(prompt.messages) <= budget  # room is left for the answer
        assert prompt.max_tokens == max(1, min(max_tokens, context_length - prompt.tokens))
        kept = [m for m in prompt.messages if m["role"] != "system"]
        assert kept[0]["role"] == "user" and (prompt.messages[0] == SYSTEM) == (messages[0] == SYSTEM)
        assert messages[-1]["content"].startswith(prompt.question) and prompt.question == kept[-1]["content"]
        assert bool(prompt.notices) == (prompt.messages != messages)  # whatever was left out or cut is said
