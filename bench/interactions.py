"""Discord interaction answer time: ModelBay's commands against a bare discord.py command, same client, same run.

The real discord.py client is connected to the Discord stand-in of the tests (HTTP API + gateway on this
machine). Each round sends INTERACTION_CREATE over the gateway and times until the interaction callback arrives
at the stand-in: (a) `/ping`, a bare discord.py app command answering "pong" (the baseline: gateway, parsing,
HTTP); (b) ModelBay's `/help` (spec, dispatcher, role, rendering to embeds); (c) `/models list` (plus a registry
query). Discord allows 3 s; the goal is ModelBay's p95 under 100 ms and within 50 ms of the baseline. Prints a
final JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import latency_stats  # noqa: E402 - after the path is set

ROUNDS = 100
WARMUP = 5


def main() -> None:
    import discord
    from pydantic import SecretStr

    from modelbay.adapters.discord import DiscordAdapter
    from modelbay.config import load_settings
    from modelbay.runtime import Runtime
    from tests.support.discord import BOT_TOKEN, DiscordStandIn, member

    with tempfile.TemporaryDirectory() as tmp, DiscordStandIn() as standin:
        settings = load_settings(home=Path(tmp) / "home", environment="test", discord_api_url=standin.api_url,
                                 discord_gateway_url=standin.gateway_url)
        settings.discord_token = SecretStr(BOT_TOKEN)
        runtime = Runtime(settings)
        runtime.prepare()
        adapter = DiscordAdapter(runtime)

        @adapter.client.tree.command(name="ping", description="Baseline: answers pong.")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        loop = asyncio.new_event_loop()

        def run() -> None:
            try:
                loop.run_until_complete(adapter.start())
            finally:
                loop.run_until_complete(adapter.client.close())  # finishes the close asked for below

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not adapter.client.is_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        cases = {"ping": ("ping", []), "help": ("help", []),
                 "models_list": ("models", [{"name": "list", "type": 1, "options": []}])}
        samples: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for i in range(WARMUP + ROUNDS):
                for name, (command, options) in cases.items():
                    seen = len(standin.to("POST", "/callback"))
                    started = time.monotonic()
                    token = standin.command(command, options, member=member("500000000000000001"))
                    call = standin.wait("POST", "/callback", lambda c, t=token: t in c.path, timeout=10)[0]
                    assert len(standin.to("POST", "/callback")) == seen + 1
                    if i >= WARMUP:
                        samples[name].append(call.at - started)
        finally:
            asyncio.run_coroutine_threadsafe(adapter.client.close(), loop)
            thread.join(15)
            runtime.close()
    result = {name: latency_stats(values) for name, values in samples.items()}
    result["rounds"] = ROUNDS
    overhead = max(result["help"]["p95_ms"], result["models_list"]["p95_ms"]) - result["ping"]["p95_ms"]
    result["p95_overhead_ms"] = round(overhead, 2)
    result["goal_met"] = overhead <= 50 and max(result["help"]["p95_ms"], result["models_list"]["p95_ms"]) < 100
    print(json.dumps(result))


if __name__ == "__main__":
    main()
