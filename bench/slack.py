"""Slack acknowledgement time: a signed `/modelbay` request through uvicorn, bolt and ModelBay's listeners.

Slack gives an app 3 seconds to acknowledge. This measures, over real HTTP on this machine, the time from
sending a signed slash command (`/modelbay models search qwen source:registry`, a slow command whose work runs after the ack)
and a signed button press to the 200 answer, against a baseline in the same run: `GET /healthz` of the same
server (uvicorn + FastAPI and nothing else). Replies go to the recording Slack stand-in of the tests. The goal:
p95 ack well under 3 s (target 100 ms) whatever the command does. Prints a final JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import latency_stats  # noqa: E402 - after the path is set

ROUNDS = 200
WARMUP = 10


def main() -> None:
    import httpx
    from pydantic import SecretStr

    from modelbay.adapters.api import create_app
    from modelbay.config import load_settings
    from modelbay.runtime import Runtime
    from tests.support.asgi import serve
    from tests.support.slack import BOT_TOKEN, SIGNING_SECRET, SignedRequests, SlackStandIn

    with tempfile.TemporaryDirectory() as tmp, SlackStandIn() as standin:
        settings = load_settings(home=Path(tmp) / "home", environment="test", slack_api_url=standin.api_url,
                                 hub_endpoint="http://127.0.0.1:9", source_search_timeout=1.0)
        settings.slack_bot_token = SecretStr(BOT_TOKEN)
        settings.slack_signing_secret = SecretStr(SIGNING_SECRET)
        runtime = Runtime(settings)
        runtime.prepare()
        try:
            with serve(create_app(runtime)) as url:
                slack = SignedRequests(f"{url}/slack/events", standin)
                health = httpx.Client(base_url=url)
                button = {"action_id": "mb_run_0", "value": "/models info qwen2.5-0.5b-instruct"}
                samples: dict[str, list[float]] = {"healthz": [], "command": [], "button": []}
                for i in range(WARMUP + ROUNDS):
                    for name, send in (("healthz", lambda: health.get("/healthz")),
                                       ("command", lambda: slack.command("models search qwen source:registry")),
                                       ("button", lambda: slack.button(button))):
                        started = time.perf_counter()
                        response = send()
                        took = time.perf_counter() - started
                        assert response.status_code == 200, response.text
                        if i >= WARMUP:
                            samples[name].append(took)
                standin.wait("chat.update", count=ROUNDS, timeout=120)  # the work after each ack did happen
                slack.close()
                health.close()
        finally:
            runtime.close()
    result = {name: latency_stats(values) for name, values in samples.items()}
    result["rounds"] = ROUNDS
    result["ack_overhead_p50_ms"] = round(result["command"]["p50_ms"] - result["healthz"]["p50_ms"], 2)
    result["goal_met"] = result["command"]["p95_ms"] < 100 and result["button"]["p95_ms"] < 100
    print(json.dumps(result))


if __name__ == "__main__":
    main()
