"""Chat sessions on both databases and the machine's Redis: streaming, order, history, failures, ratings, privacy."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from modelbay.config import load_settings
from modelbay.engine.chat.records import Answered, Delta, Notice, Place
from modelbay.engine.chat.chats import Chats
from modelbay.engine.db.database import Database
from modelbay.engine.errors import AnswerNotFound, ModelNotFound, NeedsInstall, NoChatHere, NotServed, WrongReason
from modelbay.engine.inference.backends.transformers import TransformersBackend
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.chat import Feedback, Message
from modelbay.engine.db.schema.catalog import ModelVersion
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL
from tests.support.chat import installed, served_by
from modelbay.engine.inference.templates import no_system_notice
from tests.support.openai_standin import Script, StandIn, no_system

HERE = Place("slack", "C1", "T1")
ALICE, BOB = "slack:UALICE", "slack:UBOB"


@pytest.fixture
def runtime(database: Database, redis, tmp_path: Path, tiny_chat_model: Path) -> Iterator[Runtime]:
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             environment="test", chat_temperature=0.0, chat_max_tokens=48)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    yield runtime
    runtime.close()


def _answer(runtime: Runtime, session, user: str, text: str) -> tuple[list[object], object]:  # noqa: ANN001
    events = list(runtime.chats.answer(session, user, text))
    return events, events[-1].answer


def test_an_answer_streams_is_stored_and_measured_without_its_text(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat", "You are a helpful assistant.")
    events, answer = _answer(runtime, session.id, ALICE, "What color is the sky?")
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) >= 3 and isinstance(events[-1], Answered)
    assert answer.text == "".join(d.text for d in deltas) and answer.status == "ok" and answer.backend == "transformers"
    assert answer.ttft_ms > 0 and answer.total_ms >= answer.ttft_ms and answer.output_tokens >= len(deltas)
    with runtime.db.session() as db:
        messages = db.scalars(select(Message).order_by(Message.id)).all()
        assert [(m.role, m.content, m.user_key) for m in messages] == [("user", None, ALICE), ("assistant", None, ALICE)]
        event = db.scalars(select(AnalyticsEvent)).one()
        assert (event.message_id, event.backend, event.output_tokens) == (answer.message_id, "transformers",
                                                                          answer.output_tokens)
    assert runtime.analytics.metrics([session.model_version_id], None).requests == 1


def test_transcripts_are_stored_only_when_the_operator_turns_them_on(runtime: Runtime) -> None:
    runtime.chats.settings = load_settings(**{**runtime.settings.model_dump(), "store_transcripts": True})
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    _, answer = _answer(runtime, session.id, ALICE, "What sound does a cow make?")
    with runtime.db.session() as db:
        contents = [m.content for m in db.scalars(select(Message).order_by(Message.id))]
    assert contents == ["What sound does a cow make?", answer.text]


def test_the_conversation_carries_its_history(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    _, first = _answer(runtime, session.id, ALICE, "Hello!")
    _, second = _answer(runtime, session.id, ALICE, "What color is grass?")
    assert runtime.chats.history(session.id)[:2] == [{"role": "user", "content": "Hello!"},
                                                     {"role": "assistant", "content": first.text}]
    assert second.input_tokens > first.input_tokens + 5


def test_chatting_needs_an_installed_model_and_a_way_to_answer(runtime: Runtime) -> None:
    with pytest.raises(ModelNotFound):
        runtime.chats.open(HERE, ALICE, "no-such-model")
    runtime.registry.upsert({"name": "not-here", "display_name": "Not here", "category": "chat"}, source="local")
    with pytest.raises(NeedsInstall, match="`/models install not-here`"):
        runtime.chats.open(HERE, ALICE, "not-here")
    runtime.chats.settings = load_settings(**{**runtime.settings.model_dump(), "chat_in_process": False})
    with pytest.raises(NotServed, match="`/models serve tiny-chat`"):
        runtime.chats.open(HERE, ALICE, "tiny-chat")


def test_a_chat_belongs_to_its_place_and_a_new_one_replaces_it(runtime: Runtime) -> None:
    assert runtime.chats.current(HERE) is None
    first = runtime.chats.open(HERE, ALICE, "tiny-chat")
    other = runtime.chats.open(Place("slack", "C1", "T2"), BOB, "tiny-chat")
    assert runtime.chats.current(HERE).id == first.id != other.id
    second = runtime.chats.open(HERE, BOB, "tiny-chat", "Be brief.")
    assert runtime.chats.current(HERE) == second and second.system_prompt == "Be brief."
    with pytest.raises(NoChatHere):
        runtime.chats.answer(first.id, ALICE, "hi").__next__()
    runtime.chats.close(HERE)
    assert runtime.chats.current(HERE) is None
    with pytest.raises(NoChatHere):
        runtime.chats.close(HERE)


def test_over_long_input_is_cut_with_a_notice(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    events, answer = _answer(runtime, session.id, ALICE, "Tell me about the sea. " * 300)
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices and "cut to its first" in notices[0] and answer.notices == notices
    assert answer.input_tokens <= 512


def test_two_messages_sent_at_once_are_answered_in_order(runtime: Runtime) -> None:
    with StandIn() as slow:
        slow.script = Script(pieces=["one", " two", " three"], delay=0.15)
        served_by(runtime, "tiny-chat", slow.endpoint)
        session = runtime.chats.open(HERE, ALICE, "tiny-chat")
        first = threading.Thread(target=lambda: list(runtime.chats.answer(session.id, ALICE, "first")))
        second = threading.Thread(target=lambda: list(runtime.chats.answer(session.id, ALICE, "second")))
        first.start()
        time.sleep(0.05)
        second.start()
        first.join(10)
        second.join(10)
    (q1, _, end1), (q2, start2, _) = slow.spans
    assert (q1, q2) == ("first", "second") and start2 >= end1
    assert [t["content"] for t in runtime.chats.history(session.id)] == ["first", "one two three", "second",
                                                                        "one two three"]


def test_a_backend_failing_mid_answer_keeps_the_partial_text(runtime: Runtime) -> None:
    with StandIn() as server:
        server.script = Script(pieces=["The sky", " is"], end="drop")
        served_by(runtime, "tiny-chat", server.endpoint)
        session = runtime.chats.open(HERE, ALICE, "tiny-chat")
        events, answer = _answer(runtime, session.id, ALICE, "What color is the sky?")
    assert [e.text for e in events if isinstance(e, Delta)] == ["The sky", " is"]
    assert answer.text == "The sky is" and answer.status == "partial"
    assert answer.note.startswith("The answer stopped early: The model server connection failed")
    assert runtime.chats.history(session.id)[-1] == {"role": "assistant", "content": "The sky is"}
    with runtime.db.session() as db:
        assert db.get(Message, answer.message_id).status == "partial"


def test_over_vllm_on_another_host_a_system_prompt_the_template_refuses_is_folded_and_said_once(
        runtime: Runtime, tiny_chat_model: Path, tmp_path: Path) -> None:
    # The model's files are on the GPU worker's host, not this one: the template's rules come from the server.
    installed(runtime.registry, tiny_chat_model, name="far-gemma")
    with runtime.db.session() as db:
        db.get(ModelVersion, runtime.registry.get("far-gemma").versions[0].id).local_path = str(tmp_path / "elsewhere")
    system = "Answer briefly."
    with StandIn() as server:
        server.script = Script(pieces=["Blue", "."], rules=no_system)
        served_by(runtime, "far-gemma", server.endpoint)
        session = runtime.chats.open(HERE, ALICE, "far-gemma", system)
        assert session.notices == ()  # not known yet
        said = no_system_notice("far-gemma")
        first, answer = _answer(runtime, session.id, ALICE, "What color is the sky?")
        assert [e.text for e in first if isinstance(e, Notice)] == [said] and answer.notices == [said]
        assert answer.status == "ok" and answer.text == "Blue." and len(server.bodies) == 2
        second, answer = _answer(runtime, session.id, ALICE, "And the grass?")
        assert not [e for e in second if isinstance(e, Notice)] and answer.status == "ok" and len(server.bodies) == 3
        assert server.bodies[2]["messages"][0] == {"role": "user", "content": f"{system}\n\nWhat color is the sky?"}
        # A chat opened later on that model is told in its card.
        opened = runtime.chats.open(Place("slack", "C2"), BOB, "far-gemma", system)
        assert opened.notices == (no_system_notice("Far Gemma"),)  # its display name
    sent = [[m["role"] for m in body["messages"]] for body in server.bodies]
    assert all(a != b for roles in sent for a, b in zip(roles, roles[1:]))
    assert runtime.chats.history(session.id)[0] == {"role": "user", "content": "What color is the sky?"}


def test_ratings_are_for_your_own_answers_and_can_change(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    _, answer = _answer(runtime, session.id, ALICE, "Hello!")
    assert runtime.chats.last_answer(HERE, ALICE) == answer.message_id
    first = runtime.chats.rate(answer.message_id, ALICE, True, "helpful")
    assert not first.changed
    changed = runtime.chats.rate(answer.message_id, ALICE, False, "too_verbose", "shorter please")
    assert changed.changed
    with pytest.raises(AnswerNotFound, match="someone else"):
        runtime.chats.rate(answer.message_id, BOB, True)
    with pytest.raises(AnswerNotFound, match="no answer #999999"):
        runtime.chats.rate(999999, ALICE, True)
    with pytest.raises(AnswerNotFound):
        runtime.chats.rate(answer.message_id - 1, ALICE, True)  # the question, not an answer
    with pytest.raises(WrongReason, match="not a reason for rating up"):
        runtime.chats.rate(answer.message_id, ALICE, True, "wrong")
    with runtime.db.session() as db:
        rows = db.scalars(select(Feedback)).all()
        assert [(r.rating, r.reason, r.comment) for r in rows] == [(-1, "too_verbose", "shorter please")]
    metrics = runtime.analytics.metrics([session.model_version_id], None)
    assert (metrics.ups, metrics.downs) == (0, 1)


def test_a_double_click_rates_once(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    _, answer = _answer(runtime, session.id, ALICE, "Hello!")
    clicks = 6
    together = threading.Barrier(clicks)
    failures: list[BaseException] = []

    def click() -> None:
        together.wait()
        try:
            runtime.chats.rate(answer.message_id, ALICE, True, "helpful")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=click) for _ in range(clicks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    with runtime.db.session() as db:
        assert [(r.rating, r.reason) for r in db.scalars(select(Feedback))] == [(1, "helpful")]
    assert runtime.analytics.metrics([session.model_version_id], None).ups == 1  # counted once


def test_opted_out_people_are_not_measured_and_delete_erases_them(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    _answer(runtime, session.id, ALICE, "Hello!")
    runtime.analytics.set_opt_out(BOB, True)
    bob = runtime.chats.open(Place("slack", "C9"), BOB, "tiny-chat")
    _answer(runtime, bob.id, BOB, "Hello!")
    with runtime.db.session() as db:
        assert [e.user_key for e in db.scalars(select(AnalyticsEvent))] == [ALICE]
    _, answer = _answer(runtime, session.id, ALICE, "Goodbye.")
    runtime.chats.rate(answer.message_id, ALICE, True)
    erased = runtime.chats.forget(ALICE)
    assert erased == {"ratings": 1, "events": 2, "messages": 4, "chats": 1, "experiment assignments": 0,
                      "arena votes": 0, "arena battles made anonymous": 0}
    assert runtime.chats.current(HERE) is None and runtime.chats.history(session.id) == []
    with runtime.db.session() as db:
        assert db.scalars(select(Message).where(Message.user_key == ALICE)).all() == []
        assert db.scalars(select(Message)).all()  # Bob's turns stay


def test_chat_commands_check_roles_and_say_what_to_do(runtime: Runtime) -> None:
    import asyncio

    from modelbay.bot import Actor, Dispatcher

    runtime.settings.roles["viewer"] = ["slack:UVIEW"]
    dispatcher = Dispatcher(runtime, reraise_unknown=True)
    user, viewer = Actor("slack", "UALICE"), Actor("slack", "UVIEW")

    def run(line: str, actor: Actor = user, place: Place | None = HERE):  # noqa: ANN202
        return asyncio.run(dispatcher.dispatch_line(line, actor, place))

    refused = run("/models serve tiny-chat")
    assert refused.title == "Not allowed" and "admin" in refused.text
    assert run("/chat tiny-chat", viewer).title == "Not allowed"
    assert run("/rate up").title == "No chat here"
    opened = run("/chat tiny-chat Answer briefly.")
    assert opened.title == "Chatting with Tiny Chat" and "System prompt: Answer briefly." in opened.plain()
    assert run("/rate up").text.startswith("There is no answer to rate yet")
    assert run("/rate sideways").title == "Check the command"
    assert run("/models stop tiny-chat", Actor("console", "root")).title == "Not running"
    assert run("/analytics model tiny-chat").text.startswith("No answers recorded yet")
    assert run("/privacy optout").tone == "success"
    assert "You opted out" in run("/privacy status").text
    assert run("/chat end").text.startswith("Chat with `tiny-chat` ended")
    assert run("/chat end").title == "No chat here"


def _answered(events: list[object]) -> object:
    return [e for e in events if isinstance(e, Answered)][-1].answer


def test_an_evicted_in_process_model_is_closed_once_its_answer_ends_and_then_released(runtime: Runtime,
                                                                                      tiny_chat_model: Path) -> None:
    installed(runtime.registry, tiny_chat_model, name="tiny-chat-two")
    chats = Chats(runtime.settings, runtime.db, runtime.redis, runtime.registry, runtime.servers, runtime.analytics,
                  keep_in_process=1)
    first = chats.open(HERE, ALICE, "tiny-chat")
    backend = chats.backend_of(first)
    assert isinstance(backend, TransformersBackend)
    model = weakref.ref(backend.model)
    answering = chats.answer(first, ALICE, "What color is the sky?")
    assert isinstance(next(e for e in answering if isinstance(e, Delta)), Delta)  # mid-answer
    second = chats.open(Place("slack", "C2"), BOB, "tiny-chat-two")  # a cache of 1: the first model is evicted
    assert chats.backend_of(second) is not backend
    assert backend.model is not None  # still answering through it
    assert _answered(list(answering)).status == "ok"
    assert backend.model is None  # closed when its answer ended
    del answering
    gc.collect()
    assert model() is None  # nothing keeps the evicted model alive
    # The first chat still answers: its model is loaded again, and the second one's goes in its place.
    other = chats.backend_of(second)
    assert _answered(list(chats.answer(first, ALICE, "Hi"))).status == "ok"
    assert other.model is None and chats.backend_of(first).model is not None


def test_ending_the_last_chat_on_a_model_releases_it(runtime: Runtime) -> None:
    first = runtime.chats.open(HERE, ALICE, "tiny-chat")
    runtime.chats.open(Place("slack", "C2"), BOB, "tiny-chat")
    backend = runtime.chats.backend_of(first)
    model = weakref.ref(backend.model)
    runtime.chats.close(HERE)
    assert backend.model is not None  # Bob's chat still uses it
    runtime.chats.close(Place("slack", "C2"))
    assert backend.model is None
    gc.collect()
    assert model() is None


def test_a_stopped_answer_keeps_what_arrived_as_canceled(runtime: Runtime) -> None:
    with StandIn() as server:
        server.script = Script(pieces=[f" word{i}" for i in range(50)], delay=0.05)
        served_by(runtime, "tiny-chat", server.endpoint)
        session = runtime.chats.open(HERE, ALICE, "tiny-chat")
        stop = threading.Event()
        events = []
        for event in runtime.chats.answer(session, ALICE, "Tell me a story.", stop):
            events.append(event)
            if len(events) == 3:
                stop.set()
    answer = _answered(events)
    assert answer.status == "canceled" and answer.text == " word0 word1 word2"
    assert answer.note == "You stopped this answer; the text so far is kept."
    assert runtime.chats.history(session.id)[-1] == {"role": "assistant", "content": answer.text}
    metrics = runtime.analytics.metrics([session.model_version_id], None)
    assert metrics.requests == 1 and metrics.failures == 0


def test_answers_on_more_models_than_the_cache_holds_all_complete(runtime: Runtime, tiny_chat_model: Path) -> None:
    installed(runtime.registry, tiny_chat_model, name="tiny-chat-two")
    chats = Chats(runtime.settings, runtime.db, runtime.redis, runtime.registry, runtime.servers, runtime.analytics,
                  keep_in_process=1)
    chats_open = [chats.open(HERE, ALICE, "tiny-chat"), chats.open(Place("slack", "C2"), BOB, "tiny-chat-two")]
    statuses: list[str] = []

    def talk(chat, user: str) -> None:  # noqa: ANN001
        for _ in range(3):  # each answer evicts the other model, which may be answering at that moment
            statuses.append(_answered(list(chats.answer(chat, user, "What color is the sky?"))).status)

    threads = [threading.Thread(target=talk, args=(chat, user)) for chat, user in zip(chats_open, (ALICE, BOB))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert statuses == ["ok"] * 6


def test_uninstalling_a_model_frees_it_at_once_and_closing_frees_the_rest(runtime: Runtime,
                                                                          tiny_chat_model: Path) -> None:
    in_store = runtime.installs.store.path("local/stored-chat", "a" * 40)
    shutil.copytree(tiny_chat_model, in_store)
    installed(runtime.registry, in_store, name="stored-chat")
    first = runtime.chats.open(HERE, ALICE, "stored-chat")
    backend = runtime.chats.backend_of(first)
    model = weakref.ref(backend.model)
    runtime.uninstall("stored-chat", force=True)
    assert backend.model is None  # at once, not at the chat's next message: its files are gone
    gc.collect()
    assert model() is None
    other = runtime.chats.backend_of(runtime.chats.open(Place("slack", "C2"), BOB, "tiny-chat"))
    runtime.close()
    assert other.model is None


def test_a_message_with_a_lone_surrogate_is_answered(runtime: Runtime) -> None:
    session = runtime.chats.open(HERE, ALICE, "tiny-chat")
    events, answer = _answer(runtime, session, ALICE, "hello \udc7a there")
    assert answer.status == "ok" and answer.text
    assert runtime.chats.history(session.id)[-2] == {"role": "user", "content": "hello ? there"}
