"""engine/inference/templates.py without a model: conversations shaped for strict templates (`alternating`,
`folded`) and a server's refusal read for what it asks (`refuses_system`, `wants_system`, `wants_alternation`)."""

from __future__ import annotations

import random

import pytest

from modelbay.engine.inference.templates import (
    ChatTemplate,
    alternating,
    folded,
    refuses_system,
    wants_alternation,
    wants_system,
)
from tests.support.messages import SYSTEM, assistant, roles_alternate, system, user



def test_runs_of_one_role_are_merged_and_answers_before_any_question_dropped() -> None:
    messages = [system(), assistant("orphan"), user("a"), user("b"), assistant("x"), assistant("y"), user("c")]
    assert alternating(messages) == [system(), user("a\n\nb"), assistant("x\n\ny"), user("c")]
    rng = random.Random(12)
    for _ in range(300):  # whatever a stored history holds, the request alternates and loses no question
        history = [rng.choice([user, assistant])(str(i)) for i in range(rng.randint(0, 8))]
        shaped = alternating([system(), *history, user("newest")])
        assert roles_alternate(shaped) and shaped[-1]["content"].endswith("newest")
        asked = [m["content"] for m in history if m["role"] == "user"]
        assert all(any(q in m["content"] for m in shaped if m["role"] == "user") for q in asked)


def test_a_system_prompt_is_folded_into_the_first_question() -> None:
    assert folded([system(), user("hi"), assistant("yo"), user("more")]) == [
        user(f"{SYSTEM}\n\nhi"), assistant("yo"), user("more")]
    assert folded([user("hi")]) == [user("hi")]
    assert folded([system()]) == [user(SYSTEM)]


def test_shaping_keeps_every_question_and_the_system_prompt_exactly_once() -> None:
    rng = random.Random(7)
    for _ in range(300):
        history = [rng.choice([user, assistant])(f"m{i}") for i in range(rng.randint(0, 8))]
        messages = [system(), *history, user("newest")]
        shaped = folded(alternating(messages))
        assert all(m["role"] != "system" for m in shaped) and roles_alternate(shaped)
        assert sum(m["content"].count(SYSTEM) for m in shaped) == 1 and shaped[0]["content"].startswith(SYSTEM)
        assert alternating(alternating(messages)) == alternating(messages)  # shaping twice changes nothing
    assert messages[0] == system()  # the input is left as it was


# Refusals as real templates word them (Gemma, Mistral v0.1, Llama 2 / Mistral) and as a template may demand one.
@pytest.mark.parametrize(("reason", "refuses", "wants", "alternation"), [
    ("System role not supported", True, False, False),
    ("Only user and assistant roles are supported!", True, False, False),
    ("Conversation roles must alternate user/assistant/user/assistant/...", False, False, True),
    ("A system message is required", False, True, False),
    ("The conversation must start with a system message", False, True, False),
    ("No forbidden words please", False, False, False),
])
def test_a_refusal_is_read_for_what_the_template_asks(reason: str, refuses: bool, wants: bool,
                                                      alternation: bool) -> None:
    assert (refuses_system(reason), wants_system(reason), wants_alternation(reason)) == (refuses, wants, alternation)


def test_without_a_tokenizer_a_prompt_is_estimated_and_every_shape_taken() -> None:
    template = ChatTemplate(None, "remote")
    short, longer = [user("hi")], [user("hi " * 300)]
    assert not template.rendered and template.takes_system
    assert 0 < template.count(short) < template.count(longer)
    template.check([assistant("a"), assistant("b")])  # nothing to check against: no refusal
