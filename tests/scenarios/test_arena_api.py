"""The arena over REST (`/api/arena/...`): a battle returns both anonymous answers, votes reveal the models once per
person, refusals are one-line JSON errors, and the leaderboard carries strengths with intervals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from modelbay.adapters.api import create_app
from modelbay.config import Settings
from modelbay.runtime import Runtime
from tests.support.asgi import serve
from tests.support.chat import installed

TOKEN = "t0k3n"


@pytest.fixture
def api(settings: Settings, tiny_chat_model: Path, tiny_model: Path) -> Iterator[httpx.Client]:
    """The API over a runtime with two tiny models installed (answered in this process, short greedy answers)."""
    settings.api_token = SecretStr(TOKEN)
    settings.chat_temperature = 0.0
    settings.chat_max_tokens = 8
    settings.arena_bootstrap_rounds = 20
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model, name="tiny-chat")
    try:
        with serve(create_app(runtime)) as url, httpx.Client(base_url=url, timeout=120,
                                                             headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            client.runtime = runtime  # type: ignore[attr-defined]
            client.second = tiny_model  # type: ignore[attr-defined]
            yield client
    finally:
        runtime.close()


def test_a_battle_over_rest_answers_both_sides_and_votes_reveal_them(api) -> None:
    one = api.post("/api/arena/battles", json={"prompt": "Hello!"})
    assert one.status_code == 409 and "only one is" in one.json()["error"] and one.json()["type"] == "ArenaNeedsModels"
    installed(api.runtime.registry, api.second, name="tiny-base")

    made = api.post("/api/arena/battles", json={"prompt": "Hello!", "category": "chat", "user": "ann"})
    assert made.status_code == 201, made.text
    battle = made.json()
    assert battle["status"] == "ready" and battle["category"] == "chat"
    assert battle["a"]["text"] and battle["b"]["text"] and battle["a"]["status"] == "ok"
    assert "model" not in battle["a"]  # anonymous until a vote

    voted = api.post(f"/api/arena/battles/{battle['id']}/votes", json={"outcome": "tie", "user": "ann"})
    assert voted.status_code == 201, voted.text
    assert {voted.json()["a"]["model"], voted.json()["b"]["model"]} == {"tiny-chat", "tiny-base"}
    again = api.post(f"/api/arena/battles/{battle['id']}/votes", json={"outcome": "a", "user": "ann"})
    assert again.status_code == 409 and again.json()["type"] == "AlreadyVoted"
    assert api.post(f"/api/arena/battles/{battle['id']}/votes", json={"outcome": "a", "user": "bob"}).status_code == 201
    assert api.post("/api/arena/battles/424242/votes", json={"outcome": "a"}).status_code == 404
    assert api.post(f"/api/arena/battles/{battle['id']}/votes", json={"outcome": "maybe"}).status_code == 422

    board = api.get("/api/arena/leaderboard").json()
    assert board["votes"] == 2 and board["rounds"] == 20 and len(board["standings"]) == 2
    first = board["standings"][0]
    assert first["low"] <= first["strength"] <= first["high"] and first["battles"] == 2
    assert first["rank"] is None and first["provisional"] is True  # two battles: too few to rank
    assert api.get("/api/arena/leaderboard", params={"category": "code"}).json()["standings"] == []
