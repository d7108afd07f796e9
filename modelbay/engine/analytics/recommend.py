"""Model recommendations from this team's own evidence: 👍 share, arena strength, measured speed, hardware fit and
recent use, each suggestion with a one-line reason; and per person, what they rate well and use most.

The score is a plain weighted sum of four parts in [0, 1], so the reason can name what drove it:
quality (the Wilson 95% lower bound of the 👍 share: 3 of 3 does not beat 80 of 100), arena (the probability of
beating an average model, 1 / (1 + 10^((1000 - low) / 400)), from the strength's lower bound on the LMSYS scale),
speed (measured tokens/s over `FAST` tokens/s, capped at 1) and use (answers in the period over the most any
candidate had, times the 👍 share when rated). A model with no evidence scores 0 on that part, so better
evidence ranks first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from modelbay.engine import hardware as hw
from modelbay.engine.analytics.analytics import wilson
from modelbay.engine.catalog import search
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import AnalyticsEvent, UsageHourly
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
from modelbay.engine.units import number, plural

__all__ = ["Evidence", "Recommender", "Suggestion", "measured_speeds", "rank"]

WEIGHTS = {"quality": 0.45, "arena": 0.25, "speed": 0.15, "use": 0.15}
FAST = 60.0  # tokens/s at which the speed part is full
PERIOD = timedelta(days=30)


@dataclass(frozen=True)
class Evidence:
    """What this deployment knows about one model."""

    model: str
    display_name: str
    category: str
    installed: bool
    answers: int = 0  # in the period
    ups: int = 0
    downs: int = 0
    tokens_per_s: float | None = None  # measured here
    speed_source: str | None = None  # "answers" or "optimization report"
    arena_strength: float | None = None
    arena_low: float | None = None
    arena_battles: int = 0
    # The best precision it fits at ("fp16", "int8", "4bit", or hw.AS_STORED when only the weights' size is known),
    # None: nowhere or unknown; fit_known says which (a model of unknown size is never said not to fit).
    fit: str | None = None
    fit_known: bool = False


@dataclass(frozen=True)
class Suggestion:
    """A ranked model with its score (0-1) and the one-line reason."""

    model: str
    display_name: str
    score: float
    reason: str
    evidence: Evidence


def _parts(e: Evidence, most_answers: int) -> dict[str, float]:
    ratings = e.ups + e.downs
    return {
        "quality": wilson(e.ups, ratings).low if ratings else 0.0,
        "arena": 1 / (1 + 10 ** ((1000 - e.arena_low) / 400)) if e.arena_low is not None else 0.0,
        "speed": min(1.0, e.tokens_per_s / FAST) if e.tokens_per_s else 0.0,
        # Heavy use of a model people rate down is no endorsement: use counts by the 👍 share when rated.
        "use": (e.answers / most_answers if most_answers else 0.0) * (e.ups / ratings if ratings else 1.0),
    }


def reason(e: Evidence, task: str | None = None) -> str:
    """The evidence in one line: "👍 87% of 40 rated code answers here; arena 1,032 (lower bound 1,007, 120
    battles); 45 tokens/s measured; fits at int8"; counts agree with their nouns ("1 answer")."""
    bits = []
    ratings = e.ups + e.downs
    if ratings:
        bits.append(f"👍 {e.ups / ratings:.0%} of {plural(ratings, f'rated {task} answer' if task else 'rated answer')}"
                    " here")
    elif e.answers:
        bits.append(f"{plural(e.answers, 'answer')} here, none rated yet")
    if e.arena_strength is not None:
        low = f"lower bound {number(e.arena_low)}, " if e.arena_low is not None else ""
        bits.append(f"arena {number(e.arena_strength)} ({low}{plural(e.arena_battles, 'battle')})")
    if e.tokens_per_s:
        source = " (optimization report)" if e.speed_source == "optimization report" else ""
        bits.append(f"{e.tokens_per_s:.0f} tokens/s measured{source}")
    if e.fit_known:
        bits.append(("fits as stored" if e.fit == hw.AS_STORED else f"fits at {e.fit}") if e.fit
                    else "does not fit this hardware")
    if not e.installed:
        bits.append("not installed")
    return "; ".join(bits) if bits else "no answers, ratings or battles here yet"


def rank(evidence: Iterable[Evidence], *, task: str | None = None, fits_only: bool = False,
         limit: int = 5) -> list[Suggestion]:
    """Rank models by the weighted evidence score (module docstring), best first; ties by name. `fits_only` leaves
    out the models known not to fit; one whose size is unknown stays (its fit is unknown, not "no")."""
    items = [e for e in evidence if not fits_only or e.fit or not e.fit_known]
    most = max((e.answers for e in items), default=0)
    scored = [Suggestion(e.model, e.display_name,
                         sum(WEIGHTS[k] * v for k, v in _parts(e, most).items()), reason(e, task), e) for e in items]
    return sorted(scored, key=lambda s: (-s.score, s.model))[:limit]


def measured_speeds(db: Database, since: datetime | None) -> dict[int, tuple[float, str]]:
    """Tokens/s measured here per model id: the mean over its answers since `since` (usage rollups), else its newest
    optimization report's figure (a variant's own measurement on this machine); the source is named ("answers" or
    "optimization report"). The same figures the registry's speed filter uses (catalog.search.measured_speeds)."""
    with db.session() as session:
        return dict(search.measured_speeds(session, since=since))


class Recommender:
    """Gathers the evidence per model and ranks it, for the team or one person."""

    def __init__(self, db: Database, arena_board: Callable[[str | None], object] | None = None) -> None:
        self._db = db
        # arena: runtime.arena.leaderboard (helper A's Arena); None leaves arena strength out.
        self._arena_board = arena_board

    def evidence(self, task: str | None = None, *, hardware: hw.Hardware | None = None,
                 user_key: str | None = None, now: datetime | None = None) -> list[Evidence]:
        """Evidence for installed models (of the task's category when given) and any used in the period; with
        `user_key`, only that person's answers and ratings count.

        Raises:
            ValueError: task is not a category.
        """
        since = (now or datetime.now(timezone.utc)) - PERIOD
        category = Category(task) if task else None
        m, v = Model, ModelVersion
        with self._db.session() as session:
            models = session.execute(select(m.id, m.name, m.display_name, m.category, m.parameter_count, m.size_bytes)
                                     .where(*([m.category == category] if category else []))).all()
            installed = set(session.scalars(select(v.model_id).where(v.install_state == InstallState.INSTALLED)))
            usage = self._usage(session, since, user_key)
        speeds = measured_speeds(self._db, since)
        board = self._board(task)
        found = []
        for model_id, name, display, cat, parameters, size in models:
            answers, ups, downs = usage.get(model_id, (0, 0, 0))
            if model_id not in installed and not (answers or ups or downs):
                continue
            speed = speeds.get(model_id)
            strength = board.get(name)
            options = hw.fits_model(parameters, size, hardware) if hardware is not None else []
            fit = next((f.precision for f in options if f.where), None)
            found.append(Evidence(
                model=name, display_name=display, category=getattr(cat, "value", cat), installed=model_id in installed,
                answers=answers, ups=ups, downs=downs, tokens_per_s=speed[0] if speed else None,
                speed_source=speed[1] if speed else None,
                arena_strength=strength[0] if strength else None, arena_low=strength[1] if strength else None,
                arena_battles=strength[2] if strength else 0, fit=fit,
                fit_known=bool(options)))
        return found

    @staticmethod
    def _usage(session: Session, since: datetime, user_key: str | None) -> dict[int, tuple[int, int, int]]:
        """(answers, ups, downs) per model id since `since`: the team's from the hourly rollups, a person's from
        their answer events and their ratings."""
        v = ModelVersion
        if user_key is None:
            u = UsageHourly
            rows = session.execute(select(v.model_id, func.sum(u.requests), func.sum(u.ups), func.sum(u.downs))
                                   .select_from(u).join(v, v.id == u.model_version_id).where(u.hour >= since)
                                   .group_by(v.model_id)).all()
            return {model_id: (int(a or 0), int(b or 0), int(c or 0)) for model_id, a, b, c in rows}
        e, f, msg, s = AnalyticsEvent, Feedback, Message, ChatSession
        answers = dict(session.execute(
            select(v.model_id, func.count()).select_from(e).join(v, v.id == e.model_version_id)
            .where(e.user_key == user_key, e.created_at >= since, e.event_type == "answer").group_by(v.model_id)).all())
        rated = session.execute(
            select(v.model_id, func.sum(case((f.rating > 0, 1), else_=0)), func.sum(case((f.rating < 0, 1), else_=0)))
            .select_from(f).join(msg, msg.id == f.message_id).join(s, s.id == msg.session_id)
            .join(v, v.id == s.model_version_id).where(f.user_key == user_key, f.created_at >= since)
            .group_by(v.model_id)).all()
        usage = {model_id: (int(n), 0, 0) for model_id, n in answers.items()}
        for model_id, ups, downs in rated:
            usage[model_id] = (usage.get(model_id, (0, 0, 0))[0], int(ups or 0), int(downs or 0))
        return usage

    def _board(self, task: str | None) -> dict[str, tuple[float, float, int]]:
        """(strength, lower bound, battles) per settled model: from the task's own battles where the model is
        settled there, else from the overall board (battles of every category, those started without one too,
        which are stored under `any`); `evidence` keeps to the task's models."""
        if self._arena_board is None:
            return {}

        def settled(category: str | None) -> dict[str, tuple[float, float, int]]:
            board = self._arena_board(category)
            # A provisional or separated model's figure is no evidence (engine/analytics/leaderboard.py, MIN_BATTLES).
            return {s.model: (s.strength, s.low, s.battles) for s in board.standings if s.settled}

        own = settled(task)
        return own if task is None else {**settled(None), **own}

    def recommend(self, task: str | None = None, *, hardware: hw.Hardware | None = None, fits_only: bool = False,
                  user_key: str | None = None, limit: int = 5) -> list[Suggestion]:
        """Ranked suggestions (see `rank`); with `user_key`, from that person's own answers and ratings.

        Raises:
            ValueError: task is not a category.
        """
        evidence = self.evidence(task, hardware=hardware, user_key=user_key)
        if user_key is not None:  # a person's list: only models they used, the team's arena and speed beside
            evidence = [e for e in evidence if e.answers or e.ups or e.downs]
        return rank(evidence, task=task, fits_only=fits_only, limit=limit)

