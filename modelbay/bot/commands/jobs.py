"""/jobs, /jobs cancel and /jobs watch: long operations and their progress."""

from __future__ import annotations

from modelbay.bot.context import Context
from modelbay.engine.units import ago
from modelbay.bot.reply import Button, Reply, Table
from modelbay.bot.reply import Progress as ProgressView
from modelbay.bot.commands._args import JOB, limit
from modelbay.bot.spec import Arg, ArgType, command
from modelbay.engine.errors import NotAllowed
from modelbay.engine.records import JobRecord


@command(
    "jobs", "list",
    help="List your jobs (admins: everyone's with all:true).",
    args=(
        Arg("active", "Only running (true) or only ended (false) jobs.", type=ArgType.BOOLEAN),
        Arg("all", "Everyone's jobs (admins).", type=ArgType.BOOLEAN, default=False),
        limit(20, 100, named=True),
    ),
    aliases=(("jobs",),),
)
async def list_jobs(ctx: Context, active: bool | None, all: bool, limit: int) -> Reply:  # noqa: A002
    """Show recent jobs with status and progress."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("/jobs all:true", ctx.role, "admin")
    requester = None if all else ctx.actor.key
    jobs = await ctx.call(ctx.runtime.jobs.list, requester=requester, active=active, limit=limit)
    if not jobs:
        return Reply(text="No jobs yet. Jobs appear here when you install, fine-tune or optimize a model.")
    rows = [[j.id, j.kind, j.status, f"{j.progress:.0%}", _summary(j), ago(j.created_at)] for j in jobs]
    buttons = [Button(f"Cancel {j.id}", f"/jobs cancel {j.id}", "danger") for j in jobs if j.active][:5]
    return Reply(title="Jobs", table=Table(["ID", "Kind", "Status", "Progress", "Detail", "Started"], rows),
                 buttons=buttons, footer="`/jobs watch <id>` follows one; `/jobs cancel <id>` stops it.")


@command(
    "jobs", "cancel",
    help="Cancel a queued or running job.",
    args=(
        JOB,
        Arg("force", "Stop it at once instead of at its next checkpoint (admins).", type=ArgType.BOOLEAN,
            default=False),
    ),
    role="user",
)
async def cancel_job(ctx: Context, job: str, force: bool) -> Reply:
    """Cancel one job; only its requester or an admin may."""
    record = await ctx.cancel_job(job, force=force)
    if record.status == "canceled":
        return Reply(text=f"Job `{job}` ({record.kind}) is canceled.", tone="success")
    return Reply(text=f"Job `{job}` ({record.kind}) will stop at its next checkpoint.", tone="info",
                 progress=ProgressView(job, record.kind, record.progress, record.status))


@command(
    "jobs", "watch",
    help="Follow a job's progress live.",
    args=(JOB,),
)
async def watch_job(ctx: Context, job: str) -> Reply:
    """Return the job with a progress view that the adapter keeps up to date."""
    record = await ctx.call(ctx.runtime.jobs.get, job)
    buttons = [Button("Cancel", f"/jobs cancel {job}", "danger")] if record.active else []
    return Reply(title=f"{record.kind} {job}", text=_summary(record),
                 progress=ProgressView(job, record.kind, record.progress, record.status), buttons=buttons)


def _summary(job: JobRecord) -> str:
    message = str(job.progress_detail.get("message") or "")
    if job.error and job.active and message:  # a retry: when it runs, then why the last attempt failed
        return f"{message}; last attempt: {job.error}"
    return job.error or message
