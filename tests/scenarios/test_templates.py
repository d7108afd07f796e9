"""Chat templates with rules: no system role (Gemma), strictly alternating turns (Mistral), refusals in one line.

Shaping conversations without a model is a unit test (tests/unit/engine/inference/test_templates.py)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelbay.bot import Actor, Dispatcher
from modelbay.bot.conversation import converse
from modelbay.bot.errors import render_error
from modelbay.config import load_settings
from modelbay.engine.chat.records import Answered, Delta, Notice, Place
from modelbay.engine.db.database import Database
from modelbay.engine.errors import TemplateRefused
from modelbay.engine.inference.backends.base import Finished, Generation
from modelbay.engine.inference.backends.transformers import TransformersBackend
from modelbay.engine.inference.templates import no_system_notice
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL
from tests.support.chat import installed, served_by
from tests.support.openai_standin import Script, StandIn
from tests.support.tinymodel import (  # noqa: F401 - fixtures
    CHAT_TEMPLATE,
    chat_corpus,
    tiny_gemma_model,
    tiny_mistral_model,
    with_chat_template,
)
from tests.support.messages import SYSTEM, assistant, roles_alternate, system, user

HERE = Place("slack", "C1", "T1")
ALICE = "slack:UALICE"
NO_SYSTEM = "System role not supported."
ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
# A template that refuses any message holding a word, to reach a refusal ModelBay cannot shape its way around.
PICKY_TEMPLATE = ("{% for message in messages %}{% if 'forbidden' in message['content'] %}"
                  "{{ raise_exception('No forbidden words\nplease') }}{% endif %}{% endfor %}" + CHAT_TEMPLATE)
# A template that demands a system message: a chat without a system prompt cannot be shaped for it.
SYSTEM_REQUIRED_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}"
                            "{{ raise_exception('A system message is required') }}{% endif %}" + CHAT_TEMPLATE)


# -- in-process backends -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma(tiny_gemma_model: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(tiny_gemma_model, device="cpu", label="tiny-gemma")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def mistral(tiny_mistral_model: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(tiny_mistral_model, device="cpu", label="tiny-mistral")
    yield backend
    backend.close()


def test_whether_a_template_takes_a_system_message_is_found_by_rendering_it(gemma: TransformersBackend,
                                                                              mistral: TransformersBackend,
                                                                              tiny_chat_model: Path) -> None:
    assert not gemma.takes_system and mistral.takes_system
    assert TransformersBackend(tiny_chat_model, device="cpu").takes_system


@pytest.mark.parametrize("which", ["gemma", "mistral"])
def test_every_prompt_takes_a_shape_the_template_accepts(which: str, request: pytest.FixtureRequest) -> None:
    backend: TransformersBackend = request.getfixturevalue(which)
    rng = random.Random(3)
    for conversation in chat_corpus(seed=5)[:60]:
        # The corpus's conversations, with what a broken history may add: a question left without its answer.
        history = [m for m in conversation if m["role"] != "system"]
        if rng.random() < 0.5:
            history.insert(rng.randrange(len(history) + 1), user("Unanswered?"))
        systems = [m for m in conversation if m["role"] == "system"]
        messages = [*systems, *history, user("What color is the sky?")]
        prompt = backend.prompt(messages, Generation(max_tokens=32))
        assert roles_alternate(prompt.messages) and prompt.question == "What color is the sky?"
        exact = backend.count_tokens(prompt.messages)  # the template takes it (TemplateRefused otherwise)
        assert prompt.tokens >= exact  # the quick bound is never below the exact count
        if systems:
            first = prompt.messages[0]
            assert first == systems[0] if backend.takes_system else first["content"].startswith(systems[0]["content"])


@pytest.mark.parametrize("which", ["gemma", "mistral"])
def test_a_conversation_cut_to_fit_keeps_its_system_prompt_in_a_shape_the_template_accepts(
        which: str, request: pytest.FixtureRequest) -> None:
    backend: TransformersBackend = request.getfixturevalue(which)
    history = [m for i in range(40) for m in (user(f"Question {i} about the sea?"), assistant(f"Answer {i}. " * 8))]
    messages = [system(), user("Lost question"), *history, user("Tell me about rain. " * 200)]
    prompt = backend.prompt(messages, Generation(max_tokens=32))
    assert roles_alternate(prompt.messages) and prompt.notices
    assert prompt.tokens == backend.count_tokens(prompt.messages) <= backend.context_length - 32
    assert prompt.messages[0]["content"].startswith(SYSTEM)  # as a system message, or at the start of the first
    assert prompt.messages[-1]["content"].endswith(prompt.question) and "Tell me about rain." in prompt.question


@pytest.mark.parametrize("which", ["gemma", "mistral"])
def test_in_process_answers_stream_through_templates_with_rules(which: str, request: pytest.FixtureRequest) -> None:
    backend: TransformersBackend = request.getfixturevalue(which)
    messages = [system(), user("Hello!"), user("What color is the sky?")]  # a lone question left in the history
    prompt = backend.prompt(messages, Generation(max_tokens=24))
    items = list(backend.stream(prompt.messages, Generation(max_tokens=24, temperature=0)))
    assert isinstance(items[-1], Finished) and "".join(i for i in items if isinstance(i, str))


def test_a_shape_a_template_refuses_is_one_line_naming_the_model(gemma: TransformersBackend,
                                                               mistral: TransformersBackend) -> None:
    with pytest.raises(TemplateRefused) as raised:
        list(gemma.stream([system(), user("hi")], Generation(max_tokens=4)))
    assert str(raised.value).startswith(f"The chat template of tiny-gemma refused the conversation: {NO_SYSTEM} ")
    with pytest.raises(TemplateRefused) as raised:
        mistral.count_tokens([user("a"), user("b")])
    assert str(raised.value).startswith(f"The chat template of tiny-mistral refused the conversation: {ALTERNATE}")
    assert "\n" not in str(raised.value)
    shown = render_error(raised.value)
    assert shown.title == "The model's template refused" and "tiny-mistral" in shown.text


# -- chats ---------------------------------------------------------------------------------------------------
@pytest.fixture
def runtime(database: Database, redis, tmp_path: Path, tiny_gemma_model: Path,  # noqa: ANN001
            tiny_mistral_model: Path) -> Iterator[Runtime]:
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             environment="test", chat_temperature=0.0, chat_max_tokens=32)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_gemma_model, name="tiny-gemma")
    installed(runtime.registry, tiny_mistral_model, name="tiny-mistral")
    yield runtime
    runtime.close()


def _events(runtime: Runtime, place: Place, text: str, actor: Actor = Actor("slack", "UALICE")) -> list[object]:
    dispatcher = Dispatcher(runtime, reraise_unknown=True)  # an unknown error fails the test

    async def talk() -> list[object]:
        return [event async for event in converse(dispatcher.context(actor, place), text)]

    return asyncio.run(talk())


def _set(runtime: Runtime, **changes: object) -> None:
    runtime.chats.settings = load_settings(**{**runtime.settings.model_dump(), **changes})


@pytest.mark.parametrize("model", ["tiny-gemma", "tiny-mistral"])
def test_a_chat_with_a_system_prompt_works_and_says_once_where_the_prompt_goes(runtime: Runtime, model: str) -> None:
    dispatcher = Dispatcher(runtime, reraise_unknown=True)
    opened = asyncio.run(dispatcher.dispatch_line(f"/chat {model} {SYSTEM}", Actor("slack", "UALICE"), HERE))
    said = no_system_notice(runtime.registry.get(model).display_name)
    assert opened.title.startswith("Chatting with") and opened.plain().count(said) == (model == "tiny-gemma")
    backend = runtime.chats.backend_of(runtime.chats.current(HERE))
    first = _events(runtime, HERE, "What color is the sky?")
    second = _events(runtime, HERE, "What sound does a cow make?")
    for events in (first, second):
        assert not [e for e in events if isinstance(e, Notice)]  # said in the card, not again at each answer
        assert events[-1].answer.status == "ok" and events[-1].answer.text
    # The model got the system prompt (greedy: the same text as a direct call with the expected request).
    expected = ([user(f"{SYSTEM}\n\nWhat color is the sky?")] if model == "tiny-gemma"
                else [system(), user("What color is the sky?")])
    direct = "".join(p for p in backend.stream(expected, Generation(max_tokens=32, temperature=0))
                     if isinstance(p, str))
    assert first[-1].answer.text == direct
    history = runtime.chats.history(runtime.chats.current(HERE).id)
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert history[0]["content"] == "What color is the sky?"  # the system prompt is not stored into the history


def test_a_chat_without_a_system_prompt_never_meets_a_system_message(runtime: Runtime) -> None:
    runtime.chats.open(HERE, ALICE, "tiny-gemma")
    events = _events(runtime, HERE, "Hello!")
    assert events[-1].answer.status == "ok" and not [e for e in events if isinstance(e, Notice)]


@pytest.mark.parametrize("model", ["tiny-gemma", "tiny-mistral"])
def test_a_question_without_an_answer_is_not_kept_and_the_next_answer_works(runtime: Runtime, model: str) -> None:
    session = runtime.chats.open(HERE, ALICE, model, SYSTEM if model == "tiny-mistral" else None)
    assert _events(runtime, HERE, "Hello!")[-1].answer.status == "ok"
    # Each token takes longer than the idle timeout: the answer fails before its first token.
    slow = runtime.chats.backend_of(session).model.register_forward_pre_hook(lambda *args: time.sleep(1.0))
    _set(runtime, chat_idle_timeout=0.2)
    try:
        failed = _events(runtime, HERE, "What color is the sky?")[-1].answer
    finally:
        slow.remove()
        _set(runtime, chat_idle_timeout=30.0)
    assert failed.status == "failed" and failed.note == "No answer: The model produced nothing for 0.2 s."
    # Stopped before any text: not kept either.
    stop = threading.Event()
    stop.set()
    stopped = list(runtime.chats.answer(session, ALICE, "Are you there?", stop))[-1].answer
    assert stopped.status == "canceled" and stopped.text == ""
    after = _events(runtime, HERE, "What sound does a cow make?")
    assert after[-1].answer.status == "ok" and after[-1].answer.text
    history = runtime.chats.history(session.id)
    assert [m["content"] for m in history if m["role"] == "user"] == ["Hello!", "What sound does a cow make?"]
    assert roles_alternate(history)


def test_requests_alternate_whatever_the_stored_history_holds(runtime: Runtime) -> None:
    with StandIn() as server:
        served_by(runtime, "tiny-gemma", server.endpoint)
        session = runtime.chats.open(HERE, ALICE, "tiny-gemma", SYSTEM)
        assert _events(runtime, HERE, "Hello!")[-1].answer.status == "ok"
        # The idle timeout passes before the first piece: no answer.
        server.script = Script(pieces=[], end="stall", stall_for=3)
        _set(runtime, chat_idle_timeout=0.3)
        failed = _events(runtime, HERE, "What color is the sky?")[-1].answer
        _set(runtime, chat_idle_timeout=30.0)
        assert failed.status == "failed" and "sent nothing for 0.3 s" in failed.note
        server.script = Script()
        assert _events(runtime, HERE, "What sound does a cow make?")[-1].answer.status == "ok"
        # A history an older version stored: questions left without answers, an answer without its question.
        key = f"modelbay:chat:{session.id}:history"
        runtime.redis.delete(key)
        runtime.redis.rpush(key, '{"role": "assistant", "content": "orphan"}', '{"role": "user", "content": "q1"}',
                            '{"role": "user", "content": "q2"}', '{"role": "assistant", "content": "a2"}',
                            '{"role": "user", "content": "q3"}')
        assert _events(runtime, HERE, "Goodbye.")[-1].answer.status == "ok"
    sent = [body["messages"] for body in server.bodies]
    assert all(roles_alternate(messages) for messages in sent)
    assert sent[0] == [user(f"{SYSTEM}\n\nHello!")]  # the system prompt went into the first question
    assert [m["content"] for m in sent[2]] == [f"{SYSTEM}\n\nHello!", "Hello there.", "What sound does a cow make?"]
    assert sent[3] == [user(f"{SYSTEM}\n\nq2"), assistant("a2"), user("Goodbye.")]


@pytest.fixture
def picky(runtime: Runtime, tiny_chat_model: Path) -> str:
    installed(runtime.registry, with_chat_template(tiny_chat_model, PICKY_TEMPLATE, "tiny-picky"), name="tiny-picky")
    return "tiny-picky"


def test_a_conversation_the_template_refuses_is_a_failed_answer_in_one_line_and_the_chat_goes_on(
        runtime: Runtime, picky: str) -> None:
    session = runtime.chats.open(HERE, ALICE, picky, SYSTEM)
    refused = _events(runtime, HERE, "A forbidden question.")
    answer = refused[-1].answer
    assert isinstance(refused[-1], Answered) and not [e for e in refused if isinstance(e, Delta)]
    assert answer.status == "failed" and answer.note == (
        "No answer: The chat template of tiny-picky refused the conversation: No forbidden words\\nplease. Tell an "
        "admin: the model's chat template refuses this conversation.")
    assert _events(runtime, HERE, "Hello!")[-1].answer.status == "ok"
    assert [m["content"] for m in runtime.chats.history(session.id)][::2] == ["Hello!"]
    # Too long to take the quick bound: the exact count meets the refusal before the answer starts.
    with pytest.raises(TemplateRefused) as raised:
        _events(runtime, HERE, "forbidden " * 400)
    shown = render_error(raised.value)
    assert shown.title == "The model's template refused" and shown.text.startswith("The chat template of tiny-picky")


def test_a_template_that_demands_a_system_message_says_to_set_one_and_then_answers(runtime: Runtime,
                                                                                  tiny_chat_model: Path) -> None:
    installed(runtime.registry, with_chat_template(tiny_chat_model, SYSTEM_REQUIRED_TEMPLATE, "tiny-sysreq"),
              name="tiny-sysreq")
    runtime.chats.open(HERE, ALICE, "tiny-sysreq")
    with pytest.raises(TemplateRefused) as raised:
        _events(runtime, HERE, "Hello!")
    shown = render_error(raised.value)
    # Not "start a new chat with `/chat tiny-sysreq`", which meets the same refusal: the advice is what changes it.
    assert shown.text == ("The chat template of tiny-sysreq refused the conversation: A system message is required. "
                          "Set a system prompt with `/chat tiny-sysreq <system prompt>`.")
    runtime.chats.open(HERE, ALICE, "tiny-sysreq", SYSTEM)
    assert _events(runtime, HERE, "Hello!")[-1].answer.status == "ok"
