"""/optimize quantize, prune, onnx, recipe, recipes, compare, list and status: smaller, faster variants from chat.

Each start command turns its options into the seed's `OptimizationConfig` (`quantize_config`, `prune_config`,
`onnx_config`, `recipe_config`: the same body REST takes), checks the steps it asks for (`config.steps`: one line
for an impossible combination, before anything is read), and calls `Optimization.start` as the person (trainer
role; admins too). The answer is a live card like a training run's: the adapters follow the job (`bot/progress`)
and `step_view` draws each report's `OptimizationDetail` (the phase; while applying, step i/n, its method and how
far the step is). When the job ends `finish` replaces the card with `result_card`: the report of the variant
against its parent on the same machine and text (size of the served weights, peak memory to load, load time, time
to first token, tokens/s, perplexity ± its standard error, their ratios, KL divergence and top-1 agreement, sparsity:
the variant's, or a pruning step's before a later one changed the format), the verdict against the perplexity
budget (a variant over it is kept as over budget, never offered as a drop-in), "Try it", and the chart as a PNG
attachment. Canceled and failed jobs end with one line. `/optimize compare` lays several variants side by side
(table, chart, its text alternative and notes; a name with no model is a note, a model named twice one row).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import replace
from typing import Any

from modelbay.bot.commands._args import JOB, MODEL, limit
from modelbay.bot.commands.datasets import visible
from modelbay.bot.context import Context
from modelbay.bot.progress import advance
from modelbay.bot.reply import Attachment, Button, Field, Progress, Reply, Table
from modelbay.bot.spec import Arg, ArgType, command
from modelbay.engine.errors import ModelNotFound, NotAllowed, OptimizationConfigInvalid, one_line, shown
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.optimization import charts
from modelbay.engine.optimization.charts import figure_text, kl_text, percent_text, significant
from modelbay.engine.optimization.config import OptimizationConfig, Step, load_recipes, parse_config, steps
from modelbay.engine.optimization.methods import METHODS
from modelbay.engine.optimization.optimization import (
    CompareRow,
    OptimizationPlan,
    OptimizationStatus,
    StartedOptimization,
)
from modelbay.engine.optimization.progress import OptimizationDetail
from modelbay.engine.records import JobRecord
from modelbay.engine.units import ago, human_bytes

__all__ = ["SPEED_NOTE", "budget_of", "key_figures", "live_card", "onnx_config", "optimization_card", "prune_config",
           "quantize_config", "recipe_config", "report_table", "result_card", "start_job", "step_text", "step_view",
           "verdict_reason", "versus"]

_PHASES = {
    "preparing": "Reading the parent and the held-out text…",
    "applying": "Applying the steps…",
    "measuring-parent": "Measuring the parent on this machine…",
    "measuring": "Measuring the variant against the parent…",
    "saving": "Registering the new model…",
}
_OFF = {"off", "none", "false", "no"}
_DEFAULT = {"default", "on", "true", "yes"}
_INT8 = {"true": True, "false": False, "dynamic": "dynamic", "static": "static"}
SPEED_NOTE = "Speed ratios come from alternating rounds in one process; on a busy machine they vary between runs."
SIZE = "Size (served weights)"  # Measurement.size_bytes: an ONNX int8 variant's served graph, not its whole folder

SOURCE = replace(MODEL, help="The installed model to optimize.")
NAME = Arg("name", "The new model's name (default: <model>-<method>, e.g. tiny-chat-int8).", max_length=96,
           named=True)
DATASET = Arg("dataset", "Your dataset (id or name) to measure on and calibrate with (default: the shipped "
                         "held-out text).", max_length=100, named=True)
BUDGET = Arg("budget", "How much perplexity may rise, in percent (e.g. 2); `default` for the kind's, `off` for "
                       "none.", max_length=16, named=True)
TARGET = Arg("target", "Percent of the size on disk to remove; picks the bits (or sparsity) when they are not given.",
             type=ArgType.NUMBER, min=0.01, max=99.99, named=True)
_COMMON = (NAME, DATASET, BUDGET)


# -- the config each command asks for ----------------------------------------------------------------------------------

def budget_of(text: str | None) -> bool | float:
    """`budget:` as the config's preserveAccuracy: a percent (`2`, `2%`, `+2`), True (`default`), False (`off`).

    Raises:
        OptimizationConfigInvalid: anything else, or a negative percent.
    """
    if text is None:
        return True
    word = text.strip().lower().removesuffix("%").strip().removeprefix("+")
    if word in _OFF:
        return False
    if word in _DEFAULT:
        return True
    try:
        value = float(word)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise OptimizationConfigInvalid("budget", f"give the most perplexity may rise in percent (e.g. 2), default "
                                                  f"or off (got '{shown(text, 20)}')")
    return value


def _config(body: dict[str, Any], budget: str | None) -> OptimizationConfig:
    """Validate a body (None values left out) with the budget; every refusal is one line."""
    def kept(value: Any) -> Any:
        return {k: kept(v) for k, v in value.items() if v is not None} if isinstance(value, dict) else value

    return parse_config(kept({**body, "preserveAccuracy": budget_of(budget)}))


def quantize_config(bits: int | str | None, method: str | None = None, data_type: str | None = None,
                    target: float | None = None, budget: str | None = None) -> OptimizationConfig:
    """`/optimize quantize` options as a config (bits None: picked from the target)."""
    quantization = {"method": method, "bits": int(bits) if bits is not None else None, "dataType": data_type}
    return _config({"type": "quantization", "quantization": quantization, "targetReduction": target}, budget)


def prune_config(sparsity: float | None, method: str | None = None, structure: str | None = None,
                 target: float | None = None, budget: str | None = None) -> OptimizationConfig:
    """`/optimize prune` options as a config (sparsity None: from the target; 2:4 fixes it at 0.5)."""
    pruning = {"method": method, "sparsity": sparsity, "structure": structure}
    return _config({"type": "pruning", "pruning": pruning, "targetReduction": target}, budget)


def onnx_config(int8: str | bool | None = None, budget: str | None = None) -> OptimizationConfig:
    """`/optimize onnx` options as a config: fp32, or int8 (`true`/`dynamic`, or `static` with a dataset)."""
    value = _INT8.get(str(int8).lower(), int8) if int8 is not None else False
    return _config({"type": "export", "export": {"format": "onnx", "int8": value}}, budget)


def recipe_config(recipe: str, budget: str | None = None) -> OptimizationConfig:
    """`/optimize recipe` as a config."""
    return _config({"type": "recipe", "recipe": recipe}, budget)


async def start_job(ctx: Context, model: str, config: OptimizationConfig, *, name: str | None,
                    dataset: str | None) -> StartedOptimization:
    """Check the steps, then start the job as this person on a dataset they see; chat and REST call this after
    their role check.

    Raises:
        OptimizationConfigInvalid: an impossible combination (before anything is read).
        DatasetNotFound: the dataset is not one this person sees.
        Everything `Optimization.start` raises (pre-flight refusals, one line each).
    """
    steps(config, calibration=dataset is not None)  # pure and cheap: the parent's precision is checked in pre-flight
    record = await visible(ctx, dataset) if dataset is not None else None
    return await ctx.call(ctx.runtime.optimization.start, model, config, requester=ctx.actor.key, name=name,
                          dataset=record.id if record is not None else None, owner=ctx.actor.key)


async def _started(ctx: Context, model: str, config: OptimizationConfig, name: str | None,
                   dataset: str | None) -> Reply:
    """Start the job and answer with its live card."""
    started = await start_job(ctx, model, config, name=name, dataset=dataset)
    status = await ctx.call(ctx.runtime.optimization.status, started.job.id)
    intro = _plan(started.plan)
    if not started.created:
        intro = f"A job making `{shown(status.name)}` is already queued or running: this is it.\n{intro}"
    return live_card(status, intro=intro, finish=functools.partial(_finish, ctx))


# -- commands ---------------------------------------------------------------------------------------------------------

@command(
    "optimize", "quantize",
    help="Quantize a model (4, 8 or 16 bits), measured against it.",
    args=(
        SOURCE,
        Arg("bits", "Bits per weight (or give target:).", choices=("4", "8", "16")),
        Arg("method", "dynamic (bitsandbytes), bitsandbytes, weight-only, cast, onnx or static (ONNX int8, with "
                      "dataset:).", choices=("dynamic", "bitsandbytes", "weight-only", "cast", "onnx", "static"),
            named=True),
        Arg("type", "The data type: nf4 or fp4 (4-bit bitsandbytes), int4, int8, fp16 or bf16.",
            choices=("nf4", "fp4", "int8", "int4", "fp16", "bf16"), named=True),
        TARGET, *_COMMON,
    ),
    role="trainer",
    slow=True,
)
async def quantize(ctx: Context, model: str, bits: str | None, method: str | None, type: str | None,
                   target: float | None, name: str | None, dataset: str | None, budget: str | None) -> Reply:
    """Quantize and answer with the live card."""
    return await _started(ctx, model, quantize_config(bits, method, type, target, budget), name, dataset)


@command(
    "optimize", "prune",
    help="Prune a model (magnitude or Wanda; 2:4, channels).",
    args=(
        SOURCE,
        Arg("sparsity", "Fraction of weights (or MLP channels) to remove, e.g. 0.5.", type=ArgType.NUMBER, min=0.0,
            max=1.0),
        Arg("method", "How weights are ranked: magnitude, or wanda (|W|·‖X‖, needs calibration text).",
            choices=("magnitude", "wanda"), named=True),
        Arg("structure", "unstructured, 2:4 (two of every four, sparsity 0.5), or channels (smaller and faster).",
            choices=("unstructured", "2:4", "channels"), named=True),
        TARGET, *_COMMON,
    ),
    role="trainer",
    slow=True,
)
async def prune(ctx: Context, model: str, sparsity: float | None, method: str | None, structure: str | None,
                target: float | None, name: str | None, dataset: str | None, budget: str | None) -> Reply:
    """Prune and answer with the live card."""
    return await _started(ctx, model, prune_config(sparsity, method, structure, target, budget), name, dataset)


@command(
    "optimize", "onnx",
    help="Export a model to ONNX (int8 optionally).",
    args=(
        SOURCE,
        Arg("int8", "Int8 weights: true (dynamic), static (with dataset:) or false.",
            choices=("true", "false", "dynamic", "static"), named=True),
        *_COMMON,
    ),
    role="trainer",
    slow=True,
)
async def export_onnx(ctx: Context, model: str, int8: str | None, name: str | None, dataset: str | None,
                      budget: str | None) -> Reply:
    """Export and answer with the live card."""
    return await _started(ctx, model, onnx_config(int8, budget), name, dataset)


@command(
    "optimize", "recipe",
    help="Apply an optimization recipe to a model.",
    args=(SOURCE, Arg("recipe", "The recipe (see /optimize recipes).", required=True, choices=tuple(load_recipes())),
          *_COMMON),
    role="trainer",
    slow=True,
)
async def apply_recipe(ctx: Context, model: str, recipe: str, name: str | None, dataset: str | None,
                       budget: str | None) -> Reply:
    """Apply the recipe's steps and answer with the live card."""
    return await _started(ctx, model, recipe_config(recipe, budget), name, dataset)


@command("optimize", "recipes", help="List the optimization recipes.")
async def list_recipes(ctx: Context) -> Reply:
    """Show each recipe's steps and purpose."""
    recipes = await ctx.call(ctx.runtime.optimization.recipes)
    rows = [[r.name, " → ".join(step_text(s) for s in r.steps), r.description] for r in recipes]
    return Reply(title="Optimization recipes", table=Table(["Recipe", "Steps", "What it gives"], rows),
                 footer="`/optimize recipe <model> <recipe>`; or `/optimize quantize|prune|onnx <model> ...`.")


@command(
    "optimize", "compare",
    help="Compare variants with their parents, with a chart.",
    args=(Arg("models", "Two or more model names (variants, or parents to see their variants).", required=True,
              rest=True, max_length=1000),),
    slow=True,
)
async def compare(ctx: Context, models: str) -> Reply:
    """Lay the variants' reports side by side with the chart; a name with no model is a note, and a model named
    both as a parent and as a variant is one row (its variant row)."""
    names = list(dict.fromkeys(n for n in models.replace(",", " ").split() if n))
    notes = {n: await _missing(ctx, n) for n in names}
    missing, names = [x for x in notes.values() if x], [n for n, x in notes.items() if not x]
    if not names:
        return Reply(title="Optimized variants", text="\n".join(missing), tone="warning")
    found = await ctx.call(ctx.runtime.optimization.compare, names)
    rows, chart, chart_text = await ctx.call(_deduplicated, found)
    text = "\n".join([*missing, *found.notes, *(["**Chart, as text:**", chart_text] if chart_text else [])])
    attachments = [Attachment("optimize-compare.png", chart, "image/png")] if chart else []
    variants = [r.name for r in rows if r.parent is not None and r.verdict != "over budget"]
    return Reply(title="Optimized variants", text=text,
                 table=Table(["Model", "Made by", SIZE, "Load memory", "TTFT", "Tokens/s", "Perplexity",
                              "vs parent", "KL", "Top-1", "Verdict"], [_compare_row(r) for r in rows]),
                 attachments=attachments, buttons=[Button(f"Try {n}", f"/chat {n}") for n in variants[:3]],
                 footer=f"Ratios are variant / parent, measured on the same machine and text. {SPEED_NOTE}")


async def _missing(ctx: Context, name: str) -> str:
    """A note when no model has this name ("" when one has)."""
    try:
        await ctx.call(ctx.runtime.registry.get, name)
    except ModelNotFound as exc:
        close = f" (did you mean {', '.join(exc.suggestions[:3])}?)" if exc.suggestions else ""
        return f"No model named `{shown(name)}`{close}."
    return ""


def _deduplicated(found: Any) -> tuple[tuple[CompareRow, ...], bytes | None, str]:
    """The comparison's rows with a model named both as a parent and as a variant kept once, as its variant row,
    and its chart and text (redrawn only when a row was dropped)."""
    variants = {r.name for r in found.rows if r.parent is not None}
    rows = tuple(r for r in found.rows if r.parent is not None or r.name not in variants)
    if len(rows) == len(found.rows):
        return rows, found.chart, found.text
    drawn = [charts.ChartRow.of(r.name, r.report, parent=r.parent is None, verdict=r.verdict, versus=r.versus)
             for r in rows]
    return rows, charts.variants_png(drawn), charts.variants_text(drawn)


@command(
    "optimize", "list",
    help="List your optimization jobs.",
    args=(
        Arg("active", "Only running (true) or only ended (false) jobs.", type=ArgType.BOOLEAN),
        Arg("all", "Everyone's optimization jobs (admins).", type=ArgType.BOOLEAN, default=False),
        limit(10, 50, named=True),
    ),
    role="user",
    aliases=(("optimize",),),
)
async def list_jobs(ctx: Context, active: bool | None, all: bool, limit: int) -> Reply:
    """Show recent optimization jobs: what each makes, where it stands, its verdict."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("/optimize list all:true", ctx.role, "admin")
    jobs = await ctx.call(ctx.runtime.optimization.list, requester=None if all else ctx.actor.key, active=active,
                          limit=limit)
    if not jobs:
        return Reply(text="No optimization jobs yet. `/optimize quantize <model> bits:8` makes an 8-bit variant; "
                          "`/optimize recipes` lists more.")
    return Reply(title="Optimization jobs",
                 table=Table(["Job", "New model", "Parent", "Steps", "Status", "Verdict", "Started"],
                             [_row(j) for j in jobs]),
                 buttons=[Button(f"Status {j.id}", f"/optimize status {j.id}") for j in jobs[:3]],
                 footer="`/optimize status <job>` shows one; `/optimize compare <model> <model>` lays them side by "
                        "side.")


@command(
    "optimize", "status",
    help="Show an optimization job and its report.",
    args=(JOB,),
    role="user",
    slow=True,
)
async def optimization_status(ctx: Context, job: str) -> Reply:
    """The job's card, followed while it runs."""
    return await optimization_card(ctx, job)


# -- the live card -----------------------------------------------------------------------------------------------------

def _budget_text(budget: Any, kind: str | None) -> str:
    if budget is False:
        return "none (figures only)"
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        return f"perplexity at most +{budget:g}%"
    return f"the default for {kind}" if kind else "the default"


def _plan(plan: OptimizationPlan) -> str:
    """What pre-flight decided: the steps, where it runs, the text it measures on, the budget."""
    text = f"dataset `{shown(plan.dataset.name)}`" if plan.dataset is not None else "the shipped held-out text"
    line = (f"{' → '.join(plan.labels)} of `{shown(plan.model.name)}` (version #{plan.parent.id}) on a "
            f"{plan.queue} worker, measured against it on {text}; budget: "
            f"{_budget_text(plan.budget, plan.budget_kind)}.")
    return "\n".join([line, *plan.notices])


def live_card(status: OptimizationStatus, *, intro: str = "", finish: Any = None) -> Reply:
    """The card of a queued or running job at its latest report; adapters follow it (`finish` builds the card that
    replaces it when the job ends)."""
    job, name = status.job, status.name
    card = Reply(
        title=f"Optimizing {status.parent} → {name}", text=intro,
        fields=[Field("Parent", f"`{shown(status.parent)}`"), Field("New model", f"`{shown(name)}`"),
                Field("Steps", " → ".join(status.labels) or "-", inline=False)],
        progress=Progress(job.id, f"optimize {name}", job.progress, job.status,
                          done=(Button("Try it", f"/chat {name}", "primary"),), finish=finish),
        buttons=[Button("Cancel", f"/jobs cancel {job.id}", "danger")],
        footer=f"Job `{job.id}` · `/jobs cancel {job.id}` stops it; nothing partial is kept.",
    )
    assert card.progress is not None
    card.progress = replace(card.progress, view=functools.partial(step_view, base=card, queue=job.queue))
    return advance(card, _event(job))


def step_view(reply: Reply, event: ProgressEvent, *, base: Reply | None = None, queue: str | None = None) -> Reply:
    """The live card at one report: the phase and, while applying, step i/n with its method and how far the step
    is, below the text and fields of `base` (the card as it started; the reply itself when not given)."""
    base = base or reply
    if event.terminal:  # `finish` replaces it with the report
        return replace(reply, text=base.text, fields=list(base.fields))
    d = OptimizationDetail.of(event.detail)
    waiting = f"Waiting for a {queue} worker…" if queue else "Waiting for a worker…"
    said = _PHASES.get(d.phase or "", waiting if event.status == "queued" else "")
    fields = list(base.fields)
    if d.phase == "applying" and d.step and d.steps:
        fields.append(Field("Step", f"{d.step}/{d.steps} · {d.method or '?'}"))
        if d.step_fraction is not None:
            fields.append(Field("This step", f"{d.step_fraction:.0%}"))
    return replace(reply, text="\n".join(x for x in (base.text, said) if x), fields=fields)


# -- the result card ---------------------------------------------------------------------------------------------------

async def optimization_card(ctx: Context, job_id: str) -> Reply:
    """An optimization job's card: live (and followed) while it may still run, its report (with the chart) once
    ended.

    Raises:
        JobNotFound: no job has that id.
        NotAnOptimizationJob: it is not an optimization job.
    """
    status = await ctx.call(ctx.runtime.optimization.status, job_id)
    if status.job.active:
        return live_card(status, finish=functools.partial(_finish, ctx))
    return result_card(status, await ctx.call(_chart, status))


async def _finish(ctx: Context, event: ProgressEvent) -> Reply:
    """The card that replaces a live card once its job ended."""
    return await optimization_card(ctx, event.job_id)


def _chart(status: OptimizationStatus) -> Attachment | None:
    """The report's chart, when this host sees the variant's folder."""
    return Attachment.png(status.chart, f"optimize-{status.job.id}.png")


def _verdict_line(verdict: str | None, reason: str | None) -> str:
    why = f": {reason}" if reason else ""
    if verdict == "over budget":
        return f"**Over budget**{why}. Kept as over budget, not a drop-in: use it knowing the figures, or try a " \
               "gentler setting."
    if verdict == "within budget":
        return f"**Within budget**{why}."
    return f"**No budget**{why}." if verdict else "No verdict was recorded."


def result_card(status: OptimizationStatus, chart: Attachment | None = None) -> Reply:
    """The card of an ended job: the report against the parent with its verdict and chart when it finished; one
    line when it was canceled or failed."""
    job, name, parent = status.job, status.name, status.parent
    progress = Progress(job.id, f"optimize {name}", job.progress, job.status)
    footer = f"Job `{job.id}` · {' → '.join(status.labels) or 'optimization'} of {parent}"
    if job.status != "finished" or not status.result:
        if job.status == "canceled":
            return Reply(title=f"Optimizing {name}: canceled", text="Canceled; nothing partial was kept.",
                         tone="warning", progress=progress, footer=footer)
        return Reply(title=f"Optimizing {name}: failed", text=one_line(job.error or "The job failed.", 400),
                     tone="error", progress=progress, footer=footer)
    r = status.result
    report = r.get("report") or {}
    verdict = r.get("verdict") or report.get("verdict")
    reason = verdict_reason(r.get("reason") or report.get("reason"), report)
    held = report.get("heldout") or {}
    variant = report.get("variant") or {}
    measured = " · ".join(x for x in (
        f"on {held['source']}" if held.get("source") else "",
        f"{held['tokens']:,} tokens" if isinstance(held.get("tokens"), int) else "",
        f"on {variant['device']}" if variant.get("device") else "") if x)
    labels = " → ".join(report.get("labels") or status.labels) or "optimized"
    lines = [f"`{shown(name)}` is a new model: {labels} of `{shown(parent)}`, measured against it"
             + (f" ({measured})." if measured else "."), _verdict_line(verdict, reason)]
    over = verdict == "over budget"
    return Reply(title=f"Optimized {name}" + (" (over budget)" if over else ""), text="\n".join(lines),
                 tone="warning" if over else "success", table=report_table(report, parent, name),
                 progress=progress, attachments=[chart] if chart else [],
                 footer=f"{SPEED_NOTE}\n{footer} · version #{r.get('version_id', '?')} · ended {ago(job.ended_at)}",
                 buttons=[Button("Try it", f"/chat {name}", "primary"), Button("Model info", f"/models info {name}"),
                          Button("Compare", f"/optimize compare {name}")])


def versus(report_versus: Any) -> dict[str, Any]:
    """A report's `versus` (compare.Comparison.to_dict: `ratios` and `kl` nested; or flat `size_ratio`, `kl_mean`)
    as one flat dict: size, perplexity, speed, ttft, load, memory (variant / parent), kl_mean, kl_se,
    top1_agreement; a missing figure is absent."""
    vs = report_versus if isinstance(report_versus, dict) else {}
    ratios = vs.get("ratios") if isinstance(vs.get("ratios"), dict) else {}
    kl = vs.get("kl") if isinstance(vs.get("kl"), dict) else {}
    flat: dict[str, Any] = {}
    for name in ("size", "perplexity", "speed", "ttft", "load", "memory"):
        flat[name] = ratios.get(name, vs.get(f"{'ppl' if name == 'perplexity' else name}_ratio"))
    for name in ("kl_mean", "kl_se", "top1_agreement"):
        flat[name] = kl.get(name, vs.get(name))
    return {k: v for k, v in flat.items() if _is_number(v)}


def report_table(report: dict[str, Any], parent: str = "Parent", variant: str = "Variant") -> Table:
    """The report as a table: each measure for the parent and the variant, and variant / parent (missing: -)."""
    p, v, vs = report.get("parent") or {}, report.get("variant") or {}, versus(report.get("versus"))

    def both(key: str, show: Any) -> list[str]:
        return [show(p.get(key)), show(v.get(key))]

    rows = [
        [SIZE, *both("size_bytes", _bytes), _ratio(vs.get("size", _divide(v, p, "size_bytes")))],
        ["Peak memory to load", *both("peak_load_bytes", _bytes),
         _ratio(vs.get("memory", _divide(v, p, "peak_load_bytes")))],
        ["Load time", *both("load_s", lambda x: _number(x, 2, " s")), _timing(vs.get("load", _divide(v, p, "load_s")))],
        ["Time to first token", *both("ttft_ms", lambda x: _number(x, 0, " ms")),
         _timing(vs.get("ttft", _divide(v, p, "ttft_ms")))],
        ["Tokens/s", *both("tokens_per_s", lambda x: _number(x, 1)),
         _timing(vs.get("speed", _divide(v, p, "tokens_per_s")))],
        ["Perplexity", _perplexity(p), _perplexity(v), _ppl_ratio(vs.get("perplexity", _divide(v, p, "perplexity")))],
        ["KL divergence (mean)", "-", _kl(vs), ""],
        ["Top-1 agreement", "-", _percent(vs.get("top1_agreement"), 1), ""],
    ]
    pruned = _pruned(report) if not _is_number(v.get("sparsity")) else None
    if p.get("sparsity") is not None or v.get("sparsity") is not None or pruned:
        rows.append(["Sparsity", _percent(p.get("sparsity"), 1), pruned or _percent(v.get("sparsity"), 1), ""])
    return Table(["Measure", parent, variant, "Variant / parent"], rows)


def _pruned(report: dict[str, Any]) -> str | None:
    """The sparsity an earlier step of the recipe measured ("50.0% (before quantizing)"), when a later step
    changed the weights' format so the variant's own zeros cannot be counted; None when no step pruned."""
    facts = [f for f in report.get("facts") or [] if isinstance(f, dict)]
    at = next((i for i in reversed(range(len(facts))) if _is_number(facts[i].get("sparsity"))), None)
    if at is None:
        return None
    later = facts[at + 1] if at + 1 < len(facts) else {}
    before = "before the ONNX export" if later.get("method") == "onnx" else "before quantizing" if later else \
        "as pruned"
    return f"{_percent(facts[at]['sparsity'], 1)} ({before})"


def key_figures(report: dict[str, Any]) -> str:
    """A report's key figures against the parent in one line: served weights, perplexity, tokens/s (ratios), KL,
    top-1, sparsity."""
    vs = versus(report.get("versus"))
    variant = report.get("variant") if isinstance(report.get("variant"), dict) else {}
    shown_as = {"size": _ratio, "perplexity": _ppl_ratio, "speed": _timing}
    parts = [f"{label} {shown_as[key](vs[key])}"
             for label, key in (("weights", "size"), ("perplexity", "perplexity"), ("tokens/s", "speed")) if key in vs]
    if "kl_mean" in vs:
        parts.append(f"KL {kl_text(vs['kl_mean'])}")
    if "top1_agreement" in vs:
        parts.append(f"top-1 {vs['top1_agreement']:.1%}")
    if _is_number(variant.get("sparsity")) and variant["sparsity"]:
        parts.append(f"sparsity {variant['sparsity']:.1%}")
    return " · ".join(parts)


def _compare_row(row: Any) -> list[str]:
    m, vs = row.report or {}, versus(row.versus)
    against = "parent" if row.parent is None else " · ".join(
        f"{label} {show(vs.get(key))}" for label, key, show in (("weights", "size", _ratio),
                                                               ("ppl", "perplexity", _ppl_ratio),
                                                               ("speed", "speed", _timing)))
    return [row.name, row.steps or ("parent" if row.parent is None else "-"), _bytes(m.get("size_bytes")),
            _bytes(m.get("peak_load_bytes")), _number(m.get("ttft_ms"), 0, " ms"), _number(m.get("tokens_per_s"), 1),
            _perplexity(m), against, _kl(vs) if row.parent is not None else "-",
            _percent(vs.get("top1_agreement"), 1) if row.parent is not None else "-", row.verdict or "-"]


# -- helpers -----------------------------------------------------------------------------------------------------------

def _event(job: JobRecord) -> ProgressEvent:
    """A job's stored state as the progress event a watcher gets first."""
    return ProgressEvent(job.id, job.status, job.progress, job.error or job.progress_detail.message,
                         job.progress_detail)


def _row(job: JobRecord) -> list[str]:
    params, result = job.params, job.result or {}
    status = job.status
    if job.active:
        d = OptimizationDetail.of(job.progress_detail)
        status += f" {job.progress:.0%}" + (f" ({d.phase})" if d.phase else "")
    return [job.id, str(params.get("name", "?")), str(params.get("parent", "?")),
            " → ".join(params.get("labels") or ()) or "-", status, str(result.get("verdict") or "-"),
            ago(job.created_at)]


def step_text(step: Step) -> str:
    """A step as its method describes it ("ONNX export (int8 dynamic, opset 18)"); its raw params when the method
    is not registered here or refuses them."""
    try:
        method = METHODS[step.method]()
        return method.describe(method.check(dict(step.params)))
    except Exception:  # noqa: BLE001 - a listing shows what it can
        params = ", ".join(f"{k} {v}" for k, v in step.params.items())
        return f"{step.method} ({params})" if params else step.method


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, digits: int, unit: str = "") -> str:
    return f"{float(value):,.{digits}f}{unit}" if _is_number(value) else "-"


def _bytes(value: Any) -> str:
    return human_bytes(value) if _is_number(value) else "-"


def _percent(value: Any, digits: int = 0) -> str:
    return f"{float(value):.{digits}%}" if _is_number(value) else "-"


def _ratio(value: Any) -> str:
    """A size or memory ratio: 3 significant figures, at least 2 decimals (`0.30×`, `0.0032×`, never `0.00×`)."""
    return f"{significant(value, 3, 2)}×" if _is_number(value) else "-"


def _ppl_ratio(value: Any) -> str:
    """A perplexity ratio: 4 significant figures, at least 3 decimals (`1.010×`)."""
    return f"{significant(value, 4, 3)}×" if _is_number(value) else "-"


def _timing(value: Any) -> str:
    """A speed ratio (load, time to first token, tokens/s): 2 significant figures (`0.80×`, `1.5×`), as noisy as
    they are (SPEED_NOTE)."""
    return f"{significant(value, 2, strip=False)}×" if _is_number(value) else "-"


def _divide(top: dict[str, Any], bottom: dict[str, Any], key: str) -> float | None:
    a, b = top.get(key), bottom.get(key)
    return a / b if _is_number(a) and _is_number(b) and b else None


def _perplexity(m: dict[str, Any]) -> str:
    ppl, se = m.get("perplexity"), m.get("perplexity_se")
    if not _is_number(ppl):
        return "-"
    return f"{figure_text(ppl)} ± {figure_text(se, 2)}" if _is_number(se) else figure_text(ppl)


def _kl(vs: dict[str, Any]) -> str:
    kl, se = vs.get("kl_mean"), vs.get("kl_se")
    if not _is_number(kl):
        return "-"
    return kl_text(kl, se if _is_number(se) else None)


_MEASURED = re.compile(r"perplexity (?P<parent>[0-9][0-9.,e+-]*) → (?P<variant>[0-9][0-9.,e+-]*)")
_PERCENT = re.compile(r"(?P<sign>[+-]?)(?P<number>\d[\d.]*(?:e[+-]?\d+)?)%(?! budget)")


def verdict_reason(reason: Any, report: dict[str, Any] | None = None) -> str | None:
    """A stored verdict's reason (compare.verdict: "perplexity 1.201e+04 → 1.2e+04 (+0% ± 3e-06%), at most +0%:
    within the +2% budget for 8-bit"; notes after "; ") in the cards' formats: the perplexities as the table shows
    them (the report's own figures when it has them: `12,010 → 12,000`) and its percents with 2 decimals
    (`+0.00% ± <0.01%`); a budget's percent and the notes are kept as written."""
    if not isinstance(reason, str) or not reason:
        return None
    report = report if isinstance(report, dict) else {}
    head, sep, notes = reason.partition("; ")

    def figure(which: str, written: str) -> str:
        m = report.get(which)
        value = m.get("perplexity") if isinstance(m, dict) else None
        if not _is_number(value):
            try:
                value = float(written.replace(",", ""))
            except ValueError:
                return written
        return figure_text(value)

    def percent(match: re.Match[str]) -> str:
        try:
            value = float(match["number"]) / 100
        except ValueError:
            return match[0]
        return percent_text(-value if match["sign"] == "-" else value, signed=bool(match["sign"]))

    head = _PERCENT.sub(percent, head)
    head = _MEASURED.sub(lambda m: f"perplexity {figure('parent', m['parent'])} → {figure('variant', m['variant'])}",
                         head, count=1)
    return head + sep + notes
