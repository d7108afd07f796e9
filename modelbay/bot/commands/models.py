"""/models list, info, search, install and uninstall: browse the registry and the hub, manage the store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelbay.bot.commands._args import CATEGORIES, CATEGORY, MODEL, MODEL_OR_REPO, limit, revision
from modelbay.bot.commands.optimize import key_figures, verdict_reason
from modelbay.bot.context import Context
from modelbay.bot.reply import Button, Field, Progress, Reply, Table
from modelbay.bot.errors import ArgumentInvalid
from modelbay.bot.spec import COMMANDS, Arg, ArgType, command
from modelbay.engine.catalog.sources.base import SOURCES
from modelbay.engine.errors import one_line, shown
from modelbay.engine.hardware import fits_model
from modelbay.engine.optimization.optimization import LINEAGE as OPTIMIZE
from modelbay.engine.records import MAX_TOKENS_PER_S, ModelRecord, VersionRecord
from modelbay.engine.training.versions import FINETUNE, public_lineage
from modelbay.engine.units import human_bytes, human_count

if TYPE_CHECKING:
    from modelbay.engine.catalog.registry import Registry

STOP_WAIT = 45.0  # seconds /models stop waits for vLLM to exit (it gets 30 s after SIGTERM)


@command(
    "models", "list",
    help="List models in the registry, by category or install state.",
    args=(
        CATEGORY,
        Arg("installed", "Only installed (true) or not installed (false) models.", type=ArgType.BOOLEAN),
        limit(25, 100),
        Arg("page", "Which page of results.", type=ArgType.INTEGER, default=1, min=1, max=10_000),
    ),
)
async def list_models(ctx: Context, category: str | None, installed: bool | None, limit: int, page: int) -> Reply:
    """Show one page of models as a table."""
    models, total = await ctx.call(
        ctx.runtime.registry.list_models, category=category, installed=installed, limit=limit,
        offset=(page - 1) * limit,
    )
    if not models:
        what = f" in {category}" if category else ""
        return Reply(text=f"No models{what} match. Try `/models list` without filters.", tone="info")
    rows = [
        [m.name, m.category, human_count(m.parameter_count), human_bytes(m.size_bytes), m.license or "?",
         "yes" if m.installed else ""]
        for m in models
    ]
    first = (page - 1) * limit + 1
    more = f" Next: `/models list page:{page + 1}`." if first + len(models) - 1 < total else ""
    return Reply(
        title="Models",
        table=Table(["Name", "Category", "Params", "Size", "License", "Installed"], rows),
        footer=f"{first}–{first + len(models) - 1} of {total}.{more} `/models info <name>` for details.",
    )


@command(
    "models", "info",
    help="Show a model's details, versions and lineage.",
    args=(MODEL_OR_REPO,),
    slow=True,
)
async def model_info(ctx: Context, model: str) -> Reply:
    """Show everything the registry knows about one model, and whether it fits the deployment's hardware."""
    record = await ctx.call(ctx.runtime.registry.get, model)
    hardware, notice = await ctx.call(ctx.runtime.hardware.current, wait=3.0)
    fit = Field("Fits", ", ".join(f"{f.precision} {f.where.upper() if f.where else 'no'} ({human_bytes(f.needed)})"
                                  for f in fits_model(record.parameter_count, record.size_bytes, hardware))
                or "unknown size", inline=False)
    footer = " · ".join(x for x in (f"`{record.name}`", f"source: {record.source}", notice) if x)
    buttons = [Button("Try it", f"/chat {record.name}", "primary") if record.installed
               else Button("Install", f"/models install {record.name}", "primary")]
    tree = await ctx.call(lineage_tree, ctx.runtime.registry, record)
    lineage = [*_lineage(record), *_optimized(record)] + ([Field("Lineage", tree, inline=False)] if tree else [])
    return Reply(title=record.display_name, text=record.description, fields=[*_fields(record), *lineage, fit],
                 table=_versions(record), buttons=buttons, footer=footer)


def speed_text(tokens_per_s: float | None, source: str | None, *, short: bool = False) -> str:
    """A tokens/s figure marked with where it comes from: `45.2 tokens/s (measured here, from its answers)`, or
    `80 (catalog)` when short (a table cell); "-" (short) or "not measured" without one."""
    if tokens_per_s is None:
        return "-" if short else "not measured here or stated by the catalog"
    where = "catalog" if source == "catalog" else "measured here"
    if short:
        return f"{tokens_per_s:,.0f} ({where})" if tokens_per_s >= 10 else f"{tokens_per_s:.1f} ({where})"
    how = {"answers": ", from its answers", "optimization report": ", by its optimization report"}.get(source or "", "")
    return f"{tokens_per_s:,.1f} tokens/s ({where}{how})"


def _fields(m: ModelRecord) -> list[Field]:
    fields = [
        Field("Repo", m.repo_id or "-"),
        Field("Category", m.category),
        Field("Parameters", human_count(m.parameter_count)),
        Field("Size", human_bytes(m.size_bytes)),
        Field("Speed", speed_text(m.tokens_per_s, m.speed_source), inline=False),
        Field("Context", f"{m.context_length:,} tokens" if m.context_length else "?"),
        Field("License", m.license or "?"),
        Field("Format", " ".join(x for x in (m.format, m.dtype) if x) or "?"),
        Field("Tags", ", ".join(m.tags) or "-", inline=False),
    ]
    if m.gated:
        fields.append(Field("Access", "Gated: accept the licence on the Hub and set MODELBAY_HUB_TOKEN", False))
    if m.trust_remote_code:
        fields.append(Field("Remote code", "Needs the repo's own code; refused unless an operator allows it", False))
    return fields


LINEAGE_CHARS = 300  # a lineage field's value at most (Discord allows 1,024 per field)


def _lineage(m: ModelRecord) -> list[Field]:
    """The newest fine-tuned version's lineage: its base, dataset, training config and metrics."""
    tuned = [v for v in m.versions if v.lineage == FINETUNE]
    if not tuned:
        return []
    version = tuned[-1]
    shown_params = public_lineage(version.lineage_params)
    base = shown_params.get("base")
    of = (f"`{shown(base)}`" if base else "a removed model") + (
        f" (version #{version.parent_version_id})" if version.parent_version_id else " (its version was removed)")
    kind = ", ".join(x for x in (
        f"LoRA rank {shown_params['lora_rank']}" if shown_params.get("lora_rank") else "LoRA adapter",
        "merged weights" if shown_params.get("merged") else None) if x)
    fields = [Field("Fine-tuned from", of, inline=False), Field("Weights", kind)]
    for key, label in (("dataset", "Dataset"), ("config", "Training config"), ("metrics", "Metrics")):
        if shown_params.get(key) not in (None, {}, [], ""):
            fields.append(Field(label, one_line(_compact(shown_params[key]), LINEAGE_CHARS), inline=False))
    return fields


def _optimized(m: ModelRecord) -> list[Field]:
    """The newest optimized version's origin: its parent, the steps, the verdict and the report's key figures."""
    made = [v for v in m.versions if v.lineage == OPTIMIZE]
    if not made:
        return []
    version = made[-1]
    params = version.lineage_params
    report = params.get("report") if isinstance(params.get("report"), dict) else {}
    base = params.get("base")
    of = (f"`{shown(base)}`" if isinstance(base, str) else "a removed model") + (
        f" (version #{version.parent_version_id})" if version.parent_version_id else " (its version was removed)")
    fields = [Field("Optimized from", of, inline=False)]
    labels = report.get("labels") or [s.get("method") for s in params.get("steps") or [] if isinstance(s, dict)]
    if labels:
        fields.append(Field("Made by", " → ".join(str(x) for x in labels)))
    verdict, reason = params.get("verdict") or report.get("verdict"), verdict_reason(report.get("reason"), report)
    if verdict:
        over = " (kept as over budget, not a drop-in)" if verdict == "over budget" else ""
        fields.append(Field("Verdict", one_line(f"{verdict}{over}" + (f": {reason}" if reason else ""),
                                                LINEAGE_CHARS), inline=False))
    figures = key_figures(report)
    if figures:
        fields.append(Field("Against its parent", figures, inline=False))
    return fields


TREE_UP = 8  # ancestors a lineage tree walks up at most
TREE_DOWN = 2  # generations of descendants it lists
TREE_NODES = 16  # descendants it lists at most
NODE_CHARS = 160  # one node's name and figures at most (its "← this model" mark comes after)
_INDENT = "\u00a0" * 3  # no-break spaces: chat platforms keep them at the start of a line


def lineage_tree(registry: Registry, record: ModelRecord) -> str:
    """The model's lineage as a tree: its ancestors from the root down (base -> fine-tune -> 4-bit ...), the model
    itself, and the installed variants and fine-tunes made from it below; "" when it has none."""
    own = next((v for v in reversed(record.versions) if v.parent_version_id), None)
    chain: list[tuple[str, VersionRecord | None]] = []
    current, seen = own, set()
    while current is not None and current.parent_version_id and len(chain) < TREE_UP:
        base = current.lineage_params.get("base")
        name = base if isinstance(base, str) else "(a removed model)"
        try:
            parent = registry.get_version(current.parent_version_id)
        except LookupError:
            chain.append((name, None))
            break
        if parent.id in seen:
            break
        seen.add(parent.id)
        chain.append((name, parent))
        current = parent
    below = _descendants(registry, [v.id for v in record.versions], 1, [0])
    if not chain and not below:
        return ""
    lines = ["…"] if current is not None and current.parent_version_id and chain else []
    for depth, (name, version) in enumerate(reversed(chain)):
        lines.append(_node(depth, name, version, last=True))
    me = own or (record.versions[-1] if record.versions else None)
    lines.append(_node(len(chain), record.name, me, last=True, this=True))
    lines += [_INDENT * (len(chain) + depth - 1) + line for depth, line in below]
    return "\n".join(lines)


def _descendants(registry: Registry, ids: list[int], depth: int, count: list[int]) -> list[tuple[int, str]]:
    """(depth, line) for the installed versions made from `ids`, and theirs, depth first."""
    if not ids or depth > TREE_DOWN:
        return []
    children = registry.derived(ids)
    lines: list[tuple[int, str]] = []
    for i, (name, version) in enumerate(children):
        if count[0] >= TREE_NODES:
            lines.append((depth, f"└ … {len(children) - i} more"))
            break
        count[0] += 1
        lines.append((depth, _node(1, name, version, last=i == len(children) - 1)))
        lines += _descendants(registry, [version.id], depth + 1, count)
    return lines


def _node(depth: int, name: str, version: VersionRecord | None, *, last: bool, this: bool = False) -> str:
    """One line of a lineage tree: the model, how it was made, and for an optimized version its verdict and key
    figures."""
    branch = "" if depth == 0 else _INDENT * (depth - 1) + ("└ " if last else "├ ")
    what = ""
    if version is not None and version.lineage == FINETUNE:
        what = "fine-tune"
    elif version is not None and version.lineage == OPTIMIZE:
        report = version.lineage_params.get("report")
        report = report if isinstance(report, dict) else {}
        labels = " → ".join(str(x) for x in report.get("labels") or []) or "optimized"
        verdict = version.lineage_params.get("verdict") or report.get("verdict")
        what = " · ".join(x for x in (labels, verdict, key_figures(report)) if x)
    elif version is not None and version.lineage:
        what = str(version.lineage)
    text = f"`{shown(name, 60)}`" + (f" · {what}" if what else "")
    return branch + one_line(text, NODE_CHARS) + (" ← this model" if this else "")  # the mark is never cut


def _compact(value: object) -> str:
    """A JSON value in one short line: numbers to 4 significant digits, objects as `key value` pairs (empty values
    left out), lists of objects counted."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_compact(v)}" for k, v in value.items() if v not in (None, [], {}, ""))
    if isinstance(value, list):
        if any(isinstance(v, dict | list) for v in value):
            return f"{len(value)} item{'' if len(value) == 1 else 's'}"  # e.g. the answers side by side, which the training card shows
        return "[" + ", ".join(_compact(v) for v in value[:8]) + (", …" if len(value) > 8 else "") + "]"
    return str(value)


def _versions(m: ModelRecord) -> Table | None:
    if not m.versions:
        return None
    rows = [
        [v.revision, (v.revision_sha or "")[:10], v.install_state, human_bytes(v.size_bytes),
         _lineage_cell(v) if v.lineage else "-"]
        for v in m.versions
    ]
    return Table(["Revision", "Commit", "State", "Size", "Lineage"], rows)


def _lineage_cell(v: VersionRecord) -> str:
    """How a version was derived: `finetune of tiny-chat #3` (its parent's model, when recorded, and version)."""
    base = v.lineage_params.get("base")
    of = [shown(base, 40) if isinstance(base, str) else "", f"#{v.parent_version_id}" if v.parent_version_id else ""]
    return f"{v.lineage} of {' '.join(x for x in of if x)}" if any(of) else str(v.lineage)


@command(
    "models", "search",
    help="Search the registry and the Hugging Face Hub (`tag:code`, `license:mit` terms work too).",
    args=(
        Arg("query", "Words to look for, with optional tag:/license:/author: terms (none with speed:).", default="",
            rest=True),
        Arg("source", "Where to look.", choices=("all", "registry", *SOURCES), default="all"),
        CATEGORY,
        Arg("fits", "Only models that fit this machine (at 4-bit or better).", type=ArgType.BOOLEAN, default=False),
        Arg("speed", "Only models at least this fast, in tokens/s: measured here when it can be, else the catalog's.",
            type=ArgType.NUMBER, min=0, max=MAX_TOKENS_PER_S, named=True),
        limit(15, 50),
    ),
    slow=True,
)
async def search_models(ctx: Context, query: str, source: str, category: str | None, fits: bool,
                        speed: float | None, limit: int) -> Reply:
    """Merge registry and source results, de-duplicated by repo id, marking what is installed and each one's
    tokens/s, measured here or the catalog's."""
    by_speed = speed is not None or "speed:" in query.lower()
    if not query.strip() and not by_speed:  # a speed bound alone is a search: the registry's models that fast
        command_ = COMMANDS.get(("models", "search"))
        assert command_ is not None
        raise ArgumentInvalid(command_, "query", "is missing (words to look for, or a speed: of at least N tokens/s)")
    hits, notices = await ctx.call(ctx.runtime.discovery.search, query, source=source, category=category, fits=fits,
                                   limit=limit, min_tokens_per_s=speed)
    if not hits:
        what = f"`{shown(query)}`" if query.strip() else "that speed"
        tries = "a lower speed: or fewer words" if by_speed else "fewer words or another source"
        return Reply(text=f"Nothing matches {what}. Try {tries}.", footer=" ".join(notices) or None)
    rows = [[h.name, h.source, h.category, human_count(h.parameter_count), human_bytes(h.size_bytes),
             speed_text(h.tokens_per_s, h.speed_source, short=True), "yes" if h.installed else ""] for h in hits]
    return Reply(
        title=f"Search: {shown(query)}" if query.strip() else f"Search: at least {speed:g} tokens/s",
        table=Table(["Name", "Source", "Category", "Params", "Size", "Tokens/s", "Installed"], rows),
        footer=" ".join([*notices, "`/models install <name>` installs one; `/models info <name>` tells more."]),
    )


@command(
    "models", "install",
    help="Download a model into the store, verified, with live progress.",
    args=(
        MODEL_OR_REPO,
        revision("Branch, tag or commit (default: main)."),
    ),
    role="admin",
    slow=True,
)
async def install_model(ctx: Context, model: str, revision: str | None) -> Reply:
    """Run the pre-flight checks and start (or join) the download."""
    ticket = await ctx.call(ctx.runtime.installs.request, model, revision, ctx.actor.key)
    version = ticket.version
    fields = [Field("Revision", version.revision), Field("Commit", (version.revision_sha or "")[:12]),
              Field("Download", human_bytes(ticket.total_bytes))]
    if ticket.job is None:
        return Reply(title=f"{ticket.model.display_name} is installed", text=" ".join(ticket.notices), fields=fields,
                     tone="success", footer=version.local_path,
                     buttons=[Button("Try it", f"/chat {ticket.model.name}", "primary")])
    joined = "" if ticket.created else " (joining the download already running)"
    return Reply(
        title=f"Installing {ticket.model.display_name}{joined}",
        text=" ".join(ticket.notices), fields=fields,
        progress=Progress(ticket.job.id, f"install {ticket.model.name}", ticket.job.progress, ticket.job.status,
                          done=(Button("Try it", f"/chat {ticket.model.name}", "primary"),)),
        buttons=[Button("Cancel", f"/jobs cancel {ticket.job.id}", "danger")],
    )


@command(
    "models", "uninstall",
    help="Remove a model's files (history and analytics stay).",
    args=(
        MODEL_OR_REPO,
        revision("Only this revision or commit."),
        Arg("force", "Remove even while it is served or training.", type=ArgType.BOOLEAN, default=False),
    ),
    role="admin",
)
async def uninstall_model(ctx: Context, model: str, revision: str | None, force: bool) -> Reply:
    """Remove installed versions from the store."""
    removed = await ctx.call(ctx.runtime.uninstall, model, revision, force=force)
    what = ", ".join(f"{v.revision} ({(v.revision_sha or '')[:7]})" for v in removed)
    return Reply(text=f"Removed `{model}` {what} from the model store; its history and ratings are kept.",
                 tone="success")


@command(
    "models", "serve",
    help="Start a vLLM server for an installed model on a gpu worker; chats then use it.",
    args=(MODEL,),
    role="admin",
    slow=True,
)
async def serve_model(ctx: Context, model: str) -> Reply:
    """Submit (or join) the serve job and follow it until the server is healthy."""
    server, job, created = await ctx.call(ctx.runtime.servers.start, model, ctx.actor.key)
    if server.state == "running":
        return Reply(text=f"`{server.served_name}` is already served at {server.endpoint}.", tone="success",
                     buttons=[Button("Try it", f"/chat {server.served_name}", "primary")])
    joined = "" if created else " (already starting)"
    return Reply(
        title=f"Starting a server for {server.served_name}{joined}",
        text="vLLM loads the model and warms up; this takes from half a minute to several minutes.",
        progress=Progress(job.id, f"serve {server.served_name}", job.progress, job.status,
                          done=(Button("Try it", f"/chat {server.served_name}", "primary"),
                                Button("Stop", f"/models stop {server.served_name}", "danger"))),
        buttons=[Button("Stop", f"/models stop {server.served_name}", "danger")],
    )


@command(
    "models", "stop",
    help="Stop a model's vLLM server.",
    args=(MODEL,),
    role="admin",
    slow=True,
)
async def stop_model(ctx: Context, model: str) -> Reply:
    """Ask the serve job to stop its server and wait (briefly) until it has."""
    server = await ctx.call(ctx.runtime.servers.stop, model)
    await ctx.call(ctx.runtime.jobs.wait, server.job_id, timeout=STOP_WAIT)
    server = await ctx.call(ctx.runtime.servers.get, server.id)
    if server.live:
        return Reply(text=f"The server for `{server.served_name}` is stopping; `/models servers` shows when it has.")
    return Reply(text=f"The server for `{server.served_name}` has stopped.", tone="success")


@command("models", "servers", help="List model servers and their state.")
async def list_servers(ctx: Context) -> Reply:
    """Show live servers and recently ended ones."""
    servers = await ctx.call(ctx.runtime.servers.list, limit=20)
    if not servers:
        return Reply(text="No model servers yet. An admin starts one with `/models serve <model>`.")
    rows = [[s.served_name, s.state, s.endpoint or "-", ", ".join(s.adapters) or "-", s.error or ""] for s in servers]
    return Reply(title="Model servers", table=Table(["Model", "State", "Endpoint", "Adapters", "Error"], rows))


# -- recommend: ranked suggestions from this team's evidence (engine/analytics/recommend.py) ----------------

@command(
    "models", "recommend",
    help="Suggest models for a task from this team's ratings, arena, measured speed, hardware and use.",
    args=(
        Arg("task", "The kind of work (a model category).", choices=CATEGORIES),
        Arg("fits", "Only models that fit the hardware.", type=ArgType.BOOLEAN, default=False),
    ),
)
async def recommend_models(ctx: Context, task: str | None, fits: bool) -> Reply:
    """Rank the team's models with a one-line reason each, then what this person rates well and uses most."""
    from modelbay.engine.analytics.recommend import Recommender

    hardware, notice = await ctx.call(ctx.runtime.hardware.current, wait=3.0)
    recommender = Recommender(ctx.runtime.db, ctx.runtime.arena.leaderboard)
    team = await ctx.call(recommender.recommend, task, hardware=hardware, fits_only=fits)
    mine = await ctx.call(recommender.recommend, task, hardware=hardware, fits_only=fits, user_key=ctx.actor.key,
                          limit=3)
    what = f"{task} models" if task else "models"
    if not team:
        hint = " that fit this hardware" if fits else ""
        return Reply(text=f"No {what}{hint} installed or used here yet. `/models search` finds some; install one and "
                          "rate its answers, and recommendations follow.", footer=notice)
    rows = [[str(i), s.model, f"{s.score:.2f}", s.reason] for i, s in enumerate(team, 1)]
    fields = [Field("For you", "\n".join(f"{s.model}: {s.reason}" for s in mine), inline=False)] if mine else []
    best = team[0]
    return Reply(
        title=f"Recommended {what}", table=Table(["#", "Model", "Score", "Why"], rows), fields=fields,
        buttons=[Button(f"Try {best.model}", f"/chat {best.model}", "primary")] if best.evidence.installed else [],
        footer=" · ".join(x for x in ("Score: 👍 share (lower bound) 45%, arena 25%, measured speed 15%, use 15% "
                                      "over 30 days.", notice) if x),
    )
