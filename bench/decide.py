"""Deciding at scale: the arena leaderboard and an experiment's status, each against a naive baseline in the same run.

1. Leaderboard: 100,000 votes among 20 models (strengths drawn from N(0, 1) in log-odds, 10% ties, 3% both bad,
   seed 0), fitted with 200 bootstrap rounds by `engine.analytics.leaderboard` (votes aggregated into pair x outcome
   cells, every round fitted at once by batched Newton steps). The baseline is the textbook way: each round draws
   100,000 vote rows with replacement and refits Bradley-Terry on those raw rows alone with scipy's L-BFGS-B on the
   per-vote negative log-likelihood (LMSYS's notebook does the same with a logistic regression per round). Both fit
   the same votes; the largest gap between their point strengths is printed (rating points). Goal: <= 2 s.
2. Experiment status: an experiment with two variants, 1,000,000 exposures (people) and 1,000,000 rated answers
   (100,000 chat sessions of 10 rated answers, 👍 shares 0.60 and 0.62, response times log-normal), written as raw
   rows (exposures, sessions with their variant, messages, feedback) plus the variant rows' running totals and
   latency histograms that answers and ratings keep (what Chats writes in the same transactions). Ours:
   `Experiments.status` (the variant rows and histograms, the full analysis: Wilson, two-proportion test,
   Beta-Binomial P(best), mSPRT, SRM). The baseline computes the same totals from the raw rows in SQL (exposures
   grouped by variant; feedback joined to messages and sessions; response times summed) and then the same
   analysis. Both on SQLite and PostgreSQL. Goal: <= 200 ms.

    python bench/decide.py                   # SQLite in a temporary folder, and PostgreSQL at
                                             # MODELBAY_BENCH_POSTGRES_URL (default the test database; uses and
                                             # drops schema modelbay_bench_decide), --no-postgres to skip it

Prints a line per part, then a final JSON line: {"leaderboard": {...}, "experiment": [{backend...}], "goals":
{name: {"value", "goal", "met"}}, "meets_goals"}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import median_ms  # noqa: E402 - after the path is set

MODELS = 20
VOTES = 100_000
ROUNDS = 200
LEADERBOARD_GOAL_S = 2.0
EXPOSURES = 1_000_000
SESSIONS = 100_000
ANSWERS_PER_SESSION = 10  # every answer rated: 1,000,000 ratings
STATUS_GOAL_MS = 200.0
REPEATS = 5
CHUNK = 50_000
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# -- 1. leaderboard --------------------------------------------------------------------------------------------
def _votes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 1.0, MODELS)
    a = rng.integers(0, MODELS, VOTES)
    b = (a + rng.integers(1, MODELS, VOTES)) % MODELS
    p = 1.0 / (1.0 + np.exp(theta[b] - theta[a]))
    u = rng.random(VOTES)
    outcome = np.where(u < 0.10, 2, np.where(u < 0.13, 3, np.where(rng.random(VOTES) < p, 0, 1)))
    return theta, a, b, outcome


def _naive_round(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One bootstrap round the textbook way: Bradley-Terry on raw vote rows by L-BFGS-B; strengths on the scale."""
    from scipy.optimize import minimize

    from modelbay.engine.analytics.leaderboard import rating

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[a] - theta[b]
        loss = y * np.logaddexp(0.0, -d) + (1.0 - y) * np.logaddexp(0.0, d)
        g = 1.0 / (1.0 + np.exp(-d)) - y
        return float(loss.sum()), np.bincount(a, g, MODELS) - np.bincount(b, g, MODELS)

    theta = minimize(nll, np.zeros(MODELS), jac=True, method="L-BFGS-B").x
    return rating(theta - theta.mean())


def leaderboard_part() -> dict:
    from modelbay.engine.analytics.leaderboard import battle_counts, fit

    _, a, b, outcome = _votes()
    start = time.perf_counter()
    ours = fit(battle_counts(a, b, outcome), rounds=ROUNDS, seed=0)
    ours_s = time.perf_counter() - start

    counted = outcome != 3  # both bad stays out of the fit
    ra, rb = a[counted], b[counted]
    y = np.where(outcome[counted] == 0, 1.0, np.where(outcome[counted] == 1, 0.0, 0.5))  # a tie is half a win
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    point = _naive_round(ra, rb, y)
    rounds = []
    for _ in range(ROUNDS):
        pick = rng.integers(0, ra.size, ra.size)
        rounds.append(_naive_round(ra[pick], rb[pick], y[pick]))
    low, high = np.percentile(np.array(rounds), [2.5, 97.5], axis=0)
    naive_s = time.perf_counter() - start
    return {
        "models": MODELS, "votes": VOTES, "rounds": ROUNDS, "seconds": round(ours_s, 3),
        "naive_refit_seconds": round(naive_s, 2), "speedup": round(naive_s / ours_s, 1),
        "max_strength_gap_points": round(float(np.abs(ours.strength - point).max()), 4),
        "mean_interval_width": round(float((ours.high - ours.low).mean()), 1),
        "naive_mean_interval_width": round(float((high - low).mean()), 1),
        "goal_s": LEADERBOARD_GOAL_S,
    }


# -- 2. experiment status --------------------------------------------------------------------------------------
def _fill(db, registry) -> tuple[str, list[int]]:  # noqa: ANN001
    from sqlalchemy import insert

    from modelbay.engine.analytics.analytics import latency_bucket
    from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
    from modelbay.engine.db.schema.experiments import (
        Experiment,
        ExperimentExposure,
        ExperimentLatency,
        ExperimentVariant,
    )

    model = registry.upsert({"name": "bench-model", "display_name": "Bench", "category": "chat"}, source="local")
    versions = [registry.add_version(model.id, rev).id for rev in ("main", "v2")]
    rng = np.random.default_rng(1)
    now = datetime.now(timezone.utc)
    with db.session() as session:
        experiment = Experiment(name="bench", alias=None, metric="thumbs_up", status="running", alpha=0.05,
                                guardrails={"p95_ms": 5000.0, "error_rate": 0.05}, details={}, created_by="bench")
        session.add(experiment)
        session.flush()
        variants = [ExperimentVariant(experiment_id=experiment.id, name=name, model_version_id=v, weight=0.5,
                                      params={}) for name, v in zip(("a", "b"), versions, strict=True)]
        session.add_all(variants)
        session.flush()
        experiment_id, variant_ids = experiment.id, [v.id for v in variants]
    arm = rng.integers(0, 2, EXPOSURES)
    for offset in range(0, EXPOSURES, CHUNK):
        with db.session() as session:
            session.execute(insert(ExperimentExposure), [
                {"experiment_id": experiment_id, "user_key": f"bench:U{k}", "variant_id": variant_ids[arm[k]],
                 "created_at": now} for k in range(offset, min(EXPOSURES, offset + CHUNK))])
    # Sessions: one per person of the first SESSIONS, on that person's variant; each with 10 rated answers.
    session_arm = arm[:SESSIONS]
    with db.session() as session:
        for offset in range(0, SESSIONS, CHUNK):
            session.execute(insert(ChatSession), [
                {"id": k + 1, "platform": "bench", "channel_id": "C1", "thread_id": str(k), "user_key": f"bench:U{k}",
                 "model_version_id": versions[session_arm[k]], "variant_id": variant_ids[session_arm[k]],
                 "created_at": now} for k in range(offset, min(SESSIONS, offset + CHUNK))])
    answers = SESSIONS * ANSWERS_PER_SESSION
    answer_arm = np.repeat(session_arm, ANSWERS_PER_SESSION)
    ms = rng.lognormal(7.0, 0.5, answers)
    up = rng.random(answers) < np.where(answer_arm == 0, 0.60, 0.62)
    for offset in range(0, answers, CHUNK):
        stop = min(answers, offset + CHUNK)
        with db.session() as session:
            session.execute(insert(Message), [
                {"id": k + 1, "session_id": k // ANSWERS_PER_SESSION + 1, "role": "assistant",
                 "user_key": f"bench:U{k // ANSWERS_PER_SESSION}", "tokens": int(ms[k] // 25), "status": "ok",
                 "created_at": now} for k in range(offset, stop)])
            session.execute(insert(Feedback), [
                {"message_id": k + 1, "user_key": f"bench:U{k // ANSWERS_PER_SESSION}", "rating": 1 if up[k] else -1}
                for k in range(offset, stop)])
    # The running totals and histograms answers and ratings keep, as Chats writes them.
    buckets = np.array([latency_bucket(x) for x in ms])
    with db.session() as session:
        for index, variant in enumerate(variant_ids):
            mine = answer_arm == index
            row = session.get(ExperimentVariant, variant)
            row.exposures = int((arm == index).sum())
            row.answers = int(mine.sum())
            row.ups, row.downs = int(up[mine].sum()), int((~up[mine]).sum())
            row.ms_sum, row.ms_sq_sum = float(ms[mine].sum()), float((ms[mine] ** 2).sum())
            found, counts = np.unique(buckets[mine], return_counts=True)
            session.execute(insert(ExperimentLatency), [
                {"variant_id": variant, "bucket": int(bk), "count": int(n)}
                for bk, n in zip(found, counts, strict=True)])
    return "bench", variant_ids


def _naive_status(db, experiments, name: str) -> object:  # noqa: ANN001
    """The baseline: every total counted from the raw rows, then the same analysis."""
    from sqlalchemy import case, func, select

    from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
    from modelbay.engine.db.schema.experiments import ExperimentExposure
    from modelbay.engine.experiments.experiments import status_from_totals
    from modelbay.engine.experiments.stats import Totals

    record = experiments.get(name)
    ids = [v.id for v in record.variants]
    with db.session() as session:
        exposures = dict(session.execute(select(ExperimentExposure.variant_id, func.count())
                                         .where(ExperimentExposure.variant_id.in_(ids))
                                         .group_by(ExperimentExposure.variant_id)).all())
        rated = {row[0]: row[1:] for row in session.execute(
            select(ChatSession.variant_id, func.sum(case((Feedback.rating == 1, 1), else_=0)),
                   func.sum(case((Feedback.rating == -1, 1), else_=0)))
            .join(Message, Message.session_id == ChatSession.id).join(Feedback, Feedback.message_id == Message.id)
            .where(ChatSession.variant_id.in_(ids)).group_by(ChatSession.variant_id))}
        answered = {row[0]: row[1] for row in session.execute(
            select(ChatSession.variant_id, func.count()).join(Message, Message.session_id == ChatSession.id)
            .where(ChatSession.variant_id.in_(ids), Message.role == "assistant").group_by(ChatSession.variant_id))}
    totals = [Totals(v.name, v.weight, exposures=int(exposures.get(v.id, 0)), answers=int(answered.get(v.id, 0)),
                     ups=int(rated.get(v.id, (0, 0))[0]), downs=int(rated.get(v.id, (0, 0))[1]))
              for v in record.variants]
    return status_from_totals(record.metric, totals, alpha=record.alpha)


def experiment_part(url: str, label: str) -> dict:
    from modelbay.config import Settings
    from modelbay.engine.analytics.analytics import Analytics
    from modelbay.engine.catalog.registry import Registry
    from modelbay.engine.db.database import Database
    from modelbay.engine.experiments.experiments import Experiments

    db = Database(url)
    db.upgrade()
    registry = Registry(db)
    start = time.perf_counter()
    name, _ = _fill(db, registry)
    fill_s = time.perf_counter() - start
    # Status reads only the database (the chat service is for opening chats on the experiment).
    experiments = Experiments(Settings(), db, registry, None, Analytics(db))  # type: ignore[arg-type]
    ours_ms, ours = median_ms(lambda: experiments.status(name), REPEATS)
    naive_ms, naive = median_ms(lambda: _naive_status(db, experiments, name), 3)
    same = [(f.totals.exposures, f.totals.ups, f.totals.downs, round(f.value, 12)) for f in ours.analysis.variants] == [
        (f.totals.exposures, f.totals.ups, f.totals.downs, round(f.value, 12)) for f in naive.variants]
    db.dispose()
    return {"backend": label, "exposures": EXPOSURES, "ratings": SESSIONS * ANSWERS_PER_SESSION,
            "fill_s": round(fill_s, 1), "status_ms": round(ours_ms, 2), "naive_from_rows_ms": round(naive_ms, 1),
            "speedup": round(naive_ms / ours_ms, 1),
            "same_totals": same, "may_stop": ours.analysis.verdict.may_stop, "verdict": ours.analysis.verdict.reason,
            "goal_ms": STATUS_GOAL_MS}


def _postgres(url: str) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA IF EXISTS modelbay_bench_decide CASCADE"))
        connection.execute(text("CREATE SCHEMA modelbay_bench_decide"))
    sep = "&" if "?" in url else "?"
    try:
        return experiment_part(f"{url}{sep}options=-csearch_path%3Dmodelbay_bench_decide", "postgresql")
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS modelbay_bench_decide CASCADE"))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    board = leaderboard_part()
    print(f"leaderboard: {board['seconds']} s for {ROUNDS} rounds over {VOTES:,} votes among {MODELS} models "
          f"(naive refits {board['naive_refit_seconds']} s; goal {LEADERBOARD_GOAL_S} s)", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(experiment_part(f"sqlite:///{tmp}/bench.db", "sqlite"))
    if not args.no_postgres:
        results.append(_postgres(os.environ.get("MODELBAY_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)))
    for r in results:
        print(f"experiment status on {r['backend']}: {r['status_ms']} ms (from rows {r['naive_from_rows_ms']} ms; "
              f"goal {STATUS_GOAL_MS} ms)", file=sys.stderr)
    goals = {"leaderboard_s": {"value": board["seconds"], "goal": LEADERBOARD_GOAL_S,
                               "met": board["seconds"] <= LEADERBOARD_GOAL_S}}
    for r in results:
        goals[f"status_ms_{r['backend']}"] = {"value": r["status_ms"], "goal": STATUS_GOAL_MS,
                                              "met": r["status_ms"] <= STATUS_GOAL_MS and r["same_totals"]}
    print(json.dumps({"leaderboard": board, "experiment": results, "goals": goals,
                      "meets_goals": all(g["met"] for g in goals.values())}))


if __name__ == "__main__":
    main()
