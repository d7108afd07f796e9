"""/analytics model: requests, response times, speed and satisfaction of a model over a period."""

from __future__ import annotations

from modelbay.bot.context import Context
from modelbay.bot.reply import Field, Reply
from modelbay.bot.commands._args import MODEL, PERIOD
from modelbay.bot.spec import command
from modelbay.engine.analytics.analytics import Metrics, parse_period


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _satisfaction(m: Metrics) -> str:
    if not m.ratings:
        return "no ratings yet"
    low, high = m.satisfaction_interval or (0.0, 1.0)
    return f"{m.satisfaction:.0%} 👍 of {m.ratings} rating{'s' if m.ratings != 1 else ''} (95% CI {low:.0%}–{high:.0%})"


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
