"""/models list and /models info: browse the registry."""

from __future__ import annotations

from modelbay.bot.context import Context
from modelbay.bot.format import human_bytes, human_count
from modelbay.bot.reply import Field, Reply, Table
from modelbay.bot.spec import Arg, ArgType, command
from modelbay.engine.records import ModelRecord

CATEGORIES = ("chat", "code", "creative", "analysis", "embedding", "domain")


@command(
    "models", "list",
    help="List models in the registry, by category or install state.",
    args=(
        Arg("category", "Only this category.", choices=CATEGORIES),
        Arg("installed", "Only installed (true) or not installed (false) models.", type=ArgType.BOOLEAN),
        Arg("limit", "How many to show.", type=ArgType.INTEGER, default=25, min=1, max=100),
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
    args=(Arg("model", "Model name or Hugging Face repo id.", required=True, autocomplete="model"),),
)
async def model_info(ctx: Context, model: str) -> Reply:
    """Show everything the registry knows about one model."""
    record = await ctx.call(ctx.runtime.registry.get, model)
    return Reply(title=record.display_name, text=record.description, fields=_fields(record),
                 table=_versions(record), footer=f"`{record.name}` · source: {record.source}")


def _fields(m: ModelRecord) -> list[Field]:
    fields = [
        Field("Repo", m.repo_id or "-"),
        Field("Category", m.category),
        Field("Parameters", human_count(m.parameter_count)),
        Field("Size", human_bytes(m.size_bytes)),
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


def _versions(m: ModelRecord) -> Table | None:
    if not m.versions:
        return None
    rows = [
        [v.revision, (v.revision_sha or "")[:10], v.install_state, human_bytes(v.size_bytes),
         f"{v.lineage} of #{v.parent_version_id}" if v.parent_version_id else "-"]
        for v in m.versions
    ]
    return Table(["Revision", "Commit", "State", "Size", "Lineage"], rows)
