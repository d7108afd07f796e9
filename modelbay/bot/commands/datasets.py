"""/datasets add, list, info, preview and delete: files for fine-tuning, checked row by row, shown as a card.

The card (`card`) shows what training would get: rows read and valid, kinds, the problems by reason with their
lines, duplicates, a length histogram (unicode bars, and a PNG attached), the split, the over-length policy and
what it does, one row rendered with its trained and masked parts, and a "Train on this" button. With `model:` the
rows are measured with that model's tokenizer and chat template, as training measures them.

A file comes from a console path (`/datasets add ./pairs.jsonl`), a Slack direct message or the Home tab's
upload form, a Discord attachment (`/datasets add` takes one there) or a REST upload. The console's path and a
Discord attachment go through `add_file` (store, then the card); Slack stores each file it is sent and runs
`/datasets info <id>` for its card; REST answers with the report itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from modelbay.bot.context import Context
from modelbay.bot.errors import ArgumentInvalid
from modelbay.bot.reply import Ask, Attachment, Button, Field, Reply, Table, form
from modelbay.bot.spec import COMMANDS, Arg, ArgType, command
from modelbay.engine.datasets.charts import bars, png
from modelbay.engine.datasets.formats import FORMATS, parse_columns
from modelbay.engine.datasets.records import DatasetRecord, DatasetReport
from modelbay.engine.datasets.tokens import POLICIES, load_tokenizer
from modelbay.engine.errors import (
    ConsoleOnly,
    DatasetInUse,
    DatasetNotFound,
    ModelUnloadable,
    NotAllowed,
    UploadRefused,
    shown,
)
from modelbay.engine.inference.serving import installed_version
from modelbay.engine.units import ago, human_bytes

__all__ = [
    "COLUMNS", "DATASET", "FORMAT", "MAX_LENGTH", "POLICY", "REPORT_ARGS", "SEED", "VALIDATION", "VALIDATION_DATA",
    "add_file", "card", "how_to_add", "render", "report_args", "report_of", "visible",
]

DATASET = Arg("dataset", "Dataset id or name (see /datasets list).", required=True, max_length=100)
FORMAT = Arg("format", "The rows' format (detected from their fields when not given).", choices=FORMATS,
             named=True)
COLUMNS = Arg("columns", "Field=column pairs for other column names, e.g. prompt=question,completion=answer.",
              max_length=400, named=True)
NAME = Arg("name", "A name to use instead of the file's.", max_length=100, named=True)
BASE = Arg("model", "Base model whose tokenizer and chat template measure the rows (installed).",
           autocomplete="model", named=True)
POLICY = Arg("policy", "What happens to rows longer than max_length: drop, truncate or fail.", choices=POLICIES,
             default="drop", named=True)
MAX_LENGTH = Arg("max_length", "Most tokens in a row.", type=ArgType.INTEGER, default=2048, min=8, max=1_048_576,
                 named=True)
VALIDATION = Arg("validation", "Share of rows held out for validation (0 to 0.5).", type=ArgType.NUMBER,
                 default=0.1, min=0.0, max=0.5, named=True)
VALIDATION_DATA = Arg("validation_data", "A dataset (id or name) to validate on instead of held-out rows.",
                      max_length=100, named=True)
SEED = Arg("seed", "Seed of the train/validation split.", type=ArgType.INTEGER, default=0, min=0, max=2**31 - 1,
           named=True)
REPORT_ARGS = (BASE, POLICY, MAX_LENGTH, VALIDATION, VALIDATION_DATA, SEED)
EXAMPLE_CHARS = 1200  # characters of the rendered example shown
PROBLEM_LINES = 3  # problems quoted per reason (the card lists the lines of a few more)
_HOW = {
    "slack": "Send the file to ModelBay in a direct message, or use Upload a dataset on its Home tab.",
    "discord": "Use `/datasets add` with the file as its attachment.",
    "api": "POST it to /api/training/datasets as multipart form data.",
}


def how_to_add(platform: str) -> str:
    """How a person on this platform adds a dataset file."""
    return _HOW.get(platform, "Give the file's path: `/datasets add ./pairs.jsonl`.")


def report_args(model: str | None, policy: str, max_length: int, validation: float, validation_data: str | None,
                seed: int) -> dict[str, Any]:
    """The report options as `/datasets info` takes them, for adapters that show a card after adding."""
    return {"model": model, "policy": policy, "max_length": max_length, "validation": validation,
            "validation_data": validation_data, "seed": seed}


def _columns(columns: str | None) -> dict[str, str] | None:
    if not columns:
        return None
    try:
        return parse_columns(columns)
    except ValueError as exc:
        add = COMMANDS.get(("datasets", "add"))
        assert add is not None
        raise ArgumentInvalid(add, "columns", str(exc)) from None


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            yield block


async def add_file(ctx: Context, filename: str, chunks: Iterable[bytes], *, source: str,
                   format: str | None = None, columns: str | None = None,  # noqa: A002 - the option's name
                   name: str | None = None, model: str | None = None, policy: str = "drop", max_length: int = 2048,
                   validation: float = 0.1, validation_data: str | None = None, seed: int = 0) -> Reply:
    """Store a file a person sent (a platform attachment) as their dataset and return its card.

    The options are `/datasets add`'s, converted (adapters prepare the command to convert them).

    Raises:
        NotAllowed: the person's role is below user.
        UploadRefused, DatasetUnreadable, DatasetNameTaken: as `Datasets.add`.
        ArgumentInvalid: a column map that is not field=column pairs.
    """
    if not ctx.has_role("user"):
        raise NotAllowed("adding datasets", ctx.role, "user")
    mapped = _columns(columns)
    if validation_data is not None:
        validation_data = (await visible(ctx, validation_data)).ref
    record = await ctx.call(ctx.runtime.datasets.add, ctx.actor.key, filename, chunks, source=source,
                            format=format, columns=mapped, name=name)
    return await card(ctx, record, **report_args(model, policy, max_length, validation, validation_data, seed))


@command(
    "datasets", "add",
    help="Add a dataset file (console: its path) and show its report card.",
    args=(Arg("path", "The file's path (console only; elsewhere send the file).", max_length=1000),
          FORMAT, COLUMNS, NAME, *REPORT_ARGS),
    role="user",
    slow=True,
)
async def add_dataset(ctx: Context, path: str | None, format: str | None, columns: str | None,  # noqa: A002
                      name: str | None, model: str | None, policy: str, max_length: int, validation: float,
                      validation_data: str | None, seed: int) -> Reply:
    """Read a file from a path on this machine (the console's), store it and show its card."""
    if ctx.actor.platform != "console":
        if path:
            raise ConsoleOnly("Adding a dataset from a path", how_to_add(ctx.actor.platform))
        return Reply(text=how_to_add(ctx.actor.platform), ephemeral=True)
    if not path:
        return Reply(text=how_to_add("console"), ephemeral=True)
    file = Path(path).expanduser()
    if not file.is_file():
        raise UploadRefused(path, "there is no such file here." if not file.exists() else "it is not a file.")
    return await add_file(ctx, file.name, _chunks(file), source="console", format=format, columns=columns,
                          name=name, **report_args(model, policy, max_length, validation, validation_data, seed))


@command(
    "datasets", "list",
    help="List your datasets (admins: everyone's with all:true).",
    args=(Arg("all", "Everyone's datasets (admins).", type=ArgType.BOOLEAN, default=False),),
    role="user",
    aliases=(("datasets",), ("uploads",), ("uploads", "list")),
)
async def list_datasets(ctx: Context, all: bool) -> Reply:  # noqa: A002 - the option's name
    """Show datasets newest first, with their rows and problems."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("/datasets all:true", ctx.role, "admin")
    records = await ctx.call(ctx.runtime.datasets.list, None if all else ctx.actor.key)
    if not records:
        return Reply(text=f"You have no datasets yet. {how_to_add(ctx.actor.platform)}", ephemeral=True)
    rows = [[str(r.id), r.name, r.format, f"{r.valid_rows:,}/{r.rows:,}", _problem_count(r), human_bytes(r.size_bytes),
             ago(r.created_at), *([r.owner] if all else [])] for r in records]
    columns = ["ID", "Name", "Format", "Valid rows", "Problems", "Size", "Added", *(["Owner"] if all else [])]
    return Reply(title="Datasets", table=Table(columns, rows), ephemeral=True,
                 footer="`/datasets info <id>` shows the report; `/datasets info <id> model:<base>` counts tokens.")


def _problem_count(record: DatasetRecord) -> str:
    total = sum(record.problems.values())
    return f"{total:,}" if total else "-"


async def visible(ctx: Context, ref: str) -> DatasetRecord:
    """A dataset this person may see: their own, or anyone's for an admin (others' are not found).

    Raises:
        DatasetNotFound: no such dataset, or another person's for someone below admin.
    """
    record = await ctx.call(ctx.runtime.datasets.get, ref, owner=ctx.actor.key)
    if record.owner != ctx.actor.key and not ctx.has_role("admin"):
        raise DatasetNotFound(ref)
    return record


@command(
    "datasets", "info",
    help="Show a dataset's report card: rows, problems, token lengths, split, policy and an example.",
    args=(DATASET, *REPORT_ARGS),
    role="user",
    slow=True,
)
async def dataset_info(ctx: Context, dataset: str, model: str | None, policy: str, max_length: int,
                       validation: float, validation_data: str | None, seed: int) -> Reply:
    """Build the dataset's report and show it as its card."""
    record = await visible(ctx, dataset)
    if validation_data is not None:
        validation_data = (await visible(ctx, validation_data)).ref
    return await card(ctx, record, **report_args(model, policy, max_length, validation, validation_data, seed))


@command(
    "datasets", "preview",
    help="Show a dataset's first valid rows as training reads them.",
    args=(DATASET, Arg("rows", "How many rows.", type=ArgType.INTEGER, default=5, min=1, max=20),
          Arg("start", "The first line to show.", type=ArgType.INTEGER, default=1, min=1, max=2**31 - 1,
              named=True)),
    role="user",
    slow=True,
)
async def preview_dataset(ctx: Context, dataset: str, rows: int, start: int) -> Reply:
    """Show rows from a line on, each as its normalised turns."""
    record = await visible(ctx, dataset)
    examples = [e for e in await ctx.call(ctx.runtime.datasets.examples, record.id) if e.line >= start][:rows]
    if not examples:
        return Reply(text=f"Dataset #{record.id} has no valid row from line {start:,} on.", ephemeral=True)
    blocks = []
    for example in examples:
        if example.kind == "chat":
            body = "\n".join(f"{m.role}: {m.content}" for m in example.messages)
        elif example.kind == "completion":
            body = f"prompt: {example.prompt}\ncompletion: {example.completion}"
        else:
            body = example.text or ""
        blocks.append(f"line {example.line:,} ({example.kind})\n```\n{_fence_safe(_cut(body, 600))}\n```")
    more = f" `/datasets preview {record.id} start:{examples[-1].line + 1}` shows the next rows."
    return Reply(title=f"Dataset #{record.id} · {record.name}", text="\n".join(blocks),
                 footer=f"{record.valid_rows:,} valid rows of {record.rows:,}.{more}")


@command(
    "datasets", "delete",
    help="Delete one of your datasets.",
    args=(DATASET,),
    role="user",
)
async def delete_dataset(ctx: Context, dataset: str) -> Reply:
    """Remove the dataset (its file goes when nobody else added the same bytes), unless a queued or running training
    job will read it (DatasetInUse)."""
    record = await visible(ctx, dataset)
    if jobs := await ctx.call(ctx.runtime.training.using, record.id):
        raise DatasetInUse(record.name, [job.id for job in jobs])
    await ctx.call(ctx.runtime.datasets.delete, record.id)
    return Reply(text=f"Deleted dataset #{record.id} (`{shown(record.name)}`).", tone="success", ephemeral=True)


# -- the card -----------------------------------------------------------------------------------------------------

async def _tokenizer(ctx: Context, model: str) -> tuple[Any, str]:
    """The tokenizer of an installed model's newest version, and the model's name."""
    record = await ctx.call(ctx.runtime.registry.get, model)
    version = installed_version(record, "measure a dataset with")
    try:
        return await ctx.call(load_tokenizer, version.local_path), record.name
    except ImportError:
        raise ModelUnloadable(record.name, "counting tokens needs transformers: pip install 'modelbay[ml]'") from None
    except (OSError, ValueError) as exc:
        raise ModelUnloadable(record.name, f"its tokenizer did not load: {exc}") from None


async def report_of(ctx: Context, record: DatasetRecord, *, model: str | None, policy: str, max_length: int,
                    validation: float, validation_data: str | None, seed: int) -> DatasetReport:
    """The dataset's report, measured with `model`'s tokenizer and chat template when one is named.

    Raises:
        ModelNotFound, NeedsInstall: the model named is unknown or not installed.
        ModelUnloadable: its tokenizer does not load (or transformers is missing).
        DatasetNotFound, DatasetUnreadable: as `Datasets.report`.
    """
    tokenizer, label = await _tokenizer(ctx, model) if model else (None, None)
    return await ctx.call(ctx.runtime.datasets.report, record.id, tokenizer=tokenizer, model=label,
                          max_length=max_length, policy=policy, validation=validation, seed=seed,
                          validation_ref=validation_data)


async def card(ctx: Context, record: DatasetRecord, *, model: str | None, policy: str, max_length: int,
               validation: float, validation_data: str | None, seed: int) -> Reply:
    """The dataset's report (`report_of`) as a card, with its length chart attached."""
    report = await report_of(ctx, record, model=model, policy=policy, max_length=max_length, validation=validation,
                             validation_data=validation_data, seed=seed)
    return render(report, chart=await ctx.call(_chart, report))


def _chart(report: DatasetReport) -> Attachment | None:
    if report.histogram is None:
        return None
    try:
        data = png(report.histogram, f"Dataset #{report.dataset.id} · {report.dataset.name}: "
                                     f"{report.histogram.unit} per row")
    except ImportError:  # matplotlib comes with the ml extra; the text bars say the same
        return None
    return Attachment(f"dataset-{report.dataset.id}-lengths.png", data, "image/png")


def render(report: DatasetReport, chart: Attachment | None = None) -> Reply:
    """The card of a report: summary, fields, problems, histogram, example, the train button and the chart."""
    d = report.dataset
    left = report.rows - report.valid
    summary = (f"{report.rows:,} rows read from `{shown(d.filename)}` ({human_bytes(d.size_bytes)}): "
               f"{report.valid:,} valid, {left:,} with problems")
    if report.model:
        summary += f", {report.dropped:,} more left out by the {report.policy} policy"
    summary += f". Train on {report.train_rows:,}, validate on {report.validation_rows:,}."
    parts = [summary]
    if report.fatal is not None:
        parts.append(f"⛔ Training would stop: line {report.fatal.line:,}: {report.fatal.message}.")
    if report.problems:
        parts.append(_problems(report))
    if report.histogram is not None:
        how = (f"tokens, with {report.model}'s tokenizer and chat template" if report.model
               else "characters; add `model:<base>` to count tokens")
        parts.append(f"**Lengths** ({how})\n```\n{bars(report.histogram)}\n```")
    if report.example:
        text = "".join(f"«{s.text}»" if s.trained else s.text for s in report.example)
        parts.append(f"**Example** (line {report.example_line:,}): «…» is trained on, the rest is masked\n"
                     f"```\n{_fence_safe(_cut(text, EXAMPLE_CHARS))}\n```")
    buttons = [_train_button(report)] if report.ready else []
    buttons.append(Button("Preview rows", f"/datasets preview {d.id}"))
    tone = "error" if not report.ready else "warning" if report.problems else "success"
    return Reply(title=f"Dataset #{d.id} · {d.name}", text="\n\n".join(parts), tone=tone, fields=_fields(report),
                 buttons=buttons, attachments=[chart] if chart else [],
                 footer=f"sha256 {d.sha256[:12]} · added {ago(d.created_at)} from {d.source}"
                        + ("" if report.model else f" · `/datasets info {d.id} model:<base>` counts tokens"))


TRAIN_ON = form(
    "train", "/train start dataset:{}", "Fine-tune on dataset #{}",
    (Ask("model", "Which installed model should learn it?", placeholder="a model name from /models list "
         "installed:true", max_length=200),),
    submit="Start",
)
"""The card's "Train on this" when no model measured the rows: it asks for the model, then runs /train start."""


def _train_button(report: DatasetReport) -> Button:
    if report.model:
        return Button("Train on this", f"/train start dataset:{report.dataset.id} model:{report.model}", "primary")
    return TRAIN_ON.button("Train on this", report.dataset.id, "primary")


def _fields(report: DatasetReport) -> list[Field]:
    d = report.dataset
    how = "detected" if report.detected else "named"
    columns = f" · columns {', '.join(f'{k}={v}' for k, v in d.columns.items())}" if d.columns else ""
    kinds = " · ".join(f"{kind} {n:,}" for kind, n in sorted(report.kinds.items())) or "none"
    duplicates = "none"
    if report.duplicates:
        pairs = ", ".join(f"line {a:,} repeats {b:,}" for a, b in report.duplicate_lines[:3])
        duplicates = f"{report.duplicates:,} (kept; {pairs}{', …' if report.duplicates > 3 else ''})"
    return [
        Field("Format", f"{report.format} {report.file_type.upper()} ({how}){columns}"),
        Field("Rows", f"{report.rows:,} read · {report.valid:,} valid"),
        Field("Kinds", kinds),
        Field("Duplicates", duplicates),
        Field("Split", f"train {report.train_rows:,} · validation {report.validation_rows:,} "
                       f"({report.validation_from})" + (f" · {report.overlap:,} training rows left out: the same as a "
                                                        "validation row" if report.overlap else "")),
        Field("Policy", _policy(report), inline=False),
    ]


def _policy(report: DatasetReport) -> str:
    if not report.model:
        return f"{report.policy} rows over {report.max_length:,} tokens (applied once a `model:` counts tokens)"
    over = report.histogram.over if report.histogram else 0
    if report.policy == "drop":
        return f"drop rows over {report.max_length:,} tokens: {over:,} dropped"
    if report.policy == "truncate":
        return f"truncate rows at {report.max_length:,} tokens: {report.truncated:,} cut"
    return f"fail on a row over {report.max_length:,} tokens: {over:,} such row{'s' if over != 1 else ''}"


def _problems(report: DatasetReport) -> str:
    lines = [f"**Problems** ({sum(p.count for p in report.problems):,} rows left out, by reason)"]
    for summary in report.problems:
        shown_lines = ", ".join(f"{n:,}" for n in summary.lines) + (", …" if summary.count > len(summary.first)
                                                                       else "")
        lines.append(f"• {summary.title}: {summary.count:,} (line{'s' * (summary.count > 1)} {shown_lines})")
        lines += [f"    line {p.line:,}: {_cut(p.message, 200)}" for p in summary.first[:PROBLEM_LINES]]
    return "\n".join(lines)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fence_safe(text: str) -> str:
    """Text that cannot close the code block it is shown in."""
    return text.replace("```", "ˋˋˋ")
