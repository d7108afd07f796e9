"""/train start, templates, list, status and resume: fine-tuning from chat, on one card edited as the job runs.

`/train start <model> <dataset>` checks the run before any GPU time (`Training.preflight`: each refusal is one
line), queues it on the gpu queue and answers with the live card. Adapters edit that reply in place as the job
reports (`bot/progress.follow`); the card's progress `view` (`step_view`) draws each report's `TrainingDetail`:
step/total, epoch, loss, held-out loss, learning rate, tokens/s, time left, peak memory and a unicode loss
sparkline. When the job ends its progress `finish` replaces the card with `result_card`: held-out loss and
perplexity before and after, the validation prompts answered by the base and the tuned model side by side, the
new model with a "Try it" button, and the loss chart as a PNG attachment (an image on Slack and Discord, a file
whose path the console prints). `/train status <job>` shows the same cards, `/train resume <job>` continues a
canceled or failed run from its last checkpoint, and `/jobs cancel <job>` stops one at its next step with a
checkpoint. Starting and resuming need the trainer role.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from modelbay.bot.commands._args import JOB, MODEL, limit
from modelbay.bot.commands.datasets import DATASET, visible
from modelbay.bot.context import Context
from modelbay.bot.errors import ArgumentInvalid
from modelbay.bot.progress import advance
from modelbay.bot.reply import Attachment, Button, Field, Progress, Reply, Table
from modelbay.bot.spec import COMMANDS, Arg, ArgType, command
from modelbay.engine.errors import NotAllowed, shown
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.records import JobRecord
from modelbay.engine.training.progress import TrainingDetail, sparkline
from modelbay.engine.training.templates import TrainingConfig, flat_overrides, load_templates
from modelbay.engine.training.training import Preflight, StartedTraining, TrainingStatus
from modelbay.engine.units import ago, human_bytes, human_count

__all__ = ["live_card", "result_card", "resume_job", "start_job", "step_view", "training_card"]

SPARK_WIDTH = 40  # bars in a loss sparkline (the live card's last steps; the result card's whole run, resampled)
ANSWERS_SHOWN = 3  # validation prompts in the result card (their three columns fit a chat window's table)
_PHASES = {
    "preparing": "Reading and tokenizing the dataset…",
    "loading": "Loading the base model…",
    "evaluating": "Measuring the base model's held-out loss…",
    "training": "Training…",
    "testing": "Measuring the tuned model and answering the validation prompts…",
    "saving": "Registering the new model…",
}

BASE = replace(MODEL, help="The installed model to fine-tune.")
TEMPLATE = Arg("template", "The settings to start from (see /train templates).", choices=tuple(load_templates()))
START_ARGS = (
    BASE,
    replace(DATASET, help="Your dataset, by id or name (see /datasets list)."),
    TEMPLATE,
    Arg("epochs", "Passes over the training rows.", type=ArgType.NUMBER, min=0.01, max=1000, named=True),
    Arg("lr", "Peak learning rate.", type=ArgType.NUMBER, min=1e-9, max=1.0, named=True),
    Arg("batch", "Rows per step on each process.", type=ArgType.INTEGER, min=1, max=4096, named=True),
    Arg("max_length", "Longest row in tokens (longer rows follow the policy, drop unless set).",
        type=ArgType.INTEGER, min=8, max=1_048_576, named=True),
    Arg("rank", "LoRA rank.", type=ArgType.INTEGER, min=1, max=512, named=True),
    Arg("steps", "Stop after this many optimizer steps instead of whole epochs.", type=ArgType.INTEGER, min=1,
        max=10_000_000, named=True),
    Arg("name", "The new model's name (default: <model>-ft-<six hex digits>).", max_length=96, named=True),
    Arg("merge", "Also save merged weights (a full model) beside the adapter.", type=ArgType.BOOLEAN),
    Arg("settings", "More settings as key=value pairs, comma separated, e.g. alpha=64,evaluation.eval_steps=20.",
        max_length=1000, named=True),
)
_SHORT = ("epochs", "lr", "batch", "max_length", "rank", "steps", "merge")  # the options flat_overrides knows


# -- commands ---------------------------------------------------------------------------------------------------------

@command(
    "train", "start",
    help="Fine-tune an installed model on one of your datasets (LoRA); the card shows the loss as it trains.",
    args=START_ARGS,
    role="trainer",
    slow=True,
)
async def start_training(ctx: Context, model: str, dataset: str, template: str | None, epochs: float | None,
                         lr: float | None, batch: int | None, max_length: int | None, rank: int | None,
                         steps: int | None, name: str | None, merge: bool | None, settings: str | None) -> Reply:
    """Pre-flight, queue the job, and answer with its live card."""
    given = dict(zip(_SHORT, (epochs, lr, batch, max_length, rank, steps, merge), strict=True))
    overrides = flat_overrides({**_pairs(settings), **{k: v for k, v in given.items() if v is not None}})
    started = await start_job(ctx, model, dataset, template=template, overrides=overrides, name=name)
    status = await ctx.call(ctx.runtime.training.status, started.job.id)
    intro = _plan(started.preflight)
    if not started.created:
        intro = f"A run making `{shown(status.name)}` is already queued or running: this is it.\n{intro}"
    return live_card(status, intro=intro, finish=functools.partial(_finish, ctx))


@command(
    "train", "templates",
    help="List the training templates and what each sets.",
)
async def list_templates(ctx: Context) -> Reply:
    """Show each template's purpose and its main settings."""
    templates = await ctx.call(ctx.runtime.training.templates)
    rows = []
    for t in templates:
        p = t.config.parameters
        quantized = f"{p.quantization.bits}-bit {p.quantization.quant_type}" if t.config.quantized else "-"
        rows.append([t.name, f"r{p.lora.r} α{p.lora.alpha}", f"{p.learning_rate:g}", f"{p.epochs:g}",
                     f"{p.max_length:,}", p.loss.replace("_", " "), quantized])
    text = "\n".join(f"• `{t.name}`: {t.description}" for t in templates)
    return Reply(title="Training templates", text=text,
                 table=Table(["Template", "LoRA", "LR", "Epochs", "Max length", "Loss", "Base weights"], rows),
                 footer="`/train start <model> <dataset> <template>`; any setting overrides, e.g. `epochs:2 lr:1e-4 "
                        "rank:8 settings:alpha=16,evaluation.eval_steps=50`.")


@command(
    "train", "list",
    help="List your training jobs (admins: everyone's with all:true).",
    args=(
        Arg("active", "Only running (true) or only ended (false) jobs.", type=ArgType.BOOLEAN),
        Arg("all", "Everyone's training jobs (admins).", type=ArgType.BOOLEAN, default=False),
        limit(10, 50, named=True),
    ),
    role="user",
    aliases=(("train",),),
)
async def list_training(ctx: Context, active: bool | None, all: bool, limit: int) -> Reply:  # noqa: A002
    """Show recent training jobs: the model each makes, where it stands, its losses."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("/train list all:true", ctx.role, "admin")
    jobs = await ctx.call(ctx.runtime.training.list, requester=None if all else ctx.actor.key, active=active,
                          limit=limit)
    if not jobs:
        return Reply(text="No training jobs yet. `/datasets add` a file, then `/train start <model> <dataset>`.")
    rows = [_row(job) for job in jobs]
    buttons = [Button(f"Status {j.id}", f"/train status {j.id}") for j in jobs[:3]]
    return Reply(title="Training jobs", table=Table(["Job", "New model", "Base", "Dataset", "Status", "Step",
                                                     "Held-out loss", "Started"], rows),
                 buttons=buttons, footer="`/train status <job>` shows one; `/train resume <job>` continues a "
                                         "canceled one.")


@command(
    "train", "status",
    help="Show a training job: its live card while it runs, its results once it ended.",
    args=(JOB,),
    role="user",
    slow=True,
)
async def training_status(ctx: Context, job: str) -> Reply:
    """The job's card, followed while it runs."""
    return await training_card(ctx, job)


@command(
    "train", "resume",
    help="Continue a canceled or failed training job from its last checkpoint.",
    args=(JOB,),
    role="trainer",
    slow=True,
)
async def resume_training(ctx: Context, job: str) -> Reply:
    """Queue the run again from its checkpoint; only its requester or an admin may."""
    resumed = await resume_job(ctx, job)
    status = await ctx.call(ctx.runtime.training.status, resumed.id)
    intro = (f"Resuming job `{shown(job)}` from its last checkpoint as job `{resumed.id}`: the step count goes on "
             "where it stopped.")
    return live_card(status, intro=intro, finish=functools.partial(_finish, ctx))


# -- options -----------------------------------------------------------------------------------------------------------

def _pairs(settings: str | None) -> dict[str, str]:
    """`settings:` pairs, `alpha=64,evaluation.eval_steps=20`, as a dict (`key:value` pairs are taken too).

    Raises:
        ArgumentInvalid: a part is not a key=value pair.
    """
    pairs: dict[str, str] = {}
    for part in (settings or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.replace(":", "=", 1).partition("=")
        if not sep or not key.strip() or not value.strip():
            cmd = COMMANDS.get(("train", "start"))
            assert cmd is not None
            raise ArgumentInvalid(cmd, "settings", f"must be key=value pairs separated by commas (got "
                                                   f"'{shown(part.strip())}')")
        pairs[key.strip()] = value.strip()
    return pairs


async def start_job(ctx: Context, model: str, dataset: str, *, template: str | None, overrides: dict[str, Any],
                    name: str | None) -> StartedTraining:
    """Start a run on a dataset this person sees (a validation dataset too), as them; chat and REST call this after
    their role check.

    Raises:
        DatasetNotFound: the dataset (or validation dataset) is not one this person sees.
        Everything `Training.start` raises (pre-flight refusals, one line each).
    """
    record = await visible(ctx, dataset)
    evaluation = overrides.get("evaluation")
    if isinstance(evaluation, dict) and evaluation.get("validation_dataset"):
        checked = await visible(ctx, str(evaluation["validation_dataset"]))
        overrides = {**overrides, "evaluation": {**evaluation, "validation_dataset": str(checked.id)}}
    return await ctx.call(ctx.runtime.training.start, model, record.id, requester=ctx.actor.key, template=template,
                          overrides=overrides, name=name, owner=ctx.actor.key)


async def resume_job(ctx: Context, job_id: str) -> JobRecord:
    """Resume a training job: its requester's, or anyone's for an admin.

    Raises:
        JobNotFound, NotResumable, CheckpointMissing: as `Training.resume`.
        NotAllowed: another person's job, for someone below admin.
    """
    record = await ctx.call(ctx.runtime.jobs.get, job_id)
    if record.requester != ctx.actor.key and not ctx.has_role("admin"):
        raise NotAllowed(f"resuming another person's training job {job_id}", ctx.role, "admin")
    return await ctx.call(ctx.runtime.training.resume, job_id, requester=ctx.actor.key)


# -- the live card -----------------------------------------------------------------------------------------------------

def _plan(preflight: Preflight) -> str:
    """What pre-flight measured: rows, steps, memory and where it trains (and what it could not check)."""
    r = preflight.report
    room = f" of {human_bytes(preflight.room)}" if preflight.room else ""
    where = "GPU" if preflight.where == "gpu" else "CPU"
    lines = [f"{r.train_rows:,} training rows, {r.validation_rows:,} held out; {preflight.total_steps:,} steps; about "
             f"{human_bytes(preflight.estimate.needed)}{room} at {preflight.precision} on the {where}"
             + (f" in {preflight.processes} processes" if preflight.processes > 1 else "") + "."]
    return "\n".join([*lines, *preflight.notices])


def _settings(config: TrainingConfig) -> str:
    p = config.parameters
    length = f"{p.max_steps:,} steps" if p.max_steps else f"{p.epochs:g} epoch{'s' if p.epochs != 1 else ''}"
    quantized = " · 4-bit base" if config.quantized else ""
    return (f"{config.template} · LoRA r{p.lora.r} α{p.lora.alpha} · lr {p.learning_rate:g} · batch {p.batch_size}"
            f" · {length} · rows ≤ {p.max_length:,} tokens{quantized}")


def live_card(status: TrainingStatus, *, intro: str = "", finish: Any = None) -> Reply:
    """The card of a queued or running job, showing its latest report; adapters follow it (`finish` builds the card
    that replaces it when the job ends)."""
    job, name = status.job, status.name
    card = Reply(
        title=f"Fine-tuning {status.base} → {name}", text=intro,
        fields=[Field("Base", f"`{shown(status.base)}`"), Field("Dataset", f"`{shown(status.dataset)}`"),
                Field("New model", f"`{shown(name)}`"), Field("Settings", _settings(status.config), inline=False)],
        progress=Progress(job.id, f"train {name}", job.progress, job.status,
                          done=(Button("Try it", f"/chat {name}", "primary"),), finish=finish),
        buttons=[Button("Cancel", f"/jobs cancel {job.id}", "danger")],
        footer=f"Job `{job.id}` · `/jobs cancel {job.id}` stops it at the next step with a checkpoint.",
    )
    assert card.progress is not None
    card.progress = replace(card.progress, view=functools.partial(step_view, base=card))
    return advance(card, _event(job))


def step_view(reply: Reply, event: ProgressEvent, *, base: Reply | None = None) -> Reply:
    """The live card at one report: what the job is doing, or the step's measurements and a loss sparkline, below
    the text and fields of `base` (the card as it started; the reply itself when not given)."""
    base = base or reply
    if event.terminal:  # `finish` replaces it with the results
        return replace(reply, text=base.text, fields=list(base.fields))
    d = TrainingDetail.of(event.detail)
    if d.step is None or not d.total_steps:
        said = _PHASES.get(d.phase or "", "Waiting for a gpu worker…" if event.status == "queued" else "")
        return replace(reply, text="\n".join(x for x in (base.text, said) if x), fields=list(base.fields))
    lines = [base.text] if base.text else []
    losses = [float(x) for x in d.recent_losses or ()]
    if losses:
        lines.append(f"Loss `{sparkline(losses, SPARK_WIDTH)}` {losses[0]:.3f} → {losses[-1]:.3f} over the last "
                     f"{len(losses[-SPARK_WIDTH:])} steps")
    elif d.phase in _PHASES and d.phase != "training":
        lines.append(_PHASES[d.phase])
    return replace(reply, text="\n".join(lines), fields=[*base.fields, *_step_fields(d)])


def _step_fields(d: TrainingDetail) -> list[Field]:
    fields = [Field("Step", f"{d.step:,}/{d.total_steps:,}" + (f" · epoch {d.epoch:.2f}" if d.epoch is not None
                                                                else ""))]
    if d.loss is not None:
        fields.append(Field("Loss", f"{d.loss:.4f}"))
    if d.eval_loss is not None or d.eval_loss_before is not None:
        before = f"base {d.eval_loss_before:.4f}" if d.eval_loss_before is not None else ""
        now = f"{d.eval_loss:.4f}" if d.eval_loss is not None else ""
        fields.append(Field("Held-out loss", f"{now} ({before})" if now and before else now or before))
    if d.learning_rate is not None:
        fields.append(Field("Learning rate", f"{d.learning_rate:.2e}"))
    if d.tokens_per_s:
        fields.append(Field("Tokens/s", f"{d.tokens_per_s:,.0f}"))
    if d.eta is not None:
        fields.append(Field("Time left", _duration(d.eta)))
    if d.peak_memory_bytes:
        fields.append(Field("Peak memory", human_bytes(d.peak_memory_bytes)))
    return fields


# -- the result card ---------------------------------------------------------------------------------------------------

async def training_card(ctx: Context, job_id: str) -> Reply:
    """A training job's card: live (and followed) while it may still run, its results (with the chart) once ended.

    Raises:
        JobNotFound: no job has that id.
        NotResumable: it is not a training job.
    """
    status = await ctx.call(ctx.runtime.training.status, job_id)
    if status.job.active:
        return live_card(status, finish=functools.partial(_finish, ctx))
    return result_card(status, await ctx.call(_chart, status))


async def _finish(ctx: Context, event: ProgressEvent) -> Reply:
    """The card that replaces a live card once its job ended."""
    return await training_card(ctx, event.job_id)


def _chart(status: TrainingStatus) -> Attachment | None:
    """The run's loss chart, when this host sees the run's folder."""
    return Attachment.png(status.chart, f"train-{status.job.id}-loss.png")


def result_card(status: TrainingStatus, chart: Attachment | None = None) -> Reply:
    """The card of an ended job: results and the side-by-side answers when it finished, where it stopped when it
    was canceled, why when it failed; with the loss chart attached."""
    job, name = status.job, status.name
    progress = Progress(job.id, f"train {name}", job.progress, job.status)
    attachments = [chart] if chart else []
    losses = [float(row["loss"]) for row in status.steps if row.get("loss") is not None]
    spark = f"Loss `{sparkline(_resample(losses, SPARK_WIDTH))}` {losses[0]:.3f} → {losses[-1]:.3f} over " \
            f"{len(losses):,} steps" if losses else ""
    footer = f"Job `{job.id}` · run `{status.run}` · {status.base} on {status.dataset}"
    if job.status != "finished" or not status.result:
        d = TrainingDetail.of(job.progress_detail)
        logged = [int(row["step"]) for row in status.steps if row.get("loss") is not None]
        step = logged[-1] if logged else d.step  # the steps log is exact; the stored report is at most 1 s old
        where = f" at step {step:,}/{d.total_steps:,}" if step and d.total_steps else ""
        resume = [Button("Resume", f"/train resume {job.id}", "primary")]
        if job.status == "canceled":
            text = (f"Stopped{where}; a checkpoint was saved when training had begun. `/train resume {job.id}` goes "
                    "on from it.")
            return Reply(title=f"Fine-tuning {name}: canceled", text="\n".join(x for x in (text, spark) if x),
                         tone="warning", fields=_step_fields(d) if d.step and d.total_steps else [],
                         progress=progress, buttons=resume, attachments=attachments, footer=footer)
        text = f"{job.error or 'The job failed.'}\n`/train resume {job.id}` goes on from its last checkpoint, if any."
        return Reply(title=f"Fine-tuning {name}: failed{where}", text=text, tone="error", progress=progress,
                     buttons=resume, attachments=attachments, footer=footer)
    r = status.result
    before, after = r.get("eval_loss_before"), r.get("eval_loss_after")
    lines = [f"`{shown(name)}` is a new model: `{shown(status.base)}` with a LoRA adapter trained on "
             f"`{shown(status.dataset)}`."]
    if before is not None and after is not None:
        change = f" ({(after - before) / before:+.0%})" if before else ""
        lines.append(f"Held-out loss {before:.4f} → {after:.4f}{change}, perplexity "
                     f"{_number(r.get('perplexity_before'))} → {_number(r.get('perplexity_after'))}.")
    if spark:
        lines.append(spark)
    answers = list(r.get("answers") or [])[:ANSWERS_SHOWN]
    if answers:
        lines.append("**Validation prompts**, answered by the base and the tuned model (greedy):")
    steps = f"{r.get('step') or 0:,}" + (f" (resumed at {r['resumed_from']:,})" if r.get("resumed_from") else "")
    fields = [
        Field("New model", f"`{shown(name)}` (version #{r.get('version_id')})"),
        Field("Held-out loss", f"{_number(before, 4)} → {_number(after, 4)}"),
        Field("Perplexity", f"{_number(r.get('perplexity_before'))} → {_number(r.get('perplexity_after'))}"),
        Field("Steps", steps),
        Field("Rows", f"{r.get('train_rows') or 0:,} trained · {r.get('validation_rows') or 0:,} held out"),
        Field("Tokens", human_count(r.get("tokens"))),
        Field("Time", _duration(r.get("runtime_s"))),
        Field("Peak memory", human_bytes(r.get("peak_memory_bytes"))),
        Field("Ran on", " · ".join(str(x) for x in (r.get("device"), r.get("precision")) if x) +
              (f" · {r['processes']} processes" if (r.get("processes") or 1) > 1 else "")),
    ]
    table = Table(["Prompt", "Base", "Tuned"], [[_cell(a.get("prompt")), _cell(a.get("base")), _cell(a.get("tuned"))]
                                               for a in answers]) if answers else None
    return Reply(title=f"Fine-tuned {name}", text="\n".join(lines), tone="success", fields=fields, table=table,
                 progress=progress, attachments=attachments, footer=footer + f" · ended {ago(job.ended_at)}",
                 buttons=[Button("Try it", f"/chat {name}", "primary"), Button("Model info", f"/models info {name}")])


# -- helpers -----------------------------------------------------------------------------------------------------------

def _event(job: JobRecord) -> ProgressEvent:
    """A job's stored state as the progress event a watcher gets first."""
    return ProgressEvent(job.id, job.status, job.progress, job.error or job.progress_detail.message,
                         job.progress_detail)


def _row(job: JobRecord) -> list[str]:
    d = TrainingDetail.of(job.progress_detail)
    result, params = job.result or {}, job.params
    step = f"{d.step:,}/{d.total_steps:,}" if d.step and d.total_steps else "-"
    if result.get("eval_loss_after") is not None:
        held_out = f"{_number(result.get('eval_loss_before'), 3)} → {_number(result['eval_loss_after'], 3)}"
    else:
        held_out = _number(d.eval_loss, 3)
    return [job.id, str(params.get("name", "?")), str(params.get("base", "?")),
            str(params.get("dataset_name") or params.get("dataset", "?")), job.status, step, held_out,
            ago(job.created_at)]


def _resample(values: list[float], width: int) -> list[float]:
    """At most `width` values: the means of equal runs of consecutive values (all of them when they fit)."""
    if len(values) <= width:
        return values
    size = len(values) / width
    return [sum(chunk) / len(chunk) for i in range(width)
            if (chunk := values[int(i * size):max(int(i * size) + 1, int((i + 1) * size))])]


def _number(value: Any, digits: int = 2) -> str:
    return f"{float(value):,.{digits}f}" if isinstance(value, (int, float)) else "-"


def _cell(text: Any) -> str:
    """An answer in one table cell: one line (the table cuts it to its cell width)."""
    return " ".join(str(text or "").split()) or "(nothing)"


def _duration(seconds: Any) -> str:
    """'45 s', '12 min', '2 h 5 min'; '-' when not known."""
    if not isinstance(seconds, (int, float)):
        return "-"
    s = max(0, round(float(seconds)))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {round(s % 3600 / 60)} min"
