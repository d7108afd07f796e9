"""/experiments end to end with two tiny models answering in this process, on SQLite and PostgreSQL: start (and its
refusals), people chat through `/chat exp:<name>` and the alias and keep their variant, answers and ratings land in
the variant totals (re-rating adjusts them), status says whether it may stop and why with a chart, ship makes the
alias open the winner; REST create, status and ship. The assignment split over 10,000 people is checked too."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from modelbay.bot import Actor
from modelbay.config import Settings
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.experiments import ExperimentExposure
from modelbay.engine.experiments.assignment import choose, position
from modelbay.engine.experiments.experiments import VariantSpec
from tests.support.lab import Lab, ask, two_model_lab

ADMIN = Actor("console", "admin")
TOKEN = "experiments-token"


@pytest.fixture
def lab(settings: Settings, database_url: str, database: Database, tiny_chat_model: Path,
        tiny_model: Path) -> Iterator[Lab]:
    with two_model_lab(settings, database_url, tiny_chat_model, tiny_model, token=TOKEN) as run:
        yield run


def test_an_experiment_assigns_people_stably_counts_their_ratings_and_ships(lab) -> None:
    runtime = lab.runtime
    assert lab("/experiments start tone tiny-chat").title == "Check the experiment"  # one variant
    assert lab("/experiments start tone tiny-chat | nothing-here").title == "Model not found"
    assert lab("/experiments start tone tiny-chat | tiny-base split:1/2/3").title == "Check the experiment"
    taken = lab("/experiments start tone tiny-chat | tiny-base alias:tiny-base")  # a model's name is no alias
    assert taken.title == "Check the experiment" and "choose another alias" in taken.text, taken.plain()
    started = lab("/experiments start tone tiny-chat | tiny-chat temperature=0.5 system=Answer briefly. "
                  "alias:assistant p95:600000")
    assert started.title == "Experiment tone started", started.plain()
    assert "`/chat exp:tone` or `/chat assistant`" in started.text
    assert started.table.rows[1][1] == "`tiny-chat`, temperature 0.5, system prompt “Answer briefly.”"
    assert lab("/experiments start other tiny-chat | tiny-base alias:assistant").title == "Name taken"
    assert lab("/experiments start tone tiny-chat | tiny-base").title == "Name taken"
    experiment = runtime.experiments.get("tone")

    people = [f"console:p{i}" for i in range(8)]
    seen: dict[str, int] = {}
    for i, person in enumerate(people):
        opened = runtime.experiments.open(Place("console", f"room{i}"), person, "exp:tone" if i % 2 else "assistant")
        assert opened.experiment.name == "tone" and opened.session.variant_id == opened.variant.id
        expected = experiment.variants[choose([v.weight for v in experiment.variants], position("tone", person))]
        assert opened.variant.id == expected.id
        if opened.variant.name == "b":
            assert opened.session.system_prompt == "Answer briefly." and opened.session.temperature == 0.5
        seen[person] = opened.variant.id
        message = ask(runtime, opened.session.id, person, "Hello there")
        runtime.chats.rate(message, person, up=opened.variant.name == "b")
        if i == 0:  # re-rating moves the totals, not adds to them
            runtime.chats.rate(message, person, up=True)
    again = runtime.experiments.open(Place("console", "again"), people[0], "exp:tone")
    assert again.variant.id == seen[people[0]]
    with runtime.db.session() as session:
        assert len(list(session.scalars(select(ExperimentExposure)))) == len(people)

    totals = {v.name: v for v in runtime.experiments.get("tone").variants}
    assert sum(v.exposures for v in totals.values()) == len(people)
    assert sum(v.answers for v in totals.values()) == len(people)
    assert sum(v.ups + v.downs for v in totals.values()) == len(people)
    first = next(v for v in totals.values() if v.id == seen[people[0]])
    assert first.ups >= 1  # person 0's rating changed to 👍
    assert all(v.ms_sum > 0 for v in totals.values() if v.answers)

    card = lab("/experiments status tone")
    assert card.title == "Experiment tone · running"
    assert card.text.startswith("**May stop: no**, because not enough data yet")
    assert "always-valid" in card.text and "Chance each is best" in card.text
    assert card.attachments[0].content_type == "image/png" and card.attachments[0].data.startswith(b"\x89PNG")
    assert card.table.columns[:4] == ["Variant", "What", "People", "Answers"]
    assert [b.command for b in card.buttons] == ["/experiments status tone", "/experiments stop tone"]
    assert lab("/experiments ship tone").title == "No winner yet"
    assert lab("/experiments ship tone b", Actor("console", "someone")).title == "Not allowed"

    shipped = lab("/experiments ship tone b")
    assert shipped.title == "Shipped b from tone", shipped.plain()
    assert ("`/chat assistant` now opens experiment `tone`'s shipped variant b (`tiny-chat`, temperature 0.5"
            in shipped.text), shipped.text
    assert "(before: the running experiment `tone` (each person's variant))" in shipped.text
    after = runtime.experiments.open(Place("console", "after"), "console:new", "assistant")
    assert after.session.model_name == "tiny-chat" and after.session.system_prompt == "Answer briefly."
    b = runtime.experiments.get("tone").variant("b")
    ask(runtime, after.session.id, "console:new", "Hi")
    assert runtime.experiments.get("tone").variant("b").answers == b.answers  # ended: no longer counted
    chat = lab("/chat tiny-base")  # a model's name opens that model, never an experiment's variant
    assert chat.title == "Chatting with Tiny Base", chat.plain()
    listed = lab("/experiments list")
    assert listed.table.rows[0][:2] == ["tone", "shipped"]
    assert lab("/experiments stop tone").title == "Experiment ended"
    assert lab("/experiments status nothing").title == "Experiment not found"


def test_status_shows_a_winner_from_many_ratings(lab) -> None:
    runtime = lab.runtime
    experiment = runtime.experiments.start("big", [VariantSpec("tiny-chat"), VariantSpec("tiny-base")],
                                           created_by="console:admin")
    a, b = experiment.variants
    from sqlalchemy import update

    from modelbay.engine.db.schema.experiments import ExperimentVariant
    with runtime.db.session() as session:  # as if 800 people had rated: the totals are all status reads
        session.execute(update(ExperimentVariant).where(ExperimentVariant.id == a.id)
                        .values(exposures=400, answers=400, ups=200, downs=200))
        session.execute(update(ExperimentVariant).where(ExperimentVariant.id == b.id)
                        .values(exposures=400, answers=400, ups=290, downs=110))
    card = lab("/experiments status big")
    assert card.text.startswith("**May stop: yes**, because b has the better 👍 share"), card.text
    assert "Ship it with `/experiments ship big`" in card.text
    assert "/experiments ship big" in [button.command for button in card.buttons]
    shipped = runtime.experiments.ship("big")
    assert shipped.variant.name == "b" and shipped.before is None


def test_assignment_splits_within_binomial_tolerance() -> None:
    weights = [0.2, 0.8]
    n = 10_000
    counts = [0, 0]
    for i in range(n):
        counts[choose(weights, position("split", f"slack:U{i}"))] += 1
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(counts[0] - n * 0.2) < 4 * sd
    assert choose(weights, position("split", "slack:U1")) == choose(weights, position("split", "slack:U1"))


def test_rest_creates_reports_and_ships(lab) -> None:
    from modelbay.adapters.api import create_app

    runtime = lab.runtime
    client = TestClient(create_app(runtime))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"name": "rest", "metric": "response_time", "variants": [
        {"model": "tiny-chat"}, {"model": "tiny-chat", "max_tokens": 4, "weight": 2}]}
    created = client.post("/api/experiments", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert [v["weight"] for v in created.json()["variants"]] == pytest.approx([1 / 3, 2 / 3])
    bad = client.post("/api/experiments", json={**body, "name": "x", "variants": body["variants"][:1]},
                      headers=headers)
    assert bad.status_code == 422 and "variants" in bad.json()["error"]
    status = client.get("/api/experiments/rest", headers=headers)
    assert status.status_code == 200 and status.json()["verdict"]["may_stop"] is False
    assert status.json()["verdict"]["reason"].startswith("not enough data")
    assert client.get("/api/experiments", headers=headers).json()[0]["name"] == "rest"
    shipped = client.post("/api/experiments/rest/ship", json={"variant": "a"}, headers=headers)
    assert shipped.status_code == 200 and shipped.json()["status"] == "shipped"
    assert client.get("/api/experiments/none", headers=headers).status_code == 404


def test_a_stopped_experiment_ships_only_a_named_variant_and_an_empty_name_asks_for_one(lab) -> None:
    assert lab("/experiments start halt tiny-chat | tiny-base").title == "Experiment halt started"
    assert lab("/experiments stop halt").tone == "success"
    refused = lab("/experiments ship halt")
    assert refused.title == "No winner yet"
    assert "was stopped without a winner" in refused.text and "keep it running" not in refused.text
    assert "`/experiments ship halt <variant>` (one of a, b)" in refused.text and "/experiments start" in refused.text
    assert lab("/experiments ship halt b").title == "Shipped b from halt"
    blank = lab("/chat exp:")
    assert blank.title == "Experiment not found" and "Give the experiment's name" in blank.text
    assert "``" not in blank.text


def test_a_response_time_card_names_normal_posteriors_and_shows_the_mean_once(lab) -> None:
    runtime = lab.runtime
    assert lab("/experiments start speed tiny-chat | tiny-base metric:response_time").title.startswith("Experiment")
    for i in range(6):
        person = f"console:s{i}"
        opened = runtime.experiments.open(Place("console", f"speed{i}"), person, "exp:speed")
        for _ in range(2):
            ask(runtime, opened.session.id, person, "Hello there")
    card = lab("/experiments status speed")
    assert card.table.columns.count("Mean ms (95%)") == 1 and "Mean ms" not in card.table.columns
    assert "normal posteriors of the mean response time" in card.text and "Beta" not in card.text
