"""/analytics model, compare and dashboard: requests, response times, speed and satisfaction of models over a
period, side by side and as charts (PNG attachments, each with its text alternative in the same reply)."""

from __future__ import annotations

import re
from collections.abc import Callable

from modelbay.bot.context import Context
from modelbay.bot.errors import ArgumentInvalid
from modelbay.bot.reply import Attachment, Button, Field, Reply, Table
from modelbay.bot.commands._args import MODEL, PERIOD
from modelbay.bot.spec import COMMANDS, Arg, command
from modelbay.engine.analytics import charts
from modelbay.engine.analytics.analytics import PERIODS, Metrics, parse_period
from modelbay.engine.analytics.compare import Column, Strength, compare, dashboard
from modelbay.engine.errors import ModelNotFound, shown
from modelbay.engine.units import number, plural


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _satisfaction(m: Metrics) -> str:
    if not m.ratings:
        return "no ratings yet"
    low, high = m.satisfaction_interval or (0.0, 1.0)
    return f"{m.satisfaction:.0%} 👍 of {plural(m.ratings, 'rating')} (95% CI {low:.0%}–{high:.0%})"


@command(
    "analytics", "model",
    help="Show a model's requests, p50/p95 response time, tokens/s and satisfaction over a period.",
    args=(MODEL, PERIOD),
)
async def model_metrics(ctx: Context, model: str, period: str) -> Reply:
    """Compute the model's metrics from the hourly rollups."""
    record = await ctx.call(ctx.runtime.registry.get, model)
    metrics = await ctx.call(ctx.runtime.analytics.metrics, [v.id for v in record.versions], parse_period(period))
    span = "all time" if period == "all" else f"last {period}"
    if not metrics.requests:
        return Reply(title=f"{record.display_name} · {span}",
                     text=f"No answers recorded yet. `/chat {record.name}` to try it.")
    failed = f" ({metrics.failures} failed)" if metrics.failures else ""
    fields = [
        Field("Requests", f"{metrics.requests:,}{failed}"),
        Field("Response p50", _ms(metrics.p50_ms)),
        Field("Response p95", _ms(metrics.p95_ms)),
        Field("First token", _ms(metrics.mean_ttft_ms) + " mean"),
        Field("Speed", f"{metrics.tokens_per_s:.1f} tokens/s" if metrics.tokens_per_s else "-"),
        Field("Satisfaction", _satisfaction(metrics), inline=False),
    ]
    return Reply(title=f"{record.display_name} · {span}", fields=fields,
                 footer="Percentiles from 5%-wide response-time buckets; people who opted out are not counted.")


# -- compare and dashboard ---------------------------------------------------------------------------------------

def _span(period: str) -> str:
    return "all time" if period == "all" else f"last {period}"


def _share_cell(m: Metrics) -> str:
    if not m.ratings:
        return "no ratings"
    low, high = m.satisfaction_interval or (0.0, 1.0)
    return f"{m.satisfaction:.0%} of {m.ratings} ({low:.0%}–{high:.0%})"


def _strength_cell(strength: Strength | None) -> str:
    if strength is None:
        return "no battles"
    if strength.unranked:  # too few battles, or won/lost them all: the leaderboard's words, not a runaway figure
        return strength.unranked
    # strength (−below/+above), as the arena leaderboard writes it; a real minus sign, never a dash
    return (f"{number(strength.strength)} (−{number(strength.strength - strength.low)}/"
            f"+{number(strength.high - strength.strength)})")




def compare_table(columns: list[Column]) -> Table:
    """The compared models as columns, one figure per row."""
    rows = [
        ["Requests"] + [f"{c.metrics.requests:,}" + (f" ({c.metrics.failures:,} failed)" if c.metrics.failures
                                                      else "") for c in columns],
        ["Response p50"] + [_ms(c.metrics.p50_ms) for c in columns],
        ["Response p95"] + [_ms(c.metrics.p95_ms) for c in columns],
        ["First token (mean)"] + [_ms(c.metrics.mean_ttft_ms) for c in columns],
        ["Tokens/s"] + [f"{c.metrics.tokens_per_s:.1f}" if c.metrics.tokens_per_s else "-" for c in columns],
        ["👍 share (95% CI)"] + [_share_cell(c.metrics) for c in columns],
        ["Arena strength (95% CI)"] + [_strength_cell(c.strength) for c in columns],
    ]
    return Table(["", *(c.name for c in columns)], rows)


def chart_attachments(columns: list[Column], stem: str) -> tuple[list[Attachment], str]:
    """The response-time and satisfaction charts of these models as PNG attachments, and their text."""
    named = {c.name: c.series for c in columns}
    attachments = [Attachment(f"{stem}-response-time.png", charts.latency_png(named), "image/png")]
    text = ["**Response time, as text:**", charts.latency_text(named)]
    if any(c.metrics.ratings for c in columns):
        attachments.append(Attachment(f"{stem}-satisfaction.png", charts.satisfaction_png(named), "image/png"))
        text += ["**Satisfaction, as text:**", charts.satisfaction_text(named)]
    return attachments, "\n".join(text)


# A word meant as a period: digits and a unit (`1y`, `12mo`, `3weeks`) or a way of saying all time.
_PERIOD_LIKE = re.compile(r"\d+[a-z]{1,7}|al+|all[-_]?time|(for)?ever|lifetime", re.IGNORECASE)


def _split_period(words: list[str], is_model: Callable[[str], bool]) -> tuple[list[str], str]:
    """Model names and the period: a last word that is a period (`24h`, `7d`, ...) is the period, else a week.

    Raises:
        ArgumentInvalid: the last word looks like a period (`1y`, `alltime`) but is none of PERIODS and no model
            has that name; or a period is given without a model before it.
    """
    command_ = COMMANDS.get(("analytics", "compare"))
    assert command_ is not None
    period = "7d"
    if words and words[-1].lower() in PERIODS:
        words, period = words[:-1], words[-1].lower()
    elif words and _PERIOD_LIKE.fullmatch(words[-1]) and not is_model(words[-1]):
        raise ArgumentInvalid(command_, "period", f"must be one of {', '.join(PERIODS)} (got '{shown(words[-1])}')")
    if not words:
        raise ArgumentInvalid(command_, "models", f"needs at least one model name before the period, e.g. "
                                                  f"`/analytics compare <model> <model> {period}`")
    return words, period


def _is_model(ctx: Context) -> Callable[[str], bool]:
    def known(name: str) -> bool:
        try:
            ctx.runtime.registry.get(name)
        except ModelNotFound:
            return False
        return True
    return known


@command(
    "analytics", "compare",
    help="Compare models side by side: requests, p50/p95, first token, tokens/s, 👍 share, arena strength, charts.",
    args=(Arg("models", f"Two or more model names, then a period ({', '.join(PERIODS)}; a week unless given).",
              required=True, rest=True, max_length=1000),),
    slow=True,
)
async def compare_models(ctx: Context, models: str) -> Reply:
    """Lay the models' figures side by side from the rollups, with response-time and satisfaction charts."""
    names, period = await ctx.call(_split_period, [w for w in models.replace(",", " ").split() if w], _is_model(ctx))
    names = list(dict.fromkeys(names))
    columns = await ctx.call(compare, ctx.runtime.db, ctx.runtime.registry, ctx.runtime.analytics, names,
                             parse_period(period), ctx.runtime.arena)
    title = f"{' vs '.join(c.display_name for c in columns)} · {_span(period)}"
    if not any(c.metrics.requests or c.metrics.ratings for c in columns):
        return Reply(title=title, table=compare_table(columns),
                     text="No answers recorded for these models in this period. "
                          f"`/chat {columns[0].name}` to try one, or a longer period (e.g. 30d).")
    attachments, text = await ctx.call(chart_attachments, columns, "compare")
    return Reply(title=title, table=compare_table(columns), text=text,
                 attachments=attachments, buttons=[Button(f"Chat with {c.name}", f"/chat {c.name}")
                                                   for c in columns[:3]],
                 footer="Percentiles from 5%-wide response-time buckets; 👍 intervals are Wilson 95%; arena "
                        "strength is Bradley-Terry with a 95% bootstrap interval. Times in UTC.")


def dashboard_reply(columns: list[Column], installed: int, period: str, png: bytes | None) -> Reply:
    """The dashboard card: one line per model with its figures, the chart, and its text."""
    title = f"ModelBay dashboard · {_span(period)}"
    if not columns:
        return Reply(title=title, text="No model is installed yet. An admin installs one with "
                                       "`/models install <model>`; `/models search <words>` finds them.")
    more = installed - len(columns)
    table = Table(["Model", "Requests", "p50", "p95", "👍 share (95% CI)"],
                  [[c.name, f"{c.metrics.requests:,}", _ms(c.metrics.p50_ms), _ms(c.metrics.p95_ms),
                    _share_cell(c.metrics)] for c in columns])
    text = ["**Chart, as text:**", charts.dashboard_text(columns)]
    if more > 0:
        text.append(f"{plural(more, 'more installed model')} not shown (fewest answers).")
    return Reply(title=title, table=table, text="\n".join(text),
                 attachments=[Attachment("dashboard.png", png, "image/png")] if png else [],
                 footer="`/analytics compare <model> <model>` for one comparison; `/analytics model <model>` for one.")


@command(
    "analytics", "dashboard",
    help="The team's installed models with their requests, p95 and 👍 share, and a chart.",
    args=(Arg("period", "How far back.", choices=PERIODS, default="24h"),),
    slow=True,
)
async def show_dashboard(ctx: Context, period: str) -> Reply:
    """One card: the installed models (most answers first) with figures over the period and the dashboard chart."""
    columns, installed = await ctx.call(dashboard, ctx.runtime.db, ctx.runtime.registry, ctx.runtime.analytics,
                                        parse_period(period))
    png = await ctx.call(charts.dashboard_png, columns, f"Models · {_span(period)}") if columns else None
    return dashboard_reply(columns, installed, period, png)
