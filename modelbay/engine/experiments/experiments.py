"""A/B experiments in chat: variants of a model (versions, serving parameters, system prompts) split between people.

A chat opened on an experiment (`/chat exp:<name>`, or the alias it owns while it runs) gets the person's variant
(`assignment`), logs the exposure once per person, and counts its answers and ratings in the variant's running
totals: `Chats` adds them in the transaction that stores each answer or rating. `status` reads only the variant
rows and their latency histograms (O(variants), whatever the traffic) and hands them to `stats.analyse`; the
sequential test's state, and a short history of looks for the progress chart, stay in `experiments.details`.
`ship` records the winner and ends the experiment; from then on, while no running experiment owns the alias,
`/chat <alias>` opens the winner's version with its system prompt and parameters.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from modelbay.config import Settings
from modelbay.engine.analytics.analytics import Analytics
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.chat.chats import Chats
from modelbay.engine.chat.records import Place, SessionRecord
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.catalog import Model, ModelVersion
from modelbay.engine.db.schema.experiments import (
    Experiment,
    ExperimentExposure,
    ExperimentLatency,
    ExperimentVariant,
)
from modelbay.engine.errors import (
    ExperimentEnded,
    ExperimentInvalid,
    ExperimentNameTaken,
    ExperimentNotFound,
    ModelNotFound,
    NoWinnerYet,
    shown,
)
from modelbay.engine.experiments.assignment import choose, position
from modelbay.engine.experiments.stats import METRICS, Analysis, Totals, analyse, percentile
from modelbay.engine.inference.serving import installed_version

__all__ = ["ExperimentRecord", "ExperimentStatus", "Experiments", "Opened", "Shipped", "VariantRecord", "VariantSpec",
           "status_from_totals"]

PREFIX = "exp:"  # `/chat exp:<name>` opens a chat on an experiment
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
VARIANT_NAMES = "abcdefghij"  # variants without a name are a, b, c... in the order given; the first is the control
MAX_VARIANTS = len(VARIANT_NAMES)
SYSTEM_MAX = 4000
HISTORY_LOOKS = 100  # looks kept in details for the progress chart (the test's state needs only the last)
MIN_SHARE = 0.01  # the least share of traffic a variant may get: below it, it barely gets any and the SRM check is off
RUNNING, STOPPED, SHIPPED = "running", "stopped", "shipped"


@dataclass(frozen=True)
class VariantSpec:
    """One variant as asked for: a model (its newest installed version), and optionally a name, a weight, a system
    prompt and serving parameters."""

    model: str
    name: str | None = None
    weight: float = 1.0
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class VariantRecord:
    """A variant with its running totals."""

    id: int
    name: str
    model_version_id: int
    model_name: str
    weight: float
    system_prompt: str | None
    params: dict[str, Any]
    exposures: int
    answers: int
    failures: int
    ups: int
    downs: int
    ms_sum: float
    ms_sq_sum: float

    def describe(self) -> str:
        """The variant in a few words: model, parameters and whether it has a system prompt."""
        parts = [f"`{self.model_name}`"]
        parts += [f"{key} {value}" for key, value in sorted(self.params.items())]
        if self.system_prompt:
            parts.append(f"system prompt “{shown(self.system_prompt, 60)}”")
        return ", ".join(parts)


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment and its variants (the first is the control)."""

    id: int
    name: str
    alias: str | None
    metric: str
    status: str
    alpha: float
    guardrails: dict[str, float]
    created_by: str
    created_at: datetime
    ended_at: datetime | None
    winner_variant_id: int | None
    variants: list[VariantRecord]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def winner(self) -> VariantRecord | None:
        """The shipped variant."""
        return next((v for v in self.variants if v.id == self.winner_variant_id), None)

    def variant(self, name: str) -> VariantRecord:
        """A variant by name.

        Raises:
            ExperimentInvalid: no variant has that name.
        """
        found = next((v for v in self.variants if v.name == name.strip().lower()), None)
        if found is None:
            raise ExperimentInvalid("variant", f"`{shown(name)}` is none of {', '.join(v.name for v in self.variants)}")
        return found


@dataclass(frozen=True)
class ExperimentStatus:
    """An experiment, its analysis, and its looks so far (for the progress chart)."""

    experiment: ExperimentRecord
    analysis: Analysis
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class Opened:
    """A chat opened through `Experiments.open`: the session, and the experiment and variant behind it, if any."""

    session: SessionRecord
    experiment: ExperimentRecord | None = None
    variant: VariantRecord | None = None


@dataclass(frozen=True)
class Shipped:
    """What `ship` changed."""

    experiment: ExperimentRecord
    variant: VariantRecord
    before: str | None  # what `/chat <alias>` opened before (None without an alias)
    after: str | None = None  # what `/chat <alias>` opens now, in words (None without an alias)


def status_from_totals(metric: str, totals: Sequence[Totals], *, alpha: float = 0.05,
                       guardrails: dict[str, float] | None = None, state: dict[str, Any] | None = None) -> Analysis:
    """The analysis `status` shows, from totals alone (what the benchmark feeds with synthetic numbers).

    Raises:
        ValueError: an unknown metric, or fewer than two variants.
    """
    return analyse(metric, list(totals), alpha=alpha, guardrails=guardrails, state=state)


class Experiments:
    """Starts, assigns, reports, stops and ships A/B experiments; opens chats on them through `Chats`."""

    def __init__(self, settings: Settings, db: Database, registry: Registry, chats: Chats,
                 analytics: Analytics) -> None:
        self.settings = settings
        self._db = db
        self.registry = registry
        self.chats = chats
        self.analytics = analytics
        self._dialect = sqlite if db.url.startswith("sqlite") else postgresql

    # -- start ---------------------------------------------------------------------------------------------
    def start(self, name: str, variants: Sequence[VariantSpec], *, created_by: str, metric: str = "thumbs_up",
              alias: str | None = None, alpha: float = 0.05, p95_ms: float | None = None,
              error_rate: float | None = None) -> ExperimentRecord:
        """Start an experiment: each variant's model must be installed; the first variant is the control.

        Raises:
            ExperimentInvalid: a bad name, alias, metric, alpha, guardrail, split, variant name or parameter.
            ExperimentNameTaken: the name is taken, or a running experiment owns the alias.
            ModelNotFound: a variant names no model.
            NeedsInstall: a variant's model has no installed version.
        """
        name = _check_name("name", name)
        alias = _check_name("alias", alias) if alias else None
        if alias and self._is_model(alias):  # an alias never hides a model: `/chat <model>` always opens that model
            raise ExperimentInvalid("alias", f"`{alias}` is the name of a model, and `/chat {alias}` must keep "
                                             "opening it: choose another alias")
        if metric not in METRICS:
            raise ExperimentInvalid("metric", f"`{shown(metric)}` is none of {', '.join(METRICS)}")
        if not (0 < alpha <= 0.2):
            raise ExperimentInvalid("alpha", "it must be above 0 and at most 0.2 (0.05 is usual)")
        if p95_ms is not None and not (math.isfinite(p95_ms) and p95_ms > 0):
            raise ExperimentInvalid("p95 guardrail", "give a response time above 0 ms")
        if error_rate is not None and not (0 <= error_rate < 1):
            raise ExperimentInvalid("error-rate guardrail", "give a fraction from 0 to below 1, like 0.05")
        if not 2 <= len(variants) <= MAX_VARIANTS:
            raise ExperimentInvalid("variants", f"give from 2 to {MAX_VARIANTS} (got {len(variants)})")
        rows = [self._variant_row(i, spec) for i, spec in enumerate(variants)]
        names = [row["name"] for row in rows]
        if len(set(names)) != len(names):
            raise ExperimentInvalid("variant names", "each variant needs its own name")
        weights = [row["weight"] for row in rows]
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ExperimentInvalid("split", "every weight must be a number above 0 (50/50, 20/80, 1/1/1)")
        total = sum(weights)
        if min(weights) / total < MIN_SHARE:
            raise ExperimentInvalid("split", f"give every variant at least {MIN_SHARE:.0%} of the traffic "
                                             "(like 99/1), or leave that variant out")
        guardrails = {k: v for k, v in (("p95_ms", p95_ms), ("error_rate", error_rate)) if v is not None}
        with self._db.session() as session:
            if session.scalar(select(Experiment.id).where(func.lower(Experiment.name) == name)) is not None:
                raise ExperimentNameTaken(name)
            if alias:
                owner = session.scalar(select(Experiment.name).where(func.lower(Experiment.alias) == alias,
                                                                     Experiment.status == RUNNING))
                if owner is not None:
                    raise ExperimentNameTaken(alias, alias=True, by=owner)
            row = Experiment(name=name, alias=alias, metric=metric, status=RUNNING, alpha=alpha, guardrails=guardrails,
                             details={}, created_by=created_by)
            session.add(row)
            session.flush()
            session.add_all(ExperimentVariant(experiment_id=row.id, **{**r, "weight": r["weight"] / total})
                            for r in rows)
            experiment_id = row.id
        return self._get(Experiment.id == experiment_id)

    def _variant_row(self, index: int, spec: VariantSpec) -> dict[str, Any]:
        label = f"variant {index + 1}"
        name = (spec.name or VARIANT_NAMES[index]).strip().lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
            raise ExperimentInvalid(f"{label}'s name", "use up to 32 letters, digits, - or _")
        params: dict[str, Any] = {}
        if spec.temperature is not None:
            if not (math.isfinite(spec.temperature) and 0 <= spec.temperature <= 2):
                raise ExperimentInvalid(f"{label}'s temperature", "give a number from 0 to 2")
            params["temperature"] = float(spec.temperature)
        if spec.max_tokens is not None:
            most = self.settings.chat_max_tokens
            if not (isinstance(spec.max_tokens, int) and 1 <= spec.max_tokens <= most):
                raise ExperimentInvalid(f"{label}'s max_tokens", f"give a whole number from 1 to {most} "
                                                                 "(MODELBAY_CHAT_MAX_TOKENS)")
            params["max_tokens"] = spec.max_tokens
        system = (spec.system_prompt or "").strip() or None
        if system is not None and len(system) > SYSTEM_MAX:
            raise ExperimentInvalid(f"{label}'s system prompt", f"keep it to {SYSTEM_MAX} characters")
        model = self.registry.get(spec.model)
        version = installed_version(model, "experiment with")
        return {"name": name, "model_version_id": version.id, "weight": float(spec.weight), "system_prompt": system,
                "params": params}

    # -- read ----------------------------------------------------------------------------------------------
    def get(self, name: str) -> ExperimentRecord:
        """One experiment by name.

        Raises:
            ExperimentNotFound: no experiment has that name.
        """
        return self._get(func.lower(Experiment.name) == name.strip().lower(), name=name)

    def _get(self, *where: Any, name: str = "") -> ExperimentRecord:
        found = self._select(*where, limit=1)
        if not found:
            raise ExperimentNotFound(name)
        return found[0]

    def list(self, limit: int = 10) -> list[ExperimentRecord]:
        """Running experiments first, then the most recently ended ones."""
        running = self._select(Experiment.status == RUNNING, limit=limit)
        return running + self._select(Experiment.status != RUNNING, limit=max(0, limit - len(running)))

    def _select(self, *where: Any, limit: int) -> list[ExperimentRecord]:
        if limit <= 0:
            return []
        with self._db.session() as session:
            rows = list(session.scalars(select(Experiment).where(*where)
                                        .order_by(Experiment.ended_at.desc(), Experiment.id.desc()).limit(limit)))
            if not rows:
                return []
            variants: dict[int, list[VariantRecord]] = defaultdict(list)
            for v, model_name in session.execute(
                select(ExperimentVariant, Model.name)
                .join(ModelVersion, ModelVersion.id == ExperimentVariant.model_version_id)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(ExperimentVariant.experiment_id.in_([r.id for r in rows])).order_by(ExperimentVariant.id)
            ):
                variants[v.experiment_id].append(_variant_record(v, model_name))
            return [ExperimentRecord(
                id=r.id, name=r.name, alias=r.alias, metric=r.metric, status=r.status, alpha=r.alpha,
                guardrails=dict(r.guardrails or {}), created_by=r.created_by, created_at=r.created_at,
                ended_at=r.ended_at, winner_variant_id=r.winner_variant_id, variants=variants[r.id],
                details=dict(r.details or {}),
            ) for r in rows]

    # -- assignment and chats ------------------------------------------------------------------------------
    def assign(self, name: str, user_key: str) -> VariantRecord:
        """A person's variant: the one logged for them, else the hash's, logged now (once per person).

        Opted-out people get the hash's variant without a logged exposure.

        Raises:
            ExperimentNotFound: no experiment has that name.
            ExperimentEnded: it was stopped or shipped.
        """
        experiment = self.get(name)
        if experiment.status != RUNNING:
            raise ExperimentEnded(experiment.name, experiment.status)
        return self._assign(experiment, user_key)

    def _assign(self, experiment: ExperimentRecord, user_key: str) -> VariantRecord:
        by_id = {v.id: v for v in experiment.variants}
        hashed = experiment.variants[choose([v.weight for v in experiment.variants],
                                            position(experiment.name, user_key))]
        with self._db.session() as session:
            if self.analytics.opted_out(user_key, session):
                return hashed
            logged = session.scalar(select(ExperimentExposure.variant_id).where(
                ExperimentExposure.experiment_id == experiment.id, ExperimentExposure.user_key == user_key))
            if logged is not None:  # people keep their variant, whatever the weights say now
                return by_id[logged]
            stmt = self._dialect.insert(ExperimentExposure.__table__).values(
                experiment_id=experiment.id, user_key=user_key, variant_id=hashed.id,
                created_at=datetime.now(timezone.utc)).on_conflict_do_nothing()
            # RETURNING gives a row only when this insert made it (rowcount is not reliable here on every driver).
            if session.execute(stmt.returning(ExperimentExposure.variant_id)).first() is not None:
                session.execute(update(ExperimentVariant).where(ExperimentVariant.id == hashed.id)
                                .values(exposures=ExperimentVariant.exposures + 1)
                                .execution_options(synchronize_session=False))
                return hashed
            # Another process logged this person a moment ago: theirs stands.
            return by_id[session.scalar(select(ExperimentExposure.variant_id).where(
                ExperimentExposure.experiment_id == experiment.id, ExperimentExposure.user_key == user_key))]

    def owner(self, alias: str) -> ExperimentRecord | None:
        """The experiment that `/chat <alias>` goes through: the running one that owns the alias, else the one that
        shipped last under it."""
        key = alias.strip().lower()
        running = self._select(func.lower(Experiment.alias) == key, Experiment.status == RUNNING, limit=1)
        if running:
            return running[0]
        shipped = self._select(func.lower(Experiment.alias) == key, Experiment.status == SHIPPED, limit=1)
        return shipped[0] if shipped else None

    def open(self, place: Place, user_key: str, ref: str, system_prompt: str | None = None) -> Opened:
        """Open a chat on `exp:<name>`, on an alias an experiment owns, or else on the model `ref` names.

        On a running experiment the person's variant answers (its system prompt, if it has one, replaces theirs); on
        a shipped one the winner does.

        Raises:
            ExperimentNotFound: `exp:<name>` names no experiment.
            ExperimentEnded: `exp:<name>` names a stopped experiment.
            ModelNotFound, NeedsInstall, NotServed, ...: as `Chats.open`.
        """
        experiment: ExperimentRecord | None
        if ref.lower().startswith(PREFIX):
            experiment = self.get(ref[len(PREFIX):])
            if experiment.status == STOPPED:
                raise ExperimentEnded(experiment.name, experiment.status)
        else:
            # A model's own name always opens that model (a model registered after an alias was taken wins too).
            experiment = None if self._is_model(ref) else self.owner(ref)
            if experiment is None:
                return Opened(self.chats.open(place, user_key, ref, system_prompt))
        variant = self._assign(experiment, user_key) if experiment.status == RUNNING else experiment.winner
        session = self.chats.open(place, user_key, variant.model_name, variant.system_prompt or system_prompt,
                                  version_id=variant.model_version_id, variant_id=variant.id)
        return Opened(session, experiment, variant)

    # -- status --------------------------------------------------------------------------------------------
    def status(self, name: str) -> ExperimentStatus:
        """The experiment's figures and verdict, from its variant rows and latency histograms only.

        Each look while it runs updates the sequential test's state (and the looks kept for the chart).

        Raises:
            ExperimentNotFound: no experiment has that name.
        """
        experiment = self.get(name)
        ids = [v.id for v in experiment.variants]
        with self._db.session() as session:
            histograms: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for variant_id, bucket, count in session.execute(select(
                    ExperimentLatency.variant_id, ExperimentLatency.bucket, ExperimentLatency.count)
                    .where(ExperimentLatency.variant_id.in_(ids))):
                histograms[variant_id].append((bucket, int(count)))
        totals = [_totals(v, percentile(histograms[v.id], 0.95)) for v in experiment.variants]
        details = experiment.details
        analysis = analyse(experiment.metric, totals, alpha=experiment.alpha, guardrails=experiment.guardrails,
                           state=details)
        history = list(details.get("history", []))
        if experiment.status == RUNNING:
            look = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "n": sum(t.ratings if experiment.metric == "thumbs_up" else t.timed for t in totals),
                    "sequential": {c.variant: c.sequential.to_dict() for c in analysis.comparisons},
                    "difference": {c.variant: c.difference for c in analysis.comparisons}}
            if not history or history[-1]["n"] != look["n"]:  # a look at the same data adds nothing to the chart
                history = (history + [look])[-HISTORY_LOOKS:]
            self._save_details(experiment.id, {**analysis.state(), "history": history})
        return ExperimentStatus(experiment, analysis, history)

    def _save_details(self, experiment_id: int, details: dict[str, Any]) -> None:
        with self._db.session() as session:
            session.execute(update(Experiment).where(Experiment.id == experiment_id, Experiment.status == RUNNING)
                            .values(details=details).execution_options(synchronize_session=False))

    # -- end -----------------------------------------------------------------------------------------------
    def stop(self, name: str) -> ExperimentRecord:
        """End a running experiment without a winner.

        Raises:
            ExperimentNotFound: no experiment has that name.
            ExperimentEnded: it was already stopped or shipped.
        """
        experiment = self.get(name)
        self._end(experiment, STOPPED, None)
        return self.get(name)

    def ship(self, name: str, variant: str | None = None) -> Shipped:
        """Record the winner (the verdict's, or the variant named) and end the experiment; its alias then opens the
        winner's version, system prompt and parameters.

        Raises:
            ExperimentNotFound: no experiment has that name.
            ExperimentEnded: it was already shipped.
            ExperimentInvalid: the variant named is not one of it.
            NoWinnerYet: no variant named and the statistics show no winner, or it was stopped.
        """
        experiment = self.get(name)
        if experiment.status == SHIPPED:
            raise ExperimentEnded(experiment.name, experiment.status)
        if variant is not None:
            chosen = experiment.variant(variant)
        elif experiment.status == STOPPED:  # its figures no longer move: only a variant named can be shipped
            raise NoWinnerYet(experiment.name, "stopped", stopped=True,
                              variants=tuple(v.name for v in experiment.variants))
        else:
            verdict = self.status(name).analysis.verdict
            if verdict.winner is None:
                raise NoWinnerYet(experiment.name, verdict.reason.split(":")[0],
                                  variants=tuple(v.name for v in experiment.variants))
            chosen = experiment.variant(verdict.winner)
        before = self.alias_opens(experiment.alias) if experiment.alias else None
        self._end(experiment, SHIPPED, chosen.id)
        return Shipped(self.get(name), chosen, before, self.alias_opens(experiment.alias) if experiment.alias else None)

    def alias_opens(self, alias: str) -> str:
        """What `/chat <alias>` opens now, in words: a model of that name, else the running experiment that owns it,
        else the winner shipped last under it, else nothing (the same order as `open`)."""
        if self._is_model(alias):
            return f"the model `{alias.strip().lower()}`"
        owner = self.owner(alias)
        if owner is None:
            return "nothing: no model or experiment has that name, so it says the model is not found"
        if owner.status == RUNNING:
            return f"the running experiment `{owner.name}` (each person's variant)"
        winner = owner.winner
        return (f"experiment `{owner.name}`'s shipped variant {winner.name} ({winner.describe()})" if winner
                else "nothing")

    def _is_model(self, name: str) -> bool:
        """Whether a registered model has this name (or repo id), as `/chat <name>` looks it up."""
        try:
            self.registry.get(name)
        except ModelNotFound:
            return False
        return True

    def _end(self, experiment: ExperimentRecord, status: str, winner: int | None) -> None:
        with self._db.session() as session:
            ended = session.execute(
                update(Experiment).where(Experiment.id == experiment.id, Experiment.status.in_([RUNNING, STOPPED])
                                         if status == SHIPPED else Experiment.status == RUNNING)
                .values(status=status, winner_variant_id=winner,
                        ended_at=experiment.ended_at or datetime.now(timezone.utc))
                .execution_options(synchronize_session=False)).rowcount
        if not ended:
            raise ExperimentEnded(experiment.name, self.get(experiment.name).status)


def _check_name(what: str, value: str) -> str:
    text = (value or "").strip().lower()
    if text.startswith(PREFIX) or not _NAME.fullmatch(text):
        raise ExperimentInvalid(what, f"`{shown(value)}` is not a name: use up to 64 lowercase letters, digits, "
                                      ". - or _, starting with a letter or digit")
    return text


def _variant_record(v: ExperimentVariant, model_name: str) -> VariantRecord:
    return VariantRecord(id=v.id, name=v.name, model_version_id=v.model_version_id, model_name=model_name,
                         weight=v.weight, system_prompt=v.system_prompt, params=dict(v.params or {}),
                         exposures=int(v.exposures), answers=int(v.answers), failures=int(v.failures),
                         ups=int(v.ups), downs=int(v.downs), ms_sum=float(v.ms_sum), ms_sq_sum=float(v.ms_sq_sum))


def _totals(v: VariantRecord, p95_ms: float | None) -> Totals:
    return Totals(v.name, v.weight, exposures=v.exposures, answers=v.answers, failures=v.failures, ups=v.ups,
                  downs=v.downs, ms_sum=v.ms_sum, ms_sq_sum=v.ms_sq_sum, p95_ms=p95_ms)

