"""Experiment tables: A/B experiments (variants, exposures, running totals) and the blind arena (battles, votes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelbay.engine.db.schema.base import Base, utcnow

__all__ = ["ArenaBattle", "ArenaVote", "Experiment", "ExperimentExposure", "ExperimentLatency", "ExperimentVariant"]


class Experiment(Base):
    """An A/B experiment: two or more variants, a primary metric, guardrails; running, stopped or shipped."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    alias: Mapped[str | None] = mapped_column(String(64), index=True)  # the name `/chat <alias>` opens while running
    metric: Mapped[str] = mapped_column(String(16))  # thumbs_up | response_time
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped | shipped
    alpha: Mapped[float] = mapped_column(Float, default=0.05)
    guardrails: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"p95_ms": ..., "error_rate": ...}
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # running state of the sequential test
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    winner_variant_id: Mapped[int | None] = mapped_column(Integer)  # no FK: variants point at their experiment


class ExperimentVariant(Base):
    """One arm of an experiment, with running totals updated in the transaction that stores each answer or rating."""

    __tablename__ = "experiment_variants"
    __table_args__ = (UniqueConstraint("experiment_id", "name", name="uq_experiment_variants_experiment_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    weight: Mapped[float] = mapped_column(Float)
    system_prompt: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)  # serving parameters: temperature, max_tokens
    exposures: Mapped[int] = mapped_column(BigInteger, default=0)
    answers: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    ups: Mapped[int] = mapped_column(BigInteger, default=0)
    downs: Mapped[int] = mapped_column(BigInteger, default=0)
    ms_sum: Mapped[float] = mapped_column(Float, default=0.0)  # response times, for the mean and its variance
    ms_sq_sum: Mapped[float] = mapped_column(Float, default=0.0)


class ExperimentExposure(Base):
    """A person's assignment to a variant, logged once per person and experiment."""

    __tablename__ = "experiment_exposures"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("experiment_variants.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExperimentLatency(Base):
    """A response-time histogram per variant (analytics.latency_bucket), for the p95 guardrail."""

    __tablename__ = "experiment_latency"

    variant_id: Mapped[int] = mapped_column(ForeignKey("experiment_variants.id", ondelete="CASCADE"),
                                            primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class ArenaBattle(Base):
    """Two model versions answering one prompt blind, side by side."""

    __tablename__ = "arena_battles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(32), index=True)
    user_key: Mapped[str] = mapped_column(String(128), index=True)  # who asked
    prompt: Mapped[str | None] = mapped_column(Text)  # kept only when the operator stores transcripts
    model_a_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    model_b_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="answering")  # answering | ready | failed
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per side: tokens, time to first token, total ms
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArenaVote(Base):
    """One person's verdict on a battle: a, b, tie or both_bad (one per person and battle)."""

    __tablename__ = "arena_votes"
    __table_args__ = (Index("ix_arena_votes_user_time", "user_key", "created_at"),)

    battle_id: Mapped[int] = mapped_column(ForeignKey("arena_battles.id", ondelete="CASCADE"), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))  # a | b | tie | both_bad
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
