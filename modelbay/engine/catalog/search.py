"""SQL for registry searches: derived search columns, filters, relevance and sort orders, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from collections.abc import Iterable
from datetime import datetime
from functools import cache

from sqlalchemy import ColumnElement, CompoundSelect, Select, Subquery, bindparam, case, false, func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import KeyedColumnElement

from modelbay.engine.records import ModelQuery, SpeedSource
from modelbay.engine.db.schema.analytics import AnalyticsEvent, UsageHourly
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message

__all__ = ["DERIVED", "count_query", "derived_columns", "installed_condition", "measured_speeds", "page_query"]

# Relevance points per word, best place first; a word that matches only elsewhere in search_text scores 1.
_EXACT_NAME, _NAME_PREFIX, _IN_NAME, _TAG, _ELSEWHERE = 100, 30, 20, 10, 1
_EXACT_PHRASE = 1000


# The model columns derived_columns computes from the others; callers never set them.
DERIVED = frozenset({"search_text", "tags_text", "memory_bytes", "tokens_per_s", "accuracy"})


def derived_columns(row: Model) -> dict[str, Any]:
    """Return the search columns (DERIVED) that follow from a model's metadata."""
    tags = [str(t).replace(",", " ").strip().lower() for t in row.tags or []]
    tags = [t for t in tags if t]
    parts = (row.repo_id, row.name, row.display_name, row.author, " ".join(tags), row.description)
    performance = row.performance or {}
    stated_memory = _number((row.requirements or {}).get("memory_bytes"))
    return {
        "search_text": _distinct_words(" ".join(p for p in parts if p).lower()),
        "tags_text": "," + "".join(f"{t}," for t in tags),
        "memory_bytes": int(stated_memory) if stated_memory is not None else row.size_bytes,
        "tokens_per_s": _number(performance.get("tokens_per_s")),
        "accuracy": _number(performance.get("accuracy")),
    }


def _distinct_words(text: str) -> str:
    # A word inside text already kept adds no match (query words hold no spaces), only bytes every search scans.
    kept = ""
    for word in text.split():
        if word not in kept:
            kept = f"{kept} {word}" if kept else word
    return kept


def _number(value: Any) -> float | None:
    # JSON figures come from catalog files and the Hub: accept numbers, ignore anything else.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _like(column: KeyedColumnElement[str], before: str, text: str, after: str) -> ColumnElement[bool]:
    # The pattern is built here, not in SQL, so each backend compares against one constant.
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return column.like(f"{before}{escaped}{after}", escape="/")


def installed_condition(installed: bool) -> ColumnElement[bool]:
    """Return the condition that a model has (or has not) an installed version."""
    exists = (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == Model.id, ModelVersion.install_state == InstallState.INSTALLED)
        .exists()
    )
    return exists if installed else ~exists


def _conditions(query: ModelQuery, speed: ColumnElement[float] | None = None) -> list[ColumnElement[bool]]:
    # `speed`: the figure the speed bound compares, from _with_speeds (the catalog's when not given).
    conditions = [_like(Model.search_text, "%", word, "%") for word in query.words]
    conditions += [_like(Model.tags_text, "%,", tag.lower(), ",%") for tag in query.tags]
    if query.category:
        try:
            conditions.append(Model.category == Category(query.category.lower()))
        except ValueError:
            conditions.append(false())  # an unknown category matches nothing, as an unknown tag does
    if query.installed is not None:
        conditions.append(installed_condition(query.installed))
    if query.source:
        conditions.append(Model.source == query.source.lower())
    if query.license:
        conditions.append(func.lower(Model.license) == query.license.lower())
    if query.author:
        conditions.append(func.lower(Model.author) == query.author.lower())
    at_least = (
        (Model.parameter_count, query.min_parameters),
        (Model.accuracy, query.min_accuracy),
    )
    at_most = (
        (Model.parameter_count, query.max_parameters),
        (Model.size_bytes, query.max_size_bytes),
        (Model.memory_bytes, query.max_memory_bytes),
    )
    if query.min_tokens_per_s is not None:
        conditions.append((Model.tokens_per_s if speed is None else speed) >= query.min_tokens_per_s)
    conditions += [column >= bound for column, bound in at_least if bound is not None]
    conditions += [column <= bound for column, bound in at_most if bound is not None]
    return conditions


def _relevance(words: list[str]) -> ColumnElement[int]:
    # Names are lowercase slugs (the catalog validates them, registration slugs them), so they need no lower().
    score: ColumnElement[int] = literal(0)
    for word in words:
        score = score + case(
            (Model.name == word, _EXACT_NAME),
            (_like(Model.name, "", word, "%"), _NAME_PREFIX),
            (_like(Model.name, "%", word, "%"), _IN_NAME),
            (_like(Model.tags_text, "%,", word, ",%"), _TAG),
            else_=_ELSEWHERE,
        )
    phrase = " ".join(words)
    exact = case(
        (
            Model.name.in_([phrase, "-".join(words)])
            | (func.lower(Model.display_name) == phrase)
            | (func.lower(Model.repo_id) == phrase),
            _EXACT_PHRASE,
        ),
        else_=0,
    )
    return score + exact


def _ratings() -> Subquery:
    # One grouped pass over feedback beats a per-model subquery: chat_sessions has no index on its version.
    thumbs_up = func.avg(case((Feedback.rating > 0, 1.0), else_=0.0))
    return (
        select(ModelVersion.model_id, thumbs_up.label("rating"))
        .select_from(Feedback)
        .join(Message, Feedback.message_id == Message.id)
        .join(ChatSession, Message.session_id == ChatSession.id)
        .join(ModelVersion, ChatSession.model_version_id == ModelVersion.id)
        .group_by(ModelVersion.model_id)
        .subquery("ratings")
    )


def _last_used() -> ColumnElement[Any]:
    # Per model, a max() over ix_analytics_events_version_time for each of its few versions.
    return (
        select(func.max(AnalyticsEvent.created_at))
        .join(ModelVersion, AnalyticsEvent.model_version_id == ModelVersion.id)
        .where(ModelVersion.model_id == Model.id)
        .scalar_subquery()
    )


# -- tokens/s measured here ------------------------------------------------------------------------------------------
# A model's speed is what this deployment measured, first from its answers (the hourly rollups' per-answer tokens/s,
# over all its versions and all time), else from its newest optimization report (the variant's decode tokens/s on
# this machine), else the catalog's or Hub's figure (Model.tokens_per_s, from `performance`).

_OPTIMIZE = "optimize"  # optimization.LINEAGE (the catalog sits below engine.optimization, so it is not imported)
# The variant's decode tokens/s in an optimized version's report (measure.Measurement as JSON, in lineage_params).
_REPORT_SPEED = ModelVersion.lineage_params[("report", "variant", "tokens_per_s")].as_float()


def _answer_speeds(since: bool = False, some: bool = False) -> Subquery:
    # (model_id, tokens_per_s): the mean per-answer tokens/s over the model's answers with a figure. With `since`,
    # answers from the `since` parameter on; with `some`, only the models in the `ids` parameter (expanding).
    u, v = UsageHourly, ModelVersion
    where = [u.hour >= bindparam("since")] if since else []
    where += [v.model_id.in_(bindparam("ids", expanding=True))] if some else []
    return (
        select(v.model_id, (func.sum(u.tps_sum) / func.sum(u.tps_count)).label("tokens_per_s"))
        .select_from(u).join(v, v.id == u.model_version_id).where(*where)
        .group_by(v.model_id).having(func.sum(u.tps_count) > 0)
        .subquery("answer_speeds")
    )


def _report_speeds(some: bool = False) -> Subquery:
    # (model_id, tokens_per_s): the figure of the model's newest optimized version whose report measured one.
    v = ModelVersion
    where = [v.lineage == _OPTIMIZE, _REPORT_SPEED > 0]
    where += [v.model_id.in_(bindparam("ids", expanding=True))] if some else []
    newest = select(v.model_id, func.max(v.id).label("id")).where(*where).group_by(v.model_id).subquery("newest")
    return (
        select(newest.c.model_id, _REPORT_SPEED.label("tokens_per_s"))
        .select_from(newest).join(v, v.id == newest.c.id)
        .subquery("report_speeds")
    )


def _with_speeds(stmt: Select[Any]) -> tuple[Select[Any], ColumnElement[float]]:
    """stmt (over Model) outer-joined to the figures measured here, and the speed it compares: COALESCE(answers,
    newest optimization report, catalog). Each grouped read is materialized once per statement."""
    answers, reports = _answer_speeds(), _report_speeds()
    stmt = (stmt.outerjoin(answers, answers.c.model_id == Model.id)
            .outerjoin(reports, reports.c.model_id == Model.id))
    return stmt, func.coalesce(answers.c.tokens_per_s, reports.c.tokens_per_s, Model.tokens_per_s)


def measured_speeds(session: Session, model_ids: Iterable[int] | None = None, *,
                    since: datetime | None = None) -> dict[int, tuple[float, SpeedSource]]:
    """Tokens/s measured here per model id, and how: "answers" (the mean per-answer tokens/s of the hourly rollups
    over all its versions, since `since` when given), else "optimization report" (its newest optimized version's
    decode tokens/s, measured on this machine). Models with neither are left out: the catalog's figure is theirs.

    `model_ids` limits the work to those models (a page of results); None reads every model. One statement, built
    once per shape, of two grouped reads (no join to models): a page pays about a millisecond.
    """
    ids = None if model_ids is None else list(model_ids)
    if ids is not None and not ids:
        return {}
    params: dict[str, Any] = {"since": since} if since is not None else {}
    params.update({"ids": ids} if ids is not None else {})
    found: dict[int, tuple[float, SpeedSource]] = {}
    for model_id, figure, report in session.execute(_measured_statement(since is not None, ids is not None), params):
        if figure is not None and not (report and model_id in found):  # answers first, whichever row comes first
            found[model_id] = (float(figure), "optimization report" if report else "answers")
    return found


@cache
def _measured_statement(since: bool, some: bool) -> CompoundSelect:
    answers, reports = _answer_speeds(since, some), _report_speeds(some)
    return select(answers.c.model_id, answers.c.tokens_per_s, literal(0).label("report")).union_all(
        select(reports.c.model_id, reports.c.tokens_per_s, literal(1).label("report")))


def _select_ids(query: ModelQuery) -> tuple[Select[Any], list[ColumnElement[bool]]]:
    """select(Model.id) with what the filters need joined, and the conditions: a speed bound compares the figures
    measured here (_with_speeds), so only then are they joined."""
    stmt = select(Model.id)
    if query.min_tokens_per_s is None:
        return stmt, _conditions(query)
    stmt, speed = _with_speeds(stmt)
    return stmt, _conditions(query, speed)


def page_query(query: ModelQuery) -> Select[Any]:
    """Return the query for one page of matching ids, with the rating or last use when sorted by it.

    A filtered query also returns the `total`: the scan that finds the page counts it too. An unfiltered one
    leaves counting to count_query, which reads an index, so its page can come straight off ix_models_downloads.
    """
    stmt, conditions = _select_ids(query)
    stmt = stmt.where(*conditions)
    if conditions:
        stmt = stmt.add_columns(func.count().over().label("total"))
    order = query.order
    # Ties go to downloads, then the newer model: that pair reads straight off ix_models_downloads (rowid included),
    # where a name tie-break would make SQLite fetch every row to sort.
    tail = (Model.downloads.desc(), Model.id.desc())
    if order == "relevance":
        stmt = stmt.order_by(_relevance(query.words).desc(), *tail)
    elif order == "downloads":
        stmt = stmt.order_by(*tail)
    elif order == "likes":
        stmt = stmt.order_by(Model.likes.desc(), *tail)
    elif order == "size":
        stmt = stmt.order_by(Model.size_bytes.asc().nulls_last(), *tail)
    elif order == "name":
        stmt = stmt.order_by(Model.name)
    elif order == "rating":
        ratings = _ratings()
        stmt = stmt.add_columns(ratings.c.rating).outerjoin(ratings, ratings.c.model_id == Model.id)
        stmt = stmt.order_by(ratings.c.rating.desc().nulls_last(), *tail)
    elif order == "recent":
        last_used = _last_used().label("last_used_at")
        stmt = stmt.add_columns(last_used).order_by(last_used.desc().nulls_last(), *tail)
    else:
        raise ValueError(f"unknown sort {order!r}")
    return stmt.limit(query.limit).offset(query.offset)


def count_query(query: ModelQuery) -> Select[Any]:
    """Return the query that counts every match."""
    stmt, conditions = _select_ids(query)
    return stmt.with_only_columns(func.count(Model.id)).where(*conditions)
