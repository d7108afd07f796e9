"""The blind arena: two installed models answer one prompt side by side, people vote, a leaderboard ranks them.

A battle picks two different installed models at random (of the asked category when two of it are installed, else
of any: then it is stored under "any", so it counts on the overall leaderboard only), calls them Model A and Model
B, and streams both answers at once (`run`, one thread per side through `Chats.generate`, merged in arrival order).
Names are revealed only in the answer to a vote. One vote per person and battle (the table's key), at most
MODELBAY_ARENA_DAILY_VOTES per person and UTC day. A blank prompt is the category's sample prompt on every front
end (`battle_prompt`). A battle still answering `ANSWERING_MARGIN_S` after the longest an answer may take
(MODELBAY_CHAT_TIMEOUT + MODELBAY_CHAT_IDLE_TIMEOUT) had its stream left unread: it reads as failed. Text (the
prompt, the answers) is kept only with MODELBAY_STORE_TRANSCRIPTS and never for opted-out people. The leaderboard
counts votes per (model A, model B, outcome) in SQL and fits Bradley-Terry to those counts
(`engine/analytics/leaderboard.py`).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from modelbay.config import Settings
from modelbay.engine.analytics.analytics import AnswerEvent
from modelbay.engine.analytics.leaderboard import OUTCOMES, BattleCounts, Leaderboard, leaderboard
from modelbay.engine.chat.chats import Chats
from modelbay.engine.db.database import Database, idempotent
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion
from modelbay.engine.db.schema.experiments import ArenaBattle, ArenaVote
from modelbay.engine.errors import (
    AlreadyVoted,
    ArenaNeedsModels,
    BattleNotFound,
    BattleNotReady,
    ModelBayError,
    VoteCapReached,
)
from modelbay.engine.inference.backends.base import Adjusted, Finished

__all__ = ["ANY", "SIDES", "Arena", "BattleRecord", "Contender", "Piece", "SideDone", "VoteRecord", "battle_prompt",
           "sample_prompt"]

log = logging.getLogger(__name__)

SIDES = ("a", "b")
ANY = "any"  # the category stored for a battle asked without one, or whose category had fewer than two models
ANSWERING_MARGIN_S = 60.0  # seconds past the longest answer after which a battle still answering reads as failed
# A prompt for a battle asked without one (or with a blank one), per category.
SAMPLE_PROMPTS = {
    "code": "Write a Python function that checks whether a string is a palindrome.",
    "creative": "Write a four-line poem about the sea at night.",
    "analysis": "Which is larger, 9.11 or 9.9? Explain briefly.",
}
DEFAULT_PROMPT = "Explain in two sentences why the sky is blue."


def sample_prompt(category: str | None) -> str:
    """The prompt a battle of this category gets when asked without one."""
    return SAMPLE_PROMPTS.get(category or "", DEFAULT_PROMPT)


def battle_prompt(prompt: str | None, category: str | None) -> str:
    """The prompt both models answer: the one given, else (missing or blank) the category's sample prompt."""
    return (prompt or "").strip() or sample_prompt(category)


@dataclass(frozen=True)
class Contender:
    """One side of a battle: the model version, its registry name and display name."""

    version_id: int
    model: str
    label: str
    category: str = ""


@dataclass(frozen=True)
class BattleRecord:
    """A battle: who asked, the two sides (anonymous until a vote), its state and per-side measurements."""

    id: int
    category: str
    user_key: str
    a: Contender
    b: Contender
    status: str  # answering | ready | failed
    created_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    fallback: bool = False  # the asked category had fewer than two installed models: any were used (stored as any)
    prompt: str = ""  # the prompt both answer (set by `start`; `get` gives it only when it was stored)

    def side(self, which: str) -> Contender:
        """Model A or Model B."""
        return self.a if which == "a" else self.b


@dataclass(frozen=True)
class Piece:
    """A piece of one side's answer as it is written."""

    side: str  # a | b
    text: str


@dataclass(frozen=True)
class SideDone:
    """One side's answer ended: ok, or failed with a one-line note; its tokens and timings."""

    side: str
    status: str  # ok | failed
    note: str | None = None
    output_tokens: int | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    input_tokens: int | None = None
    backend: str | None = None  # the backend that answered (BACKENDS); None when none could be chosen
    partial: bool = False  # failed after writing some text
    canceled: bool = False  # stopped (the reader left) before the model finished


@dataclass(frozen=True)
class VoteRecord:
    """A stored vote and the battle it revealed; `left_today` votes remain of the daily cap."""

    battle: BattleRecord
    outcome: str
    left_today: int


class Arena:
    """Starts battles, streams both answers, takes votes, and fits the leaderboard from the counted votes."""

    def __init__(self, settings: Settings, db: Database, chats: Chats) -> None:
        self.settings = settings
        self._db = db
        self.chats = chats

    # -- battles -------------------------------------------------------------------------------------------
    def contenders(self, category: str | None = None) -> list[Contender]:
        """Every model with an installed version (its newest), of one category or all, ordered by name."""
        with self._db.session() as session:
            newest = (select(ModelVersion.model_id, func.max(ModelVersion.id).label("version_id"))
                      .where(ModelVersion.install_state == InstallState.INSTALLED,
                             ModelVersion.local_path.is_not(None))
                      .group_by(ModelVersion.model_id).subquery())
            query = select(newest.c.version_id, Model.name, Model.display_name, Model.category).join(
                Model, Model.id == newest.c.model_id)
            if category:
                query = query.where(Model.category == Category(category))
            rows = session.execute(query.order_by(Model.name)).all()
        return [Contender(v, name, label, getattr(cat, "value", cat)) for v, name, label, cat in rows]

    def start(self, user_key: str, prompt: str | None, category: str | None = None,
              rng: random.Random | None = None) -> BattleRecord:
        """Pick two different installed models at random and record a battle (status answering).

        A missing or blank prompt is the category's sample prompt (`battle_prompt`); the record carries the prompt
        used. The battle is stored under the category its pair was drawn from: "any" when none was asked (or "any"
        was) and when the asked one had fewer than two models (then `fallback` is set). The prompt is stored only
        with MODELBAY_STORE_TRANSCRIPTS, and never for a person who opted out.

        Raises:
            ArenaNeedsModels: fewer than two models are installed.
        """
        rng = rng or random.SystemRandom()
        category = None if category == ANY else category
        prompt = battle_prompt(prompt, category)
        pool = self.contenders(category) if category else []
        fallback = bool(category) and len(pool) < 2
        if len(pool) < 2:
            pool = self.contenders()
        if len(pool) < 2:
            raise ArenaNeedsModels(len(pool))
        a, b = rng.sample(pool, 2)
        with self._db.session() as session:
            keep_text = self.settings.store_transcripts and not self.chats.analytics.opted_out(user_key, session)
            row = ArenaBattle(category=ANY if fallback or not category else category, user_key=user_key,
                              model_a_version_id=a.version_id, model_b_version_id=b.version_id, status="answering",
                              details={}, prompt=prompt if keep_text else None)
            session.add(row)
            session.flush()
            battle_id = row.id
        return replace(self.get(battle_id), fallback=fallback, prompt=prompt)

    @idempotent  # a read: repeated once if its connection drops
    def get(self, battle_id: int) -> BattleRecord:
        """One battle with both sides named. One still answering `ANSWERING_MARGIN_S` seconds after the longest an
        answer may take reads as failed, with `details["expired"]` set (its stream was never read to the end).

        Raises:
            BattleNotFound: no battle has that number.
        """
        with self._db.session() as session:
            row = session.get(ArenaBattle, battle_id)
            if row is None:
                raise BattleNotFound(battle_id)
            sides = {v: c for v, c in ((c.version_id, c) for c in self._named(
                session, [row.model_a_version_id, row.model_b_version_id]))}
            status, details = row.status, dict(row.details or {})
            if status == "answering" and self._expired(row.created_at):
                status, details = "failed", {**details, "expired": True}
            return BattleRecord(row.id, row.category, row.user_key, sides[row.model_a_version_id],
                                sides[row.model_b_version_id], status, row.created_at, details, prompt=row.prompt or "")

    def _expired(self, created_at: datetime) -> bool:
        """Whether a battle started then, if still answering, ran past any answer's time limit (and the margin)."""
        started = created_at if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc)
        limit = self.settings.chat_timeout + self.settings.chat_idle_timeout + ANSWERING_MARGIN_S
        return datetime.now(timezone.utc) - started > timedelta(seconds=limit)

    @staticmethod
    def _named(session: Any, version_ids: list[int]) -> list[Contender]:
        rows = session.execute(select(ModelVersion.id, Model.name, Model.display_name, Model.category).join(
            Model, Model.id == ModelVersion.model_id).where(ModelVersion.id.in_(version_ids))).all()
        return [Contender(v, name, label, getattr(cat, "value", cat)) for v, name, label, cat in rows]

    def run(self, battle: BattleRecord, prompt: str, stop: threading.Event | None = None
            ) -> Iterator[Piece | SideDone]:
        """Generate both answers at once and yield their pieces as they arrive, then each side's end.

        The battle becomes ready when both sides answered with some text, else failed; each side's tokens, time to
        first token and total time are kept in its details (the answers' text only with MODELBAY_STORE_TRANSCRIPTS).
        Leaving early (or setting `stop`) stops both generations.
        """
        stop = stop or threading.Event()
        arrivals: queue.Queue[Piece | SideDone | BaseException] = queue.Queue()
        messages = [{"role": "user", "content": prompt.encode("utf-8", "replace").decode("utf-8")}]

        def answer(side: str, version_id: int) -> None:
            started, first, pieces, tokens, tokens_in = time.monotonic(), None, 0, None, None
            text: list[str] = []
            backend: list[str] = []  # told by Chats.generate once a backend is chosen
            finished = False
            try:
                for item in self.chats.generate(version_id, messages, stop, on_backend=backend.append):
                    if isinstance(item, Finished):
                        tokens, tokens_in, finished = item.output_tokens, item.input_tokens, True
                    elif isinstance(item, Adjusted):
                        continue  # e.g. a system prompt folded: nothing the voter needs to weigh
                    elif item:
                        first = first if first is not None else time.monotonic()
                        pieces += 1
                        text.append(item)
                        arrivals.put(Piece(side, item))
                ended = time.monotonic()
                ok = bool(text)
                arrivals.put(SideDone(side, "ok" if ok else "failed", None if ok else "The model wrote nothing.",
                                      tokens or pieces or None,
                                      (first - started) * 1000 if first is not None else None,
                                      (ended - started) * 1000, input_tokens=tokens_in,
                                      backend=backend[0] if backend else None,
                                      canceled=not finished and stop.is_set()))
            except ModelBayError as exc:
                arrivals.put(SideDone(side, "failed", str(exc), pieces or None,
                                      (first - started) * 1000 if first is not None else None,
                                      (time.monotonic() - started) * 1000, backend=backend[0] if backend else None,
                                      partial=bool(text)))
            except BaseException as exc:  # noqa: BLE001 - raised again on the reading side
                arrivals.put(exc)
            finally:
                answers[side] = "".join(text)

        answers: dict[str, str] = {}
        threads = [threading.Thread(target=answer, args=(side, battle.side(side).version_id), daemon=True,
                                    name=f"arena-{battle.id}-{side}") for side in SIDES]
        for thread in threads:
            thread.start()
        done: dict[str, SideDone] = {}
        try:
            while len(done) < 2:
                item = arrivals.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, SideDone):
                    done[item.side] = item
                yield item
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=self.settings.chat_timeout + self.settings.chat_idle_timeout)
            self._finish(battle, done, answers)

    def _finish(self, battle: BattleRecord, done: dict[str, SideDone], answers: dict[str, str]) -> None:
        """Store the battle's outcome and count each side's answer as chats count theirs: an answer event
        (`Analytics.record_answers`, in the same transaction) and the Prometheus observation once stored, both only
        when the asker did not opt out and only for a side a backend answered (as a chat stores no answer whose
        backend could not be chosen)."""
        ready = len(done) == 2 and all(d.status == "ok" for d in done.values())
        details = {side: {"status": d.status, "note": d.note, "output_tokens": d.output_tokens,
                          "ttft_ms": d.ttft_ms, "total_ms": d.total_ms} for side, d in done.items()}
        counted: list[tuple[str, SideDone]] = []
        with self._db.session() as session:
            row = session.get(ArenaBattle, battle.id)
            if row is None:
                return
            measured = not self.chats.analytics.opted_out(row.user_key, session)
            if self.settings.store_transcripts and measured:  # never the text of an opted-out person's battle
                for side, text in answers.items():
                    details.setdefault(side, {})["text"] = text
            row.status = "ready" if ready else "failed"
            row.details = details
            if measured:  # analytics: each side's answer, as Chats._store records a chat's
                sides = [(side, d) for side, d in sorted(done.items()) if d.backend is not None]
                self.chats.analytics.record_answers([AnswerEvent(
                    model_version_id=battle.side(side).version_id, user_key=row.user_key, session_id=None,
                    message_id=None, backend=d.backend or "", input_tokens=d.input_tokens,
                    output_tokens=d.output_tokens, ttft_ms=d.ttft_ms, total_ms=d.total_ms or 0.0,
                    failed=_answer_status(d) == "failed",
                    details={"source": "arena", "battle_id": battle.id, "side": side},
                ) for side, d in sides], session=session) if sides else None
                counted = sides
        telemetry = self.chats.telemetry
        if telemetry is not None and counted:  # telemetry: counted once the answers are stored
            for side, d in counted:
                telemetry.observe_answer(battle.side(side).model, _answer_status(d),
                                         input_tokens=d.input_tokens, output_tokens=d.output_tokens,
                                         ttft_ms=d.ttft_ms, total_ms=d.total_ms or 0.0)

    # -- votes ---------------------------------------------------------------------------------------------
    def vote(self, battle_id: int, user_key: str, outcome: str) -> VoteRecord:
        """Record one person's verdict (a, b, tie or both_bad) on a ready battle and reveal its models.

        Raises:
            ValueError: the outcome is not one of a, b, tie, both_bad.
            BattleNotFound: no such battle.
            BattleNotReady: it is still answering, or a side failed.
            AlreadyVoted: this person voted on it already.
            VoteCapReached: this person cast MODELBAY_ARENA_DAILY_VOTES votes today (UTC).
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome is one of {', '.join(OUTCOMES)}")
        battle = self.get(battle_id)
        if battle.status != "ready":
            raise BattleNotReady(battle_id, "expired" if battle.details.get("expired") else battle.status)
        cap = self.settings.arena_daily_votes
        day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        try:
            with self._db.session() as session:
                if session.get(ArenaVote, (battle_id, user_key)) is not None:
                    raise AlreadyVoted(battle_id)
                today = session.scalar(select(func.count()).select_from(ArenaVote).where(
                    ArenaVote.user_key == user_key, ArenaVote.created_at >= day,
                    ArenaVote.created_at < day + timedelta(days=1))) or 0
                if today >= cap:
                    raise VoteCapReached(cap)
                session.add(ArenaVote(battle_id=battle_id, user_key=user_key, outcome=outcome))
        except IntegrityError:  # the same person's other click stored its vote first
            raise AlreadyVoted(battle_id) from None
        return VoteRecord(battle, outcome, cap - today - 1)

    # -- leaderboard ---------------------------------------------------------------------------------------
    @idempotent  # a read: repeated once if its connection drops
    def counts(self, category: str | None = None) -> BattleCounts:
        """Votes counted per (model A, model B, outcome) in SQL, for one category or all."""
        with self._db.session() as session:
            query = (select(ArenaBattle.model_a_version_id, ArenaBattle.model_b_version_id, ArenaVote.outcome,
                            func.count()).join(ArenaBattle, ArenaBattle.id == ArenaVote.battle_id)
                     .group_by(ArenaBattle.model_a_version_id, ArenaBattle.model_b_version_id, ArenaVote.outcome))
            if category:
                query = query.where(ArenaBattle.category == category)
            rows = session.execute(query).all()
        return BattleCounts.from_rows((a, b, o, n) for a, b, o, n in rows)

    def leaderboard(self, category: str | None = None, *, rounds: int | None = None, seed: int = 0) -> Leaderboard:
        """The leaderboard of one category's battles (None: all), fitted with MODELBAY_ARENA_BOOTSTRAP_ROUNDS rounds.

        Strengths are on the LMSYS scale (mean 1000); see `engine/analytics/leaderboard.py` for the method.
        """
        counts = self.counts(category)
        names = {}
        if counts.models:
            with self._db.session() as session:
                names = {c.version_id: (c.model, c.label) for c in self._named(session, list(counts.models))}
        rounds = self.settings.arena_bootstrap_rounds if rounds is None else rounds
        return leaderboard(counts, names, category=category, rounds=rounds, seed=seed)


def _answer_status(done: SideDone) -> str:
    """A side's answer in a chat answer's words (ok, partial, failed, canceled), for the metrics' status label."""
    if done.canceled:
        return "canceled"
    if done.status == "ok":
        return "ok"
    return "partial" if done.partial else "failed"
