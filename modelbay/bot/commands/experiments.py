"""/experiments start, status, stop, ship and list: A/B tests of model variants, decided from chat.

`start` takes the variants as one list separated by `|`, each a model and optional `temperature=`, `max_tokens=`
and `system=` (`key:value` works too), read shell-style: a quoted value keeps its `|` and spaces
(`system:"You are | terse"`), an unquoted system prompt runs to the next option or `|`: `/experiments start tone
tiny-chat | tiny-chat temperature=0.2 system=Answer in one sentence. split:50/50 alias:assistant`. People then chat with
`/chat exp:tone` (or `/chat assistant` while it runs) and rate the answers; `status` is the card that says, in plain
words, whether it may stop and why.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex

from modelbay.bot.commands._args import limit
from modelbay.bot.context import Context
from modelbay.bot.reply import Attachment, Button, Field, Reply, Table
from modelbay.bot.spec import Arg, ArgType, command
from modelbay.engine.errors import ExperimentInvalid, shown
from modelbay.engine.experiments import charts
from modelbay.engine.experiments.experiments import (
    ExperimentRecord,
    ExperimentStatus,
    VariantRecord,
    VariantSpec,
)
from modelbay.engine.experiments.stats import METRICS, THUMBS_UP, Analysis
from modelbay.engine.units import ago, number

__all__ = ["parse_split", "parse_variants", "status_card"]

NAME = Arg("name", "The experiment's name.", required=True, max_length=64)
OPTIONS = ("temperature", "max_tokens", "system")  # what a variant may set after its model
_SYNTAX = 'e.g. `tiny-chat | tiny-chat temperature=0.2 system:"Answer | briefly"`'


def parse_variants(text: str) -> list[VariantSpec]:
    """`model [temperature=T] [max_tokens=N] [system=text] | model ...` into variant specs.

    Read shell-style (`shlex`): a `|` outside quotes ends a variant (`a|b` too), one inside quotes is text, so a
    system prompt holding a `|` is quoted: `system:"You are | terse"` (`key:value` and `key=value` both work). An
    unquoted system prompt runs to the next option or `|`, as before: `system=Answer in one sentence.`

    Raises:
        ExperimentInvalid: one line naming the variant, the problem and the fix: an unclosed quote, an empty variant
            (`a | | b`), a variant without a model, an unknown option, an option given twice, a word that is no
            option, or a temperature / max_tokens that is not a number.
    """
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        raise ExperimentInvalid("variants", "a quote is not closed; close it, " + _SYNTAX) from None
    groups: list[list[str]] = [[]]
    for token in tokens:
        if set(token) == {"|"}:  # `||` is two separators around an empty variant
            groups.extend([] for _ in token)
        else:
            groups[-1].append(token)
    return [_variant(i + 1, group, len(groups)) for i, group in enumerate(groups)]


def _variant(index: int, tokens: list[str], count: int) -> VariantSpec:
    where = f"variant {index}"
    if not tokens:
        fix = ("give at least two variants separated by |" if count == 1
               else "remove the extra | or put a model between them")
        raise ExperimentInvalid(where, f"it is empty; {fix}, {_SYNTAX}")
    model, values, current = tokens[0], {}, None
    if _option(model) is not None:
        raise ExperimentInvalid(where, f"start it with a model name, then options, {_SYNTAX}")
    for token in tokens[1:]:
        found = _option(token)
        if found is None or (found[0] not in OPTIONS and current == "system"):
            if current != "system":
                raise ExperimentInvalid(where, f"`{shown(token)}` is not an option; options are "
                                               f"{', '.join(OPTIONS)}, and a system prompt with spaces or | goes "
                                               'in quotes: system:"..."')
            values["system"] += " " + token  # an unquoted system prompt runs on
            continue
        key, value = found
        if key not in OPTIONS:
            close = [o for o in OPTIONS if o.startswith(key)] or difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ExperimentInvalid(where, f"`{shown(key)}` is not an option; {hint}options are {', '.join(OPTIONS)}")
        if key in values:
            raise ExperimentInvalid(where, f"{key} is given twice; give it once")
        values[key], current = value, key
    try:
        temperature = float(values["temperature"]) if "temperature" in values else None
        max_tokens = int(values["max_tokens"]) if "max_tokens" in values else None
    except ValueError:
        raise ExperimentInvalid(where, "temperature takes a number (0.2) and max_tokens a whole number (128)") from None
    return VariantSpec(model=model, temperature=temperature, max_tokens=max_tokens,
                       system_prompt=(values.get("system") or "").strip() or None)


def _option(token: str) -> tuple[str, str] | None:
    """(key, value) of a `key=value` or `key:value` token whose key is a word, else None (a model, a word)."""
    match = re.match(r"([A-Za-z_]+)[=:](.*)\Z", token, re.DOTALL)
    return (match.group(1).lower(), match.group(2)) if match else None


def parse_split(text: str | None, count: int) -> list[float]:
    """`50/50`, `20,80`, `1:1:1` or `60%/40%` into one weight per variant (an even split when not given).

    Raises:
        ExperimentInvalid: not one positive, finite number per variant.
    """
    if text is None or not text.strip():
        return [1.0] * count
    try:
        weights = [float(w.strip().removesuffix("%")) for w in re.split(r"[/,:]", text)]
    except ValueError:
        raise ExperimentInvalid("split", f"`{shown(text)}` is not numbers like 50/50 or 1/1/1") from None
    if len(weights) != count:
        raise ExperimentInvalid("split", f"give one weight per variant ({count} variants, {len(weights)} weights), "
                                         f"like {'/'.join(['1'] * min(count, 10))}{'/…' if count > 10 else ''}")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise ExperimentInvalid("split", "every weight must be a number above 0, like 50/50 or 1/1/1")
    return weights


@command(
    "experiments", "start",
    help="Start an A/B experiment: variants separated by |, each a model with optional temperature=, max_tokens=, "
         'system= (quote a prompt holding a |: system:"You are | terse").',
    args=(
        NAME,
        Arg("variants", 'model [temperature=T] [max_tokens=N] [system:"..."] | model ...', required=True, rest=True,
            max_length=9000, keep_quotes=True),
        Arg("split", "Traffic split, e.g. 50/50 (even unless given).", named=True, max_length=100),
        Arg("metric", "What decides: thumbs_up (👍 share) or response_time.", choices=METRICS, default="thumbs_up",
            named=True),
        Arg("alias", "A name `/chat <alias>` opens while it runs (and the winner after ship); not a model's name.",
            named=True, max_length=64),
        Arg("p95", "Guardrail: highest p95 response time in ms.", type=ArgType.NUMBER, min=1, max=3_600_000,
            named=True),
        Arg("errors", "Guardrail: highest error rate, e.g. 0.05.", type=ArgType.NUMBER, min=0, max=0.99, named=True),
        Arg("alpha", "False-positive rate of the test.", type=ArgType.NUMBER, min=0.001, max=0.2, default=0.05,
            named=True),
    ),
    role="trainer",
)
async def start(ctx: Context, name: str, variants: str, split: str | None, metric: str, alias: str | None,
                p95: float | None, errors: float | None, alpha: float) -> Reply:
    """Start an experiment and say how people join it."""
    specs = parse_variants(variants)
    weights = parse_split(split, len(specs))
    specs = [VariantSpec(s.model, None, w, s.system_prompt, s.temperature, s.max_tokens)
             for s, w in zip(specs, weights, strict=True)]
    experiment = await ctx.call(ctx.runtime.experiments.start, name, specs, created_by=ctx.actor.key, metric=metric,
                                alias=alias, alpha=alpha, p95_ms=p95, error_rate=errors)
    join = f"`/chat exp:{experiment.name}`" + (f" or `/chat {experiment.alias}`" if experiment.alias else "")
    return Reply(
        title=f"Experiment {experiment.name} started", tone="success",
        text=(f"People who open {join} get a variant by a fixed hash of who they are, and keep it. Their 👍/👎 "
              f"decide ({_metric_words(experiment.metric)}). Check `/experiments status {experiment.name}` as "
              "often as you like: the test stays valid at every look."),
        table=Table(["Variant", "What", "Share"], [[v.name + (" (control)" if i == 0 else ""), v.describe(),
                                                  f"{v.weight:.0%}"] for i, v in enumerate(experiment.variants)]),
        fields=_guardrail_fields(experiment),
        buttons=[Button("Status", f"/experiments status {experiment.name}")],
    )


@command("experiments", "status", help="An experiment's figures, and whether it may stop yet.", args=(NAME,))
async def status(ctx: Context, name: str) -> Reply:
    """The status card with its chart."""
    found = await ctx.call(ctx.runtime.experiments.status, name)
    png = await ctx.call(charts.progress_png, found.analysis, found.history)
    return status_card(found, png)


def status_card(found: ExperimentStatus, png: bytes | None = None) -> Reply:
    """The card: may it stop and why, the figures in plain words, the per-variant table, the chart and its text."""
    e, a = found.experiment, found.analysis
    verdict = a.verdict
    if e.status == "running":
        head = f"**May stop: {'yes' if verdict.may_stop else 'no'}**, because {verdict.reason}."
        if verdict.winner:
            head += f" Ship it with `/experiments ship {e.name}`."
    else:
        winner = f" Winner: {e.winner.name} ({e.winner.describe()})." if e.winner else ""
        head = f"This experiment is {e.status}.{winner} Its last figures:"
    lines = [head, ""]
    lines += _explain(e, a)
    if a.srm:
        lines.append(f"⚠️ Sample ratio mismatch: the people per variant ({_people(e)}) are off the split "
                     f"({_split(e)}); chi-square p = {a.srm_p:.1g}.")
    elif a.srm_p is not None:
        lines.append(f"The people per variant ({_people(e)}) fit the split ({_split(e)}): chi-square p = "
                     f"{a.srm_p:.2f}.")
    lines += ["", charts.progress_text(a, found.history)]
    rows = []
    by_name = {v.name: v for v in e.variants}
    for f in a.variants:
        t, v = f.totals, by_name[f.totals.name]
        mean = [f"{t.mean_ms:,.0f}" if t.mean_ms is not None else "–"] if a.metric == THUMBS_UP else []
        rows.append([
            t.name + (" (control)" if v is e.variants[0] else ""), v.describe(), f"{t.exposures:,}", f"{t.answers:,}",
            f"{t.ups}/{t.downs}", _value(a.metric, f.value, f.interval),
            *mean, f"{t.p95_ms:,.0f}" if t.p95_ms else "–",
            f"{t.error_rate:.1%}" if t.error_rate is not None else "–",
            f"{f.p_best:.0%}" if f.p_best is not None else "–",
        ])
    buttons = [Button("Refresh", f"/experiments status {e.name}")]
    if e.status == "running":
        if verdict.winner:
            buttons.append(Button(f"Ship {verdict.winner}", f"/experiments ship {e.name}", "primary"))
        buttons.append(Button("Stop", f"/experiments stop {e.name}", "danger"))
    return Reply(
        title=f"Experiment {e.name} · {e.status}", tone="success" if verdict.may_stop else "info",
        text="\n".join(lines),
        # The response-time metric column is the mean (with its interval): the mean is shown once.
        table=Table(["Variant", "What", "People", "Answers", "👍/👎", _metric_column(a.metric),
                     *(["Mean ms"] if a.metric == THUMBS_UP else []), "p95 ms", "Errors", "P(best)"], rows),
        fields=_guardrail_fields(e),
        attachments=[Attachment(f"experiment-{e.name}.png", png, "image/png")] if png else [],
        buttons=buttons,
        footer=f"Started {ago(e.created_at)} by {e.created_by} · metric {e.metric} · alpha {e.alpha:g}",
    )


def _explain(e: ExperimentRecord, a: Analysis) -> list[str]:
    lines = []
    scale, unit = (100, " points") if a.metric == THUMBS_UP else (1, " ms")
    for c in a.comparisons:
        f = next(x for x in a.variants if x.totals.name == c.variant)
        f0 = a.variants[0]
        if c.difference is None:
            lines.append(f"{c.variant} vs {c.control}: no data to compare yet.")
            continue
        s = c.sequential
        text = (f"{c.variant} vs {c.control}: {_plain(a.metric, f.value)} vs {_plain(a.metric, f0.value)}, "
                f"{number(c.difference * scale, 1, sign=True)}{unit}")
        if c.interval is not None:
            text += (f" (95% interval {number(c.interval.low * scale, 1, sign=True)} to "
                     f"{number(c.interval.high * scale, 1, sign=True)}{unit}, "
                     f"p = {c.p_value:.2g} — a fixed-sample test, right only if this were the one look)")
        if s.looks:
            band = (f"; at any look the difference lies between {number(s.low * scale, 1, sign=True)} and "
                    f"{number(s.high * scale, 1, sign=True)}{unit}"
                    if math.isfinite(s.low) and math.isfinite(s.high) else "")
            text += (f". Sequential test: always-valid p = {s.p_value:.3g} against alpha {c.alpha:.3g}{band}.")
        else:
            text += ". The sequential test starts once each side has enough data."
        lines.append(text)
    best = [f for f in a.variants if f.p_best is not None]
    if best:
        worded = ", ".join(f"{f.totals.name} {f.p_best:.0%}" for f in best)
        loss = min(best, key=lambda f: f.expected_loss)
        size = (f"{loss.expected_loss * 100:.1f} points of 👍 share" if a.metric == THUMBS_UP
                else f"{loss.expected_loss:,.0f} ms")
        posteriors = ("Beta posteriors of the 👍 share" if a.metric == THUMBS_UP
                      else "normal posteriors of the mean response time")
        lines.append(f"Chance each is best (Bayesian, {posteriors}): {worded}. Choosing {loss.totals.name} now "
                     f"risks losing {size} on average if it is not the best.")
    for f in a.variants:
        for breach in f.breaches:
            lines.append(f"Guardrail: {f.totals.name}'s {breach}.")
    return lines


def _plain(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0%} 👍" if metric == THUMBS_UP else f"{value:,.0f} ms"


def _value(metric: str, value: float | None, interval) -> str:
    if value is None:
        return "–"
    if metric == THUMBS_UP:
        return f"{value:.0%} ({interval.low:.0%}–{interval.high:.0%})" if interval else f"{value:.0%}"
    return f"{number(value)} ({number(interval.low)} to {number(interval.high)})" if interval else number(value)


def _metric_column(metric: str) -> str:
    return "👍 share (95%)" if metric == THUMBS_UP else "Mean ms (95%)"


def _metric_words(metric: str) -> str:
    return "the 👍 share decides" if metric == THUMBS_UP else "the mean response time decides, lower is better"


def _people(e: ExperimentRecord) -> str:
    return ", ".join(f"{v.name} {v.exposures:,}" for v in e.variants)


def _split(e: ExperimentRecord) -> str:
    return "/".join(f"{v.weight:.0%}" for v in e.variants)


def _guardrail_fields(e: ExperimentRecord) -> list[Field]:
    fields = []
    if "p95_ms" in e.guardrails:
        fields.append(Field("Guardrail p95", f"≤ {e.guardrails['p95_ms']:,.0f} ms"))
    if "error_rate" in e.guardrails:
        fields.append(Field("Guardrail errors", f"≤ {e.guardrails['error_rate']:.1%}"))
    if e.alias:
        fields.append(Field("Alias", f"`/chat {e.alias}`"))
    return fields


@command("experiments", "stop", help="End an experiment without a winner.", args=(NAME,), role="admin")
async def stop(ctx: Context, name: str) -> Reply:
    """Stop it; chats already open keep their model but no longer count."""
    e = await ctx.call(ctx.runtime.experiments.stop, name)
    alias = ""
    if e.alias:
        alias = f" `/chat {e.alias}` now opens {await ctx.call(ctx.runtime.experiments.alias_opens, e.alias)}."
    return Reply(text=f"Experiment `{e.name}` stopped without a winner; its figures stay in "
                      f"`/experiments status {e.name}`.{alias}", tone="success")


@command(
    "experiments", "ship",
    help="Ship the winner (or the variant named): the alias opens it from now on, and the experiment ends.",
    args=(NAME, Arg("variant", "Ship this variant even without a clear winner.", max_length=32)),
    role="admin",
)
async def ship(ctx: Context, name: str, variant: str | None) -> Reply:
    """Record the winner and say what changed."""
    shipped = await ctx.call(ctx.runtime.experiments.ship, name, variant)
    e, v = shipped.experiment, shipped.variant
    if e.alias:
        changed = (f"`/chat {e.alias}` now opens {shipped.after} (before: {shipped.before}). `/chat exp:{e.name}` "
                   f"opens {v.describe()}.")
    else:
        changed = f"It has no alias: `/chat exp:{e.name}` now opens {v.describe()}."
    return Reply(title=f"Shipped {v.name} from {e.name}", tone="success",
                 text=f"Experiment `{e.name}` ended with variant {v.name} as the winner. {changed}")


@command("experiments", "list", help="Running experiments, then recent ones.", args=(limit(10, 50, named=True),))
async def list_experiments(ctx: Context, limit: int) -> Reply:
    """One row per experiment."""
    found = await ctx.call(ctx.runtime.experiments.list, limit)
    if not found:
        return Reply(text="No experiments yet. `/experiments start <name> <model> | <model>` starts one.")
    rows = [[e.name, e.status, e.metric, " | ".join(_short(v) for v in e.variants),
             f"{sum(v.exposures for v in e.variants):,}", e.alias or "–", ago(e.created_at)] for e in found]
    return Reply(title="Experiments", table=Table(["Name", "Status", "Metric", "Variants", "People", "Alias",
                                                   "Started"], rows),
                 footer="`/experiments status <name>` for the figures and whether it may stop")


def _short(v: VariantRecord) -> str:
    return f"{v.name}: {v.model_name}" + (" (+options)" if v.params or v.system_prompt else "")
