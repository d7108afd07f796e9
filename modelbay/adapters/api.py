"""The REST API (FastAPI): the marketplace endpoints, over the same engine calls the bot makes.

JSON names are snake_case. A model's `id` is its registry name, which the URLs take as do repo ids such as
`Qwen/Qwen2.5-0.5B-Instruct`; `name` is its display name; sizes and memory are bytes (`size_bytes`). Server paths
(where a model is stored) are never returned. Every error body is `{"error", "type", "title"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, ServerSentEvent, format_sse_event
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException

from modelbay import __version__
from modelbay.bot.commands.datasets import report_of, visible
from modelbay.bot.commands.optimize import start_job as start_optimization
from modelbay.bot.commands.train import resume_job, start_job
from modelbay.bot.context import Actor, Context
from modelbay.bot.errors import render_error, style_of, user_error
from modelbay.bot.progress import watch
from modelbay.config import Settings
from modelbay.engine import hardware as hw
from modelbay.engine.analytics.analytics import PERIODS, Metrics, parse_period
from modelbay.engine.analytics import charts as analytics_charts
from modelbay.engine.analytics import compare as analytics_compare
from modelbay.engine.analytics.events import TrackedEvent, csv_lines, export_events, jsonl_lines, track
from modelbay.engine.analytics.telemetry import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelbay.engine.datasets.formats import FORMATS, parse_columns
from modelbay.engine.db.schema.catalog import Category
from modelbay.engine.errors import ModelBayError, NotAllowed, shown
from modelbay.engine.experiments.experiments import ExperimentRecord, ExperimentStatus, VariantSpec  # experiments
from modelbay.engine.experiments.arena import BattleRecord, Piece, SideDone  # arena
from modelbay.engine.installs.derived import without_paths
from modelbay.engine.installs.installs import InstallTicket
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.optimization.config import OptimizationRequest
from modelbay.engine.optimization.optimization import OptimizationStatus
from modelbay.engine.optimization.progress import OptimizationDetail
from modelbay.engine.records import JobRecord, ModelQuery, SortKey
from modelbay.engine.records import MAX_TOKENS_PER_S, SpeedSource  # registry search: measured speed
from modelbay.engine.training.progress import TrainingDetail
from modelbay.engine.training.templates import DEFAULT_TEMPLATE, TrainingRequest
from modelbay.engine.training.training import TrainingStatus
from modelbay.engine.training.versions import public_lineage
from modelbay.runtime import Runtime

__all__ = ["configured_token", "create_app", "slack_configured"]

# Everyone holding the token is one caller; MODELBAY_ROLES grants it a role as `api:token` or `api:*`.
API_ACTOR = Actor("api", "token", "API client")
HARDWARE_WAIT = 2.0  # seconds a model's detail waits for the GPU workers' hardware before using this machine's
MODELS = "/api/marketplace/models"
# Every integer the API takes stays within what a JSON client holds exactly (JavaScript's safe integers) and what
# a database's 64-bit integer holds, so a bigger one is refused as a 422 before any query is built.
MAX_INT = 2**53
# registry search: measured speed
_SPEED_HELP = ("Least decode tokens/s: measured here (answers, else the newest optimization report), else the "
               "catalog's figure; a `speed:N` term in q does the same.")


def _plain(value: str) -> str:
    """Refuse text no database stores: NUL characters, and lone surrogates (a JSON `\\udc7a`)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 text (it has a lone surrogate)") from None
    return value


Text = Annotated[str, AfterValidator(_plain)]
ModelId = Annotated[Text, Path(max_length=200, description="Registry name or repo id.")]
JobId = Annotated[Text, Path(max_length=64)]


# -- what the API returns ----------------------------------------------------------------------------
# Each model that mirrors an engine record is read from it (`from_attributes`): a field takes the record's
# attribute of the same name, or the one its `validation_alias` names. They stay separate models, not the records
# themselves, because the API renames fields (a model's registry name is its `id`) and leaves out what stays on
# the server (where files are stored, a job's parameters and result).


class _Record(BaseModel):
    """A response read from an engine record's attributes."""

    model_config = ConfigDict(from_attributes=True)


class _With:
    """A record read with extra attributes: values a response holds that the record does not."""

    def __init__(self, record: Any, **extra: Any) -> None:
        self.__dict__.update(extra)
        self._record = record

    def __getattr__(self, name: str) -> Any:  # only asked for what the extras lack
        return getattr(self._record, name)


class ErrorOut(BaseModel):
    """An error: one sentence that says what to do next, the error's class and a short title."""

    error: str
    type: str
    title: str


class ModelOut(_Record):
    """A model in the registry."""

    id: str = Field(validation_alias="name", description="Registry name; the URLs take it or the repo id.")
    name: str = Field(validation_alias="display_name", description="Display name.")
    repo_id: str | None
    source: str
    category: str
    description: str
    author: str | None
    license: str | None
    tags: list[str]
    parameter_count: int | None
    size_bytes: int | None
    context_length: int | None
    format: str | None
    dtype: str | None
    gated: bool
    downloads: int
    likes: int
    installed: bool
    # registry search: measured speed
    tokens_per_s: float | None = Field(description="Decode tokens/s: measured here, else the catalog's (speed_source).")
    speed_source: SpeedSource | None = Field(
        description="answers or optimization report (measured on this deployment), catalog, or null: no figure.")


class VersionOut(_Record):
    """One revision of a model and its install state."""

    # Where it is stored (local_path, files) stays on the server.
    id: int
    revision: str
    sha: str | None = Field(validation_alias="revision_sha")
    install_state: str
    size_bytes: int | None
    installed_at: datetime | None
    lineage: str | None = Field(description="How it was derived from its parent (e.g. a fine-tune), if it was.")
    parent_version_id: int | None
    lineage_params: dict[str, Any] = Field(
        default_factory=dict, description="What made a derived version: base, dataset, config, metrics, merged, "
                                          "lora_rank (fine-tunes); empty otherwise.")

    @field_validator("lineage_params", mode="after")
    @classmethod
    def _shown(cls, value: dict[str, Any]) -> dict[str, Any]:
        return public_lineage(value)  # never the server's paths


class FitOut(_Record):
    """Whether the model fits at one precision: the memory it needs and where it would run (null: nowhere)."""

    precision: str
    memory_bytes: int = Field(validation_alias="needed")
    where: Literal["gpu", "cpu"] | None


class ModelDetailOut(ModelOut):
    """A model with its versions and whether it fits the GPU workers' hardware."""

    languages: list[str]
    pipeline_tag: str | None
    trust_remote_code: bool
    memory_bytes: int | None
    performance: dict[str, Any]
    requirements: dict[str, Any]
    versions: list[VersionOut]
    fits: list[FitOut]
    hardware_notice: str | None = Field(description="Why `fits` used this machine's RAM instead of the GPUs.")


class ModelListOut(_Record):
    """One page of models and how many match in all."""

    models: list[ModelOut]
    total: int


class SearchHitOut(_Record):
    """A search result from the registry or straight from a source."""

    id: str = Field(validation_alias="name",
                    description="What to install: the registry name, or the repo id for source-only hits.")
    repo_id: str | None
    source: str
    category: str
    parameter_count: int | None
    size_bytes: int | None
    downloads: int
    license: str | None
    installed: bool
    in_registry: bool
    # registry search: measured speed
    tokens_per_s: float | None = Field(description="Decode tokens/s: measured here, else the catalog's (speed_source).")
    speed_source: SpeedSource | None = Field(
        description="answers or optimization report (measured on this deployment), catalog, or null: no figure.")


class SearchOut(_Record):
    """Search results and notes on what was left out (a source that could not be reached)."""

    results: list[SearchHitOut] = Field(validation_alias="hits")
    notices: list[str]


class InstallIn(BaseModel):
    """What to install."""

    revision: Text | None = Field(None, max_length=128, description="Branch, tag or commit (default: main).")


class ProgressOut(BaseModel):
    """A `progress` event of an install stream."""

    job_id: str
    status: str
    progress: float
    message: str | None
    bytes: int | None
    total: int | None
    rate: float | None = Field(description="Bytes per second.")
    eta: float | None = Field(description="Seconds left.")

    @classmethod
    def of(cls, e: ProgressEvent) -> ProgressOut:
        """Translate a job progress event."""
        d = e.detail
        return cls(job_id=e.job_id, status=e.status, progress=e.progress, message=e.message, bytes=d.bytes,
                   total=d.total, rate=d.rate, eta=d.eta)


class CompleteOut(BaseModel):
    """The `complete` event of an install stream: the installed version."""

    model: str
    revision: str
    sha: str | None
    files: int
    bytes: int | None
    job_id: str | None = Field(description="The download job; null when it was already installed.")
    notices: list[str]


class StreamErrorOut(BaseModel):
    """The `error` event of an install stream."""

    error: str
    job_id: str | None


class UninstallOut(BaseModel):
    """The versions whose files were removed."""

    model: str
    removed: list[VersionOut]


class JobOut(_Record):
    """A job as users see it."""

    # Its parameters and result stay inside: they hold server paths.
    id: str
    kind: str
    status: str
    progress: float
    message: str | None
    error: str | None
    attempts: int
    requester: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class FiguresOut(_Record):
    """A model's answers over a period: volume, response times, speed and satisfaction."""

    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    mean_ttft_ms: float | None
    tokens_per_s: float | None
    ups: int
    downs: int
    satisfaction: float | None
    satisfaction_low: float | None = Field(description="Wilson 95% interval, lower end.")
    satisfaction_high: float | None = Field(description="Wilson 95% interval, upper end.")

    @classmethod
    def of(cls, m: Metrics, **extra: Any) -> Self:
        """From the engine's metrics, with the Wilson interval's ends and the subclass's own fields."""
        low, high = m.satisfaction_interval or (None, None)
        return cls.model_validate(_With(m, satisfaction_low=low, satisfaction_high=high, **extra))


class MetricsOut(FiguresOut):
    """A model's answers over a period."""

    model: str
    period: str


class DatasetOut(_Record):
    """A stored dataset and what reading every row of it found."""

    # Where its bytes are stored stays on the server.
    id: int
    name: str
    owner: str
    filename: str
    sha256: str
    size_bytes: int
    format: str = Field(description="chat, sharegpt, alpaca, completion, text or text-blocks.")
    format_given: bool = Field(description="Named when it was added (else detected from the rows' fields).")
    columns: dict[str, str] = Field(description="Our field -> the file's column, when a column map was given.")
    source: str
    rows: int = Field(description="Rows read: valid rows plus rows with a problem.")
    valid_rows: int
    duplicates: int
    kinds: dict[str, int] = Field(description="Valid rows per kind: chat, completion, text.")
    problems: dict[str, int] = Field(description="Rows left out per reason.")
    created_at: datetime


class DatasetListOut(BaseModel):
    """Datasets, newest first."""

    datasets: list[DatasetOut]


class ProblemOut(_Record):
    """A row left out: its line (1-based; a CSV's header is line 1), the reason and what to fix."""

    line: int
    reason: str
    message: str
    fatal: bool


class ProblemSummaryOut(_Record):
    """The rows left out for one reason: how many, and the first few."""

    reason: str
    title: str
    count: int
    first: list[ProblemOut]


class HistogramOut(_Record):
    """Rows per length bin: bin i holds lengths from edges[i] up to, not including, edges[i + 1]."""

    unit: Literal["tokens", "characters"]
    edges: list[int]
    counts: list[int]
    minimum: int
    median: int
    p95: int
    maximum: int
    mean: float
    limit: int | None = Field(description="The max_length the rows were measured against (tokens only).")
    over: int = Field(description="Rows longer than the limit, before the policy.")


class SegmentOut(_Record):
    """A run of the example's rendered text whose tokens are all trained on, or all masked."""

    text: str
    trained: bool


class DatasetReportOut(_Record):
    """A dataset's report: rows, kinds, problems by reason, lengths, the policy, an example and the split."""

    dataset: DatasetOut
    file_type: str
    format: str
    detected: bool
    rows: int
    valid: int
    kinds: dict[str, int]
    problems: list[ProblemSummaryOut]
    duplicates: int
    duplicate_lines: list[tuple[int, int]] = Field(description="The first few (line, line it repeats).")
    policy: str
    max_length: int
    dropped: int = Field(description="Valid rows the policy leaves out (too long, no trained token, template).")
    truncated: int
    fatal: ProblemOut | None = Field(description="A row the fail policy stops training at.")
    model: str | None = Field(description="Whose tokenizer and chat template measured the rows (null: characters).")
    histogram: HistogramOut | None
    example: list[SegmentOut]
    example_line: int | None
    train_rows: int
    validation_rows: int
    validation_from: str
    seed: int
    trainable: int
    ready: bool = Field(description="Training can start: no fatal row and at least one row to train on.")


class HealthOut(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


# -- who is asking ------------------------------------------------------------------------------------

def configured_token(settings: Settings) -> str | None:
    """Return the API token, or None when it is unset or blank (the API then refuses every request)."""
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    return token or None


_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="The server's MODELBAY_API_TOKEN.")


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _authenticate(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Actor:
    """Accept only the configured bearer token; without one configured, nothing is served."""
    token = configured_token(_runtime(request).settings)
    if token is None:
        raise HTTPException(503, "The API is off: set MODELBAY_API_TOKEN on the server and restart it.")
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "Missing or wrong token: send `Authorization: Bearer <MODELBAY_API_TOKEN>`.",
                            headers={"WWW-Authenticate": "Bearer"})
    return API_ACTOR


def _caller(needed: str) -> Callable[..., Context]:
    """Return a dependency that gives the caller's context when their role includes needed."""

    def check(request: Request, actor: Annotated[Actor, Depends(_authenticate)]) -> Context:
        runtime = _runtime(request)
        ctx = Context(runtime, actor, actor.role(runtime.settings.roles, runtime.settings.default_role))
        if not ctx.has_role(needed):
            raise NotAllowed(f"{request.method} {request.url.path}", ctx.role, needed)
        return ctx

    return check


Viewer = Annotated[Context, Depends(_caller("viewer"))]
User = Annotated[Context, Depends(_caller("user"))]
Trainer = Annotated[Context, Depends(_caller("trainer"))]
Admin = Annotated[Context, Depends(_caller("admin"))]


# -- errors -------------------------------------------------------------------------------------------

def _error(status: int, error: str, type_: str, title: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorOut(error=error, type=type_, title=title).model_dump(), status, headers=headers)


async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    """Answer from the error table: the status is the error's category's (engine/errors.py) unless the table lists
    another; anything else is a 500, logged with a reference and shown without details."""
    reply = render_error(exc)
    style = style_of(exc)
    status, type_ = (style.http_status, type(user_error(exc)).__name__) if style else (500, "InternalError")
    return _error(status, reply.text, type_, reply.title or "Error")


async def _handle_http(request: Request, exc: HTTPException) -> JSONResponse:
    """Answer HTTP-level refusals (auth, unknown route, wrong method) in the same shape."""
    phrase = HTTPStatus(exc.status_code).phrase
    return _error(exc.status_code, str(exc.detail), phrase.replace(" ", ""), phrase, exc.headers)


async def _handle_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Answer a malformed request with one line naming the parameter and what it accepts."""
    return _error(422, _invalid(exc), "RequestValidationError", "Check the request")


def _invalid(exc: RequestValidationError) -> str:
    error = exc.errors()[0]
    where, *path = error["loc"]
    if error["type"] == "json_invalid":
        return f"The request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})."
    name = ".".join(str(p) for p in path) or where
    if error["type"] == "missing":
        return f"The {where} parameter `{name}` is required."
    problem = str(error["msg"]).removeprefix("Value error, ").replace("Input should", "should", 1)
    value = error.get("input")
    got = f" (got '{shown(value, 40)}')" if isinstance(value, (str, int, float)) else ""
    return f"The {where} parameter `{name}` {problem}{got}."


_ERROR_STATUSES = (401, 403, 404, 422, 503)
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in _ERROR_STATUSES}
# A streaming route's documented media type is its stream's; its refusals come before the stream, as JSON.
_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Server-Sent Events: `progress` {job_id, status, progress, message, bytes, total, rate, "
                         "eta} while the download runs, then `complete` {model, revision, sha, files, bytes, job_id, "
                         "notices} or `error` {error, job_id}; `: ping` comments keep the connection alive."},
    **{s: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
       for s in (*_ERROR_STATUSES, 409, 502, 507)},
}


# -- endpoints ----------------------------------------------------------------------------------------

system = APIRouter(tags=["system"])
marketplace = APIRouter(tags=["marketplace"], responses=_ERRORS)
jobs = APIRouter(tags=["jobs"], responses=_ERRORS)
analytics = APIRouter(tags=["analytics"], responses=_ERRORS)
training_datasets = APIRouter(tags=["training"], responses=_ERRORS)
training_jobs = APIRouter(tags=["training"], responses=_ERRORS)
optimization = APIRouter(tags=["optimization"], responses=_ERRORS)


@system.get("/healthz")
async def healthz() -> HealthOut:
    """Say the process is up (no token needed)."""
    return HealthOut()


@marketplace.get(MODELS)
async def list_models(
    ctx: Viewer,
    q: Annotated[Text, Query(max_length=200, description="Words, with tag:/license:/author: terms.")] = "",
    category: Category | None = None,
    tags: Annotated[list[Annotated[Text, Field(max_length=80)]] | None,
                    Query(max_length=20, description="Repeat for several; all must match.")] = None,
    installed: bool | None = None,
    source: Annotated[Text | None, Query(max_length=40, description="catalog, huggingface or local.")] = None,
    license: Annotated[Text | None, Query(max_length=80)] = None,  # noqa: A002 - the API's field name
    min_parameters: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    max_parameters: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    max_size_bytes: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    min_tokens_per_s: Annotated[float | None, Query(ge=0, le=MAX_TOKENS_PER_S, allow_inf_nan=False,
                                                    description=_SPEED_HELP)] = None,
    sort: SortKey | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> ModelListOut:
    """List and filter the registry's models."""
    query = ModelQuery.parse(q, category=category.value if category else None, tags=tuple(tags) if tags else None,
                             installed=installed, source=source, license=license, min_parameters=min_parameters,
                             max_parameters=max_parameters, max_size_bytes=max_size_bytes,
                             min_tokens_per_s=min_tokens_per_s, sort=sort, limit=limit, offset=offset)
    return ModelListOut.model_validate(await ctx.call(ctx.runtime.registry.search, query))


@marketplace.get(MODELS + "/{model_id:path}")
async def get_model(ctx: Viewer, model_id: ModelId) -> ModelDetailOut:
    """Show a model by name or repo id, with its versions and whether it fits the GPU workers."""
    record = await ctx.call(ctx.runtime.registry.get, model_id)
    hardware, notice = await ctx.call(ctx.runtime.hardware.current, wait=HARDWARE_WAIT)
    fits = hw.fits(record.parameter_count, hardware)
    return ModelDetailOut.model_validate(_With(record, fits=fits, hardware_notice=notice))


async def _start_install(ctx: Admin, model_id: ModelId, body: InstallIn | None = None) -> InstallTicket:
    """Run the pre-flight checks and start (or join) the download."""
    # A dependency, not the endpoint: it runs before the stream starts, so a refusal answers as a JSON error.
    return await ctx.call(ctx.runtime.installs.request, model_id, body.revision if body else None, ctx.actor.key)


@marketplace.post(MODELS + "/{model_id:path}/install", response_class=EventSourceResponse,
                  responses=_STREAM_RESPONSES)
async def install_model(ctx: Admin, ticket: Annotated[InstallTicket, Depends(_start_install)]
                        ) -> AsyncIterator[ServerSentEvent]:
    """Install a model, streaming `progress` events, then `complete` or `error` (with `: ping` keep-alives)."""
    # FastAPI pings while the job is quiet and cancels this generator when the client leaves; the job,
    # which other requests may share, keeps running.
    job_id = ticket.job.id if ticket.job else None
    try:
        if job_id is not None:
            async for event in watch(ctx.runtime.jobs, job_id):
                if not event.terminal:
                    yield ServerSentEvent(event="progress", data=ProgressOut.of(event))
            job = await ctx.call(ctx.runtime.jobs.get, job_id)
            if job.status != "finished":
                error = job.error or f"Job `{job_id}` was {job.status}; nothing was installed."
                yield ServerSentEvent(event="error", data=StreamErrorOut(error=error, job_id=job_id))
                return
        version = await ctx.call(ctx.runtime.registry.get_version, ticket.version.id)
        yield ServerSentEvent(event="complete", data=CompleteOut(
            model=ticket.model.name, revision=version.revision, sha=version.revision_sha, files=len(version.files),
            bytes=version.size_bytes, job_id=job_id, notices=ticket.notices))
    except Exception as exc:  # noqa: BLE001 - the stream has started: errors become its last event
        yield ServerSentEvent(event="error", data=StreamErrorOut(error=render_error(exc).text, job_id=job_id))


@marketplace.delete(MODELS + "/{model_id:path}/install")
async def uninstall_model(
    ctx: Admin, model_id: ModelId,
    revision: Annotated[Text | None, Query(max_length=128, description="Only this revision or commit.")] = None,
    force: Annotated[bool, Query(description="Remove even while it is served or training.")] = False,
) -> UninstallOut:
    """Remove a model's installed files; its history and ratings stay."""
    removed = await ctx.call(ctx.runtime.uninstall, model_id, revision, force=force)
    return UninstallOut(model=model_id, removed=removed)


@marketplace.get("/api/marketplace/search")
async def search(
    ctx: Viewer,
    q: Annotated[Text, Query(max_length=200, description="Words, with tag:/license:/author: terms.")] = "",
    source: Literal["all", "registry", "huggingface", "local"] = "all",
    category: Category | None = None,
    fits: Annotated[bool, Query(description="Only models that fit the GPU workers at 4-bit or better.")] = False,
    min_tokens_per_s: Annotated[float | None, Query(ge=0, le=MAX_TOKENS_PER_S, allow_inf_nan=False,
                                                    description=_SPEED_HELP + " Searches the registry only.")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 15,
) -> SearchOut:
    """Search the registry and the model sources together, de-duplicated, marking what is installed."""
    return SearchOut.model_validate(await ctx.call(ctx.runtime.discovery.search, q, source=source,
                                                   category=category.value if category else None, fits=fits,
                                                   limit=limit, min_tokens_per_s=min_tokens_per_s))


@jobs.get("/api/jobs/{job_id}")
async def get_job(ctx: Viewer, job_id: JobId) -> JobOut:
    """Show a job's status and progress."""
    return _job_out(await ctx.call(ctx.runtime.jobs.get, job_id))


@jobs.delete("/api/jobs/{job_id}")
async def cancel_job(ctx: User, job_id: JobId, force: bool = False) -> JobOut:
    """Cancel a job: a queued one at once, a running one at its next checkpoint (or now, with force)."""
    return _job_out(await ctx.cancel_job(job_id, force=force))


def _job_out(job: JobRecord) -> JobOut:
    return JobOut.model_validate(_With(job, message=job.progress_detail.get("message")))


@analytics.get("/api/analytics/models/{model_id}")
async def model_metrics(ctx: Viewer, model_id: ModelId, period: Literal[PERIODS] = "7d") -> MetricsOut:  # type: ignore[valid-type]
    """Requests, p50/p95 response time, first-token time, tokens/s and satisfaction of a model's answers."""
    record = await ctx.call(ctx.runtime.registry.get, model_id)
    m = await ctx.call(ctx.runtime.analytics.metrics, [v.id for v in record.versions], parse_period(period))
    return MetricsOut.of(m, model=record.name, period=period)


# -- compare and charts: models side by side, and the analytics charts as PNG (or their text alternative) -------

class StrengthOut(BaseModel):
    """A model's arena strength (Bradley-Terry, LMSYS scale) with its 95% bootstrap interval."""

    strength: float
    low: float
    high: float
    battles: int | None


class CompareModelOut(FiguresOut):
    """One model of a comparison: its answers over the period and its arena strength."""

    model: str
    name: str = Field(description="Display name.")
    arena: StrengthOut | None = Field(description="Null without arena votes for it.")


class CompareOut(BaseModel):
    """Models side by side over a period, in the order asked."""

    period: str
    models: list[CompareModelOut]


Period = Literal[PERIODS]  # type: ignore[valid-type]
ModelNames = Annotated[list[Annotated[Text, Field(max_length=200)]], Query(max_length=20, description="Model names (repeat, or comma-separated).")]
_CHART = re.compile(rf"({'|'.join(analytics_charts.CHARTS)})\.(png|txt)")


def _names(models: list[str]) -> list[str]:
    return list(dict.fromkeys(n for m in models for n in m.replace(",", " ").split() if n))[:20]


@analytics.get("/api/analytics/compare")
async def compare_models(ctx: Viewer, models: ModelNames, period: Period = "7d") -> CompareOut:
    """Requests, p50/p95 response time, first-token time, tokens/s, 👍 share and arena strength of models."""
    runtime = ctx.runtime
    columns = await ctx.call(analytics_compare.compare, runtime.db, runtime.registry, runtime.analytics,
                             _names(models), parse_period(period), runtime.arena)
    return CompareOut(period=period, models=[
        CompareModelOut.of(c.metrics, model=c.name, name=c.display_name,
                           arena=StrengthOut(**vars(c.strength)) if c.strength else None) for c in columns])


@analytics.get("/api/analytics/charts/{chart}", response_class=Response,
               responses={200: {"content": {"image/png": {}, "text/plain": {}},
                                "description": "The chart as PNG (`.png`) or its text alternative (`.txt`)."}})
async def analytics_chart(
    ctx: Viewer,
    chart: Annotated[str, Path(max_length=64, description=f"One of {', '.join(analytics_charts.CHARTS)}, then .png or .txt.")],
    models: Annotated[list[Annotated[Text, Field(max_length=200)]] | None, Query(max_length=20, description="Model names (the dashboard: the "
                                                                          "installed ones when left out).")] = None,
    period: Period = "24h",
) -> Response:
    """Response time over time (p50/p95), satisfaction over time (👍 share with its interval), or the dashboard."""
    match = _CHART.fullmatch(chart)
    if match is None:
        raise HTTPException(404, f"No chart `{shown(chart)}`: ask for one of "
                                 f"{', '.join(n + '.png' for n in analytics_charts.CHARTS)} (or .txt for its text).")
    name, kind = match.groups()
    runtime, since = ctx.runtime, parse_period(period)
    if models:
        columns = await ctx.call(analytics_compare.compare, runtime.db, runtime.registry, runtime.analytics,
                                 _names(models), since)
    elif name == "dashboard":
        columns, _ = await ctx.call(analytics_compare.dashboard, runtime.db, runtime.registry, runtime.analytics,
                                    since)
    else:
        raise HTTPException(422, f"Name the models of the {name} chart: `?models=<model>&models=<model>`.")
    named = {c.name: c.series for c in columns}
    draw, text = {
        "response-time": (analytics_charts.latency_png, analytics_charts.latency_text),
        "satisfaction": (analytics_charts.satisfaction_png, analytics_charts.satisfaction_text),
    }.get(name, (None, None))
    if kind == "txt":
        body = text(named) if text else analytics_charts.dashboard_text(columns)
        return Response(body or "No models.", media_type="text/plain; charset=utf-8")
    data = await ctx.call(draw, named) if draw else await ctx.call(analytics_charts.dashboard_png, columns)
    return Response(data, media_type="image/png")


# -- telemetry: /metrics, the events export and trackEvent ------------------------------------------------

@system.get("/metrics", include_in_schema=False)
async def metrics(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Response:
    """Prometheus metrics in the text format; open unless MODELBAY_METRICS_TOKEN is set, then it is the bearer
    token (Prometheus scrapes with its own credentials, never the API token)."""
    runtime = _runtime(request)
    token = runtime.settings.metrics_token.get_secret_value() if runtime.settings.metrics_token else ""
    if token and not secrets.compare_digest((credentials.credentials if credentials else "").encode(), token.encode()):
        raise HTTPException(401, "Missing or wrong token: send `Authorization: Bearer <MODELBAY_METRICS_TOKEN>`.",
                            headers={"WWW-Authenticate": "Bearer"})
    body = await asyncio.to_thread(runtime.telemetry.exposition)
    return Response(body, media_type=METRICS_CONTENT_TYPE)


_EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


@analytics.get("/api/analytics/events", responses={200: {"content": {t: {} for t in _EXPORT_TYPES.values()},
                                                        "description": "The events, streamed."}})
async def export_analytics_events(
    ctx: Admin, format: Literal["csv", "jsonl"] = "jsonl",  # noqa: A002 - the seed's parameter name
    period: Literal[PERIODS] = "all",  # type: ignore[valid-type]
    model: Annotated[Text | None, Query(max_length=200, description="Only this model's events.")] = None,
) -> StreamingResponse:
    """Every analytics event (answers: timings, tokens, outcome; no text), oldest first, as CSV or JSON Lines."""
    version_ids = None
    if model is not None:
        record = await ctx.call(ctx.runtime.registry.get, model)
        version_ids = [v.id for v in record.versions]
    rows = export_events(ctx.runtime.db, parse_period(period), version_ids)
    lines = csv_lines(rows) if format == "csv" else jsonl_lines(rows)
    return StreamingResponse((line.encode() for line in lines), media_type=_EXPORT_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="modelbay-events.{format}"'})


class TrackMetadataIn(BaseModel):
    """What the answer took (the seed's `metadata`)."""

    model_config = ConfigDict(extra="forbid")

    inputTokens: int | None = Field(None, ge=0, le=10_000_000)  # noqa: N815 - the seed's camelCase names
    outputTokens: int | None = Field(None, ge=0, le=10_000_000)  # noqa: N815
    responseTime: float = Field(ge=0, le=86_400_000, description="Milliseconds the whole answer took.")  # noqa: N815


class TrackEventIn(BaseModel):
    """An answer a model gave outside ModelBay (the seed's `trackEvent`)."""

    model_config = ConfigDict(extra="forbid")

    modelId: Text = Field(min_length=1, max_length=200, description="Registry name or repo id.")  # noqa: N815
    userId: Text = Field(min_length=1, max_length=100)  # noqa: N815
    sessionId: Text | None = Field(None, max_length=100)  # noqa: N815
    eventType: Literal["inference_complete", "inference_error"] = "inference_complete"  # noqa: N815
    metadata: TrackMetadataIn


class TrackedOut(BaseModel):
    """Whether the event was recorded (not when the person opted out of measurement), and against which model."""

    recorded: bool
    model: str
    revision: str | None


@analytics.post("/api/analytics/events", status_code=201)
async def track_event(ctx: User, body: TrackEventIn) -> TrackedOut:
    """Record an answer given outside ModelBay, so the model's analytics count it."""
    event = TrackedEvent(model=body.modelId, user_id=body.userId, session_id=body.sessionId,
                         event_type=body.eventType, input_tokens=body.metadata.inputTokens,
                         output_tokens=body.metadata.outputTokens, response_ms=body.metadata.responseTime)
    record = await ctx.call(ctx.runtime.registry.get, body.modelId)
    version = await ctx.call(track, ctx.runtime.analytics, ctx.runtime.registry, event)
    return TrackedOut(recorded=version is not None, model=record.name, revision=version.revision if version else None)


DatasetRef = Annotated[Text, Path(max_length=100, description="Dataset id or name.")]
RowFormat = Literal[FORMATS]  # type: ignore[valid-type]
DATASETS = "/api/training/datasets"


@training_datasets.get(DATASETS)
async def list_datasets(
    ctx: User, all: Annotated[bool, Query(description="Everyone's datasets (admins).")] = False,  # noqa: A002
) -> DatasetListOut:
    """List the caller's datasets (an admin's `all=true`: everyone's), newest first."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("listing everyone's datasets", ctx.role, "admin")
    records = await ctx.call(ctx.runtime.datasets.list, None if all else ctx.actor.key)
    return DatasetListOut(datasets=[DatasetOut.model_validate(r) for r in records])


class _ReportOptions(BaseModel):
    """How a report measures the rows (the same options as `/datasets info`)."""

    model: Text | None = Field(None, max_length=200, description="Installed base model whose tokenizer and chat "
                                                                 "template count the tokens.")
    policy: Literal["drop", "truncate", "fail"] = Field("drop", description="Rows longer than max_length.")
    max_length: int = Field(2048, ge=8, le=1_048_576)
    validation: float = Field(0.1, ge=0.0, le=0.5, description="Share of rows held out for validation.")
    validation_data: Text | None = Field(None, max_length=100, description="A dataset to validate on instead.")
    seed: int = Field(0, ge=0, le=2**31 - 1)


async def _dataset_report(ctx: Context, record: Any, options: _ReportOptions) -> DatasetReportOut:
    validation_data = (await visible(ctx, options.validation_data)).ref if options.validation_data else None
    report = await report_of(ctx, record, model=options.model, policy=options.policy,
                             max_length=options.max_length, validation=options.validation,
                             validation_data=validation_data, seed=options.seed)
    return DatasetReportOut.model_validate(report)


@training_datasets.post(DATASETS, status_code=201)
async def add_dataset(
    ctx: User,
    file: Annotated[UploadFile, File(description="The dataset: .jsonl, .json, .csv, .tsv, .parquet or .txt.")],
    format: Annotated[RowFormat | None,  # noqa: A002 - the option's name
                      Form(description="The rows' format (detected when not given).")] = None,
    columns: Annotated[Text | None, Form(max_length=400, description="field=column pairs, comma separated, e.g. "
                                                                     "prompt=question,completion=answer.")] = None,
    name: Annotated[Text | None, Form(max_length=100, description="A name to use instead of the file's.")] = None,
    model: Annotated[Text | None, Form(max_length=200, description="Installed base model whose tokenizer and chat "
                                                                   "template count the tokens.")] = None,
    policy: Annotated[Literal["drop", "truncate", "fail"], Form(description="Rows longer than max_length.")] = "drop",
    max_length: Annotated[int, Form(ge=8, le=1_048_576)] = 2048,
    validation: Annotated[float, Form(ge=0.0, le=0.5, description="Share of rows held out for validation.")] = 0.1,
    validation_data: Annotated[Text | None, Form(max_length=100, description="A dataset to validate on "
                                                                             "instead.")] = None,
    seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
) -> DatasetReportOut:
    """Add a dataset file (multipart form data) and return its report; the same file again is the same dataset."""
    filename = ctx.runtime.datasets.check(file.filename or "dataset", file.size)
    mapped = _column_map(columns)

    def chunks() -> Iterator[bytes]:
        while block := file.file.read(1 << 20):
            yield block

    record = await ctx.call(ctx.runtime.datasets.add, ctx.actor.key, filename, chunks(), source="api",
                            format=format, columns=mapped, name=name)
    options = _ReportOptions(model=model, policy=policy, max_length=max_length, validation=validation,
                             validation_data=validation_data, seed=seed)
    return await _dataset_report(ctx, record, options)


def _column_map(columns: str | None) -> dict[str, str] | None:
    try:
        return parse_columns(columns) if columns else None
    except ValueError as exc:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "columns"), "input": columns,
                                       "msg": f"Value error, {exc}"}]) from None


@training_datasets.get(DATASETS + "/{dataset}")
async def get_dataset(ctx: User, dataset: DatasetRef, options: Annotated[_ReportOptions, Query()]
                      ) -> DatasetReportOut:
    """A dataset's report: rows, problems with their lines, token lengths with a base model, split and policy."""
    return await _dataset_report(ctx, await visible(ctx, dataset), options)


# -- training jobs --------------------------------------------------------------------------------------------
# The seed's TrainingConfig body (baseModelId, datasetId, parameters, hardware, evaluation: camelCase, as the engine's
# `TrainingRequest` takes it) starts a job; a job is shown with its new model, base, dataset and the config it runs
# (the same body again, every field written out), its latest report and, once finished, its results. Its run's
# files stay on the server: the loss chart is served at its own URL.

JOBS_TRAINING = "/api/training/jobs"


def _plain_values(value: Any) -> Any:
    """Refuse text no database stores anywhere inside a body's nested settings."""
    if isinstance(value, str):
        return _plain(value)
    if isinstance(value, dict):
        return {_plain(str(k)): _plain_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_values(v) for v in value]
    return value


class TrainingJobIn(TrainingRequest):
    """What to fine-tune: the seed's TrainingConfig (camelCase), plus the template it starts from and the new name."""

    base_model_id: Text = Field(min_length=1, max_length=200, description="The installed model to fine-tune.")
    dataset_id: Text = Field(min_length=1, max_length=200, description="Your dataset, by id or name.")
    template: Text = Field(DEFAULT_TEMPLATE, max_length=64, description="The template the settings start from.")
    name: Text | None = Field(None, max_length=96, description="The new model's name (default: <base>-ft-<hex>).")

    @field_validator("parameters", "hardware", "evaluation", mode="after")
    @classmethod
    def _stored(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _plain_values(value)


class TrainingProgressOut(BaseModel):
    """A training job's latest report (a `progress` event of its stream): every measurement may be null."""

    job_id: str
    status: str
    progress: float = Field(description="Share of the steps done, 0 to 1.")
    message: str | None
    phase: str | None = Field(description="preparing, loading, evaluating, training, testing or saving.")
    step: int | None
    total_steps: int | None
    epoch: float | None
    loss: float | None = Field(description="Training loss of the latest step (nats per token).")
    eval_loss: float | None = Field(description="Latest held-out loss.")
    eval_loss_before: float | None = Field(description="The base model's held-out loss.")
    learning_rate: float | None
    tokens_per_s: float | None
    eta: float | None = Field(description="Seconds left at the recent step rate.")
    peak_memory_bytes: int | None
    recent_losses: list[float] = Field(description="The last losses, oldest first (a sparkline's values).")

    @classmethod
    def of(cls, e: ProgressEvent) -> TrainingProgressOut:
        """Translate a training job's progress event."""
        d = TrainingDetail.of(e.detail)
        return cls(job_id=e.job_id, status=e.status, progress=e.progress, message=e.message, phase=d.phase,
                   step=d.step, total_steps=d.total_steps, epoch=d.epoch, loss=d.loss, eval_loss=d.eval_loss,
                   eval_loss_before=d.eval_loss_before, learning_rate=d.learning_rate, tokens_per_s=d.tokens_per_s,
                   eta=d.eta, peak_memory_bytes=d.peak_memory_bytes, recent_losses=list(d.recent_losses or []))


class AnswerOut(BaseModel):
    """A validation prompt answered greedily by the base and the tuned model, with the dataset's answer."""

    prompt: str | None
    reference: str | None
    base: str | None
    tuned: str | None


class TrainingResultOut(BaseModel):
    """What a finished job made and measured (held-out loss and perplexity before and after training)."""

    model: str = Field(description="The new model's registry name.")
    version_id: int
    eval_loss_before: float | None
    eval_loss_after: float | None
    perplexity_before: float | None
    perplexity_after: float | None
    step: int | None
    total_steps: int | None
    resumed_from: int | None = Field(description="The checkpoint's step a resume went on from, if any.")
    train_rows: int | None
    validation_rows: int | None
    tokens: int | None
    runtime_s: float | None
    peak_memory_bytes: int | None
    device: str | None
    precision: str | None
    processes: int | None
    answers: list[AnswerOut]

    @classmethod
    def of(cls, result: dict[str, Any]) -> TrainingResultOut:
        """Read a job's result, leaving its server paths (steps log, chart) out."""
        return cls.model_validate({name: result.get(name) for name in cls.model_fields if name != "answers"}
                                  | {"answers": result.get("answers") or []})


class TrainingJobOut(JobOut):
    """A training job: the model it makes from which base and dataset, with which config, where it stands."""

    name: str = Field(description="The new model's name.")
    base: str
    dataset: str
    run: str = Field(description="The run it belongs to: the id of the job that started it (resumes share it).")
    config: dict[str, Any] = Field(description="The body that asks for exactly this run (camelCase, every field).")
    latest: TrainingProgressOut = Field(description="Its latest report.")
    result: TrainingResultOut | None = Field(description="What it made, once finished.")
    chart_url: str | None = Field(description="The loss chart (PNG), once drawn.")

    @classmethod
    def of(cls, status: TrainingStatus) -> TrainingJobOut:
        """Read a training job's status."""
        job = status.job
        body = TrainingRequest.of(status.config, base_model_id=status.base, dataset_id=str(job.params["dataset"]),
                                  name=status.name)
        return cls(**_job_out(job).model_dump(), name=status.name, base=status.base, dataset=status.dataset,
                   run=status.run, config=body.model_dump(by_alias=True, mode="json"),
                   latest=TrainingProgressOut.of(ProgressEvent(job.id, job.status, job.progress,
                                                               job.progress_detail.message, job.progress_detail)),
                   result=TrainingResultOut.of(job.result) if job.status == "finished" and job.result else None,
                   chart_url=f"{JOBS_TRAINING}/{job.id}/chart.png" if status.chart is not None else None)


class TrainingStartedOut(TrainingJobOut):
    """A queued training job and what pre-flight measured."""

    created: bool = Field(description="False: the same run (same new name) was already queued, and this is it.")
    train_rows: int
    validation_rows: int
    total_steps: int
    memory_bytes: int = Field(description="Memory one training process needs, estimated.")
    precision: str
    where: Literal["gpu", "cpu"]
    notices: list[str] = Field(description="What pre-flight could not check here.")


class TrainingJobListOut(BaseModel):
    """Training jobs, newest first."""

    jobs: list[TrainingJobOut]


_TRAINING_STREAM = {
    200: {"description": "The job (JSON); with `Accept: text/event-stream`, Server-Sent Events instead: `progress` "
                         "(the latest report) at each report while it runs, then `complete` (the job with its result) "
                         "or `error` {error, job_id}; `: ping` comments keep the connection alive.",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TrainingJobOut"}},
                      "text/event-stream": {"schema": {"type": "string"}}}},
}
PING_EVERY = 15.0  # seconds of silence before a stream sends a `: ping` comment


@training_jobs.get(JOBS_TRAINING)
async def list_training_jobs(
    ctx: User,
    active: Annotated[bool | None, Query(description="Only running (true) or only ended (false) jobs.")] = None,
    all: Annotated[bool, Query(description="Everyone's training jobs (admins).")] = False,  # noqa: A002
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> TrainingJobListOut:
    """List the caller's training jobs (an admin's `all=true`: everyone's), newest first."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("listing everyone's training jobs", ctx.role, "admin")
    jobs = await ctx.call(ctx.runtime.training.list, requester=None if all else ctx.actor.key, active=active,
                          limit=limit)
    statuses = [await ctx.call(ctx.runtime.training.status, job.id) for job in jobs]
    return TrainingJobListOut(jobs=[TrainingJobOut.of(s) for s in statuses])


@training_jobs.post(JOBS_TRAINING, status_code=201)
async def start_training_job(ctx: Trainer, body: TrainingJobIn) -> TrainingStartedOut:
    """Fine-tune a model: pre-flight (each refusal one line), then queue the job on the gpu queue."""
    started = await start_job(ctx, body.base_model_id, body.dataset_id, template=body.template,
                              overrides=body.overrides(), name=body.name)
    status = await ctx.call(ctx.runtime.training.status, started.job.id)
    checked = started.preflight
    return TrainingStartedOut(**TrainingJobOut.of(status).model_dump(), created=started.created,
                              train_rows=checked.report.train_rows, validation_rows=checked.report.validation_rows,
                              total_steps=checked.total_steps, memory_bytes=checked.estimate.needed,
                              precision=checked.precision, where=checked.where, notices=list(checked.notices))


@training_jobs.get(JOBS_TRAINING + "/{job_id}", responses=_TRAINING_STREAM, response_model=None)
async def get_training_job(ctx: User, job_id: JobId, request: Request) -> TrainingJobOut | StreamingResponse:
    """A training job; asked for `text/event-stream`, its progress streamed until it ends."""
    status = await ctx.call(ctx.runtime.training.status, job_id)  # a refusal answers as JSON, before any stream
    if "text/event-stream" not in request.headers.get("accept", ""):
        return TrainingJobOut.of(status)
    return _job_stream(ctx, job_id, ctx.runtime.training.status, TrainingProgressOut.of, TrainingJobOut.of,
                       f"Training job `{job_id}` was {{status}}; POST {JOBS_TRAINING}/{job_id}/resume continues it "
                       "from its last checkpoint.")


def _job_stream(ctx: Context, job_id: str, status_of: Callable[[str], Any],
                progress_out: Callable[[ProgressEvent], BaseModel], job_out: Callable[[Any], BaseModel],
                ended: str) -> StreamingResponse:
    """A training or optimization job's stream: `progress` at each report, then `complete` with the job (`job_out`
    of `status_of(job_id)`), or `error` with the job's error or `ended` (its `{status}` filled)."""

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in watch(ctx.runtime.jobs, job_id):
                if not event.terminal:
                    yield _sse("progress", progress_out(event))
            status = await ctx.call(status_of, job_id)
            if status.job.status == "finished":
                yield _sse("complete", job_out(status))
                return
            error = status.job.error or ended.format(status=status.job.status)
            yield _sse("error", StreamErrorOut(error=error, job_id=job_id))
        except Exception as exc:  # noqa: BLE001 - the stream has started: errors become its last event
            yield _sse("error", StreamErrorOut(error=render_error(exc).text, job_id=job_id))

    response = StreamingResponse(_pinged(events()), media_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _sse(event: str, data: BaseModel) -> bytes:
    return format_sse_event(data_str=data.model_dump_json(), event=event)


async def _pinged(events: AsyncIterator[bytes], every: float = PING_EVERY) -> AsyncIterator[bytes]:
    """Events as they come, with a `: ping` comment after each `every` seconds of silence (as FastAPI's own event
    streams); the events' iterator is closed when the client leaves."""
    pending: asyncio.Task[bytes] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield KEEPALIVE_COMMENT
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:  # the client left, or the events ended
        if pending is not None and not pending.done():
            pending.cancel()  # thrown into the events' generator where it waits: its own cleanup runs
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()  # type: ignore[attr-defined]


@training_jobs.get(JOBS_TRAINING + "/{job_id}/chart.png", response_class=Response,
                   responses={200: {"content": {"image/png": {}}, "description": "The loss chart."}})
async def training_chart(ctx: User, job_id: JobId) -> Response:
    """A training job's loss chart (training and held-out loss by step), once drawn: when the run ended or stopped."""
    status = await ctx.call(ctx.runtime.training.status, job_id)
    data = await ctx.call(status.chart.read_bytes) if status.chart is not None else None
    if data is None:
        raise HTTPException(404, f"Training job `{job_id}` has no loss chart yet: it is drawn when the run ends or "
                                 "stops.")
    return Response(data, media_type="image/png")


@training_jobs.post(JOBS_TRAINING + "/{job_id}/resume", status_code=201)
async def resume_training_job(ctx: Trainer, job_id: JobId) -> TrainingJobOut:
    """Continue a canceled or failed training job from its last checkpoint, as a new job of the same run."""
    resumed = await resume_job(ctx, job_id)
    return TrainingJobOut.of(await ctx.call(ctx.runtime.training.status, resumed.id))


@training_jobs.delete(JOBS_TRAINING + "/{job_id}")
async def cancel_training_job(ctx: User, job_id: JobId,
                              force: Annotated[bool, Query(description="Stop it now, without a checkpoint "
                                                                       "(admins).")] = False) -> TrainingJobOut:
    """Cancel a training job: it stops at its next step with a checkpoint (`POST .../resume` goes on from it)."""
    await ctx.call(ctx.runtime.training.status, job_id)  # a training job, or 404 / 409
    await ctx.cancel_job(job_id, force=force)
    return TrainingJobOut.of(await ctx.call(ctx.runtime.training.status, job_id))


# -- optimization jobs ----------------------------------------------------------------------------------------
# The seed's OptimizationConfig body (type, quantization, pruning, export, recipe, targetReduction, preserveAccuracy:
# camelCase, as the engine's `OptimizationRequest` takes it) plus the model, the new name and a dataset starts a job
# (the same one `/optimize` starts); impossible combinations are refused in one line before anything is queued. A job
# is shown with its steps, its latest report and, once finished, the variant's report against its parent (without
# server paths); the report's chart is served at its own URL.

JOBS_OPTIMIZATION = "/api/optimization/jobs"


class OptimizationJobIn(OptimizationRequest):
    """What to optimize: the seed's OptimizationConfig (camelCase), plus the model, the new name and a dataset."""

    model: Text = Field(min_length=1, max_length=200, description="The installed model to optimize.")
    name: Text | None = Field(None, max_length=96, description="The new model's name (default: <model>-<method>).")
    dataset: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        None, description="Your dataset, by id (a number or its digits) or name: held-out and calibration text "
                          "(default: the shipped held-out text).")


class OptimizationProgressOut(BaseModel):
    """An optimization job's latest report (a `progress` event of its stream): every field may be null."""

    job_id: str
    status: str
    progress: float = Field(description="Share of the job done, 0 to 1.")
    message: str | None
    phase: str | None = Field(description="preparing, applying, measuring-parent, measuring or saving.")
    step: int | None = Field(description="The step being applied, from 1.")
    steps: int | None
    method: str | None = Field(description="The step's method, as people read it.")
    step_fraction: float | None = Field(description="How far the step is, 0 to 1.")

    @classmethod
    def of(cls, e: ProgressEvent) -> OptimizationProgressOut:
        """Translate an optimization job's progress event."""
        d = OptimizationDetail.of(e.detail)
        return cls(job_id=e.job_id, status=e.status, progress=e.progress, message=e.message, phase=d.phase,
                   step=d.step, steps=d.steps, method=d.method, step_fraction=d.step_fraction)


class OptimizationResultOut(BaseModel):
    """What a finished job made: the new model and its report against the parent."""

    model: str = Field(description="The new model's registry name.")
    version_id: int | None
    verdict: str | None = Field(description="within budget, over budget (kept, not a drop-in) or no budget.")
    reason: str | None
    report: dict[str, Any] = Field(description="parent and variant measurements, versus (ratios, KL, top-1), budget, "
                                               "held-out text, labels, facts, format.")
    text: str | None = Field(description="The chart's text alternative.")

    @classmethod
    def of(cls, result: dict[str, Any]) -> OptimizationResultOut:
        """Read a job's result, leaving server paths (the chart's) out."""
        return cls(model=str(result.get("name", "")), version_id=result.get("version_id"),
                   verdict=result.get("verdict"), reason=result.get("reason"),
                   report=without_paths(result.get("report") or {}), text=result.get("text"))


class OptimizationJobOut(JobOut):
    """An optimization job: the model it makes from which parent, with which steps, where it stands."""

    name: str = Field(description="The new model's name.")
    parent: str
    steps: list[dict[str, Any]] = Field(description="The checked steps, in order: {method, params}.")
    labels: list[str] = Field(description="Each step as people read it.")
    config: dict[str, Any] = Field(description="The config it was started with (camelCase).")
    latest: OptimizationProgressOut = Field(description="Its latest report.")
    result: OptimizationResultOut | None = Field(description="What it made, once finished.")
    chart_url: str | None = Field(description="The report's chart (PNG), once drawn.")

    @classmethod
    def of(cls, status: OptimizationStatus) -> OptimizationJobOut:
        """Read an optimization job's status."""
        job = status.job
        return cls(**_job_out(job).model_dump(), name=status.name, parent=status.parent, steps=list(status.steps),
                   labels=list(status.labels), config=dict(job.params.get("config") or {}),
                   latest=OptimizationProgressOut.of(ProgressEvent(job.id, job.status, job.progress,
                                                                   job.progress_detail.message, job.progress_detail)),
                   result=OptimizationResultOut.of(status.result) if job.status == "finished" and status.result
                   else None,
                   chart_url=f"{JOBS_OPTIMIZATION}/{job.id}/chart.png" if status.chart is not None else None)


class OptimizationStartedOut(OptimizationJobOut):
    """A queued optimization job and what pre-flight decided."""

    created: bool = Field(description="False: a job making the same model was already queued, and this is it.")
    where: Literal["gpu", "cpu"] = Field(description="The queue it runs on.")
    output: str = Field(description="transformers or onnx.")
    budget: float | bool = Field(description="The perplexity budget in percent; true: the kind's default; false: "
                                             "none.")
    budget_kind: str
    dataset: str | None = Field(description="The dataset it measures on (null: the shipped held-out text).")
    notices: list[str] = Field(description="What pre-flight could not check here.")


class OptimizationJobListOut(BaseModel):
    """Optimization jobs, newest first."""

    jobs: list[OptimizationJobOut]


class RecipeOut(BaseModel):
    """A named list of steps (`recipe` in the body)."""

    name: str
    description: str
    steps: list[dict[str, Any]]


class RecipeListOut(BaseModel):
    """The shipped recipes."""

    recipes: list[RecipeOut]


_OPTIMIZATION_STREAM = {
    200: {"description": "The job (JSON); with `Accept: text/event-stream`, Server-Sent Events instead: `progress` "
                         "(the latest report) at each report while it runs, then `complete` (the job with its report) "
                         "or `error` {error, job_id}; `: ping` comments keep the connection alive.",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OptimizationJobOut"}},
                      "text/event-stream": {"schema": {"type": "string"}}}},
}


@optimization.get("/api/optimization/recipes")
async def list_optimization_recipes(ctx: User) -> RecipeListOut:
    """The shipped recipes and their steps."""
    recipes = await ctx.call(ctx.runtime.optimization.recipes)
    return RecipeListOut(recipes=[RecipeOut(name=r.name, description=r.description,
                                            steps=[s.to_dict() for s in r.steps]) for r in recipes])


@optimization.get(JOBS_OPTIMIZATION)
async def list_optimization_jobs(
    ctx: User,
    active: Annotated[bool | None, Query(description="Only running (true) or only ended (false) jobs.")] = None,
    all: Annotated[bool, Query(description="Everyone's optimization jobs (admins).")] = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> OptimizationJobListOut:
    """List the caller's optimization jobs (an admin's `all=true`: everyone's), newest first."""
    if all and not ctx.has_role("admin"):
        raise NotAllowed("listing everyone's optimization jobs", ctx.role, "admin")
    jobs = await ctx.call(ctx.runtime.optimization.list, requester=None if all else ctx.actor.key, active=active,
                          limit=limit)
    statuses = [await ctx.call(ctx.runtime.optimization.status, job.id) for job in jobs]
    return OptimizationJobListOut(jobs=[OptimizationJobOut.of(s) for s in statuses])


@optimization.post(JOBS_OPTIMIZATION, status_code=201)
async def start_optimization_job(ctx: Trainer, body: OptimizationJobIn) -> OptimizationStartedOut:
    """Optimize a model: pre-flight (each refusal one line), then queue the job (gpu for bitsandbytes, else cpu)."""
    started = await start_optimization(ctx, body.model, body.config(), name=body.name, dataset=body.dataset)
    status = await ctx.call(ctx.runtime.optimization.status, started.job.id)
    plan = started.plan
    return OptimizationStartedOut(**OptimizationJobOut.of(status).model_dump(), created=started.created,
                                  where="gpu" if plan.queue == "gpu" else "cpu", output=plan.output,
                                  budget=plan.budget, budget_kind=plan.budget_kind,
                                  dataset=plan.dataset.name if plan.dataset is not None else None,
                                  notices=list(plan.notices))


@optimization.get(JOBS_OPTIMIZATION + "/{job_id}", responses=_OPTIMIZATION_STREAM, response_model=None)
async def get_optimization_job(ctx: User, job_id: JobId, request: Request) -> OptimizationJobOut | StreamingResponse:
    """An optimization job; asked for `text/event-stream`, its progress streamed until it ends."""
    status = await ctx.call(ctx.runtime.optimization.status, job_id)  # a refusal answers as JSON, before any stream
    if "text/event-stream" not in request.headers.get("accept", ""):
        return OptimizationJobOut.of(status)
    return _job_stream(ctx, job_id, ctx.runtime.optimization.status, OptimizationProgressOut.of,
                       OptimizationJobOut.of, f"Optimization job `{job_id}` was {{status}}; nothing partial was kept.")


@optimization.get(JOBS_OPTIMIZATION + "/{job_id}/chart.png", response_class=Response,
                  responses={200: {"content": {"image/png": {}}, "description": "Size, perplexity and speed of "
                                                                                "the variant and its parent."}})
async def optimization_chart(ctx: User, job_id: JobId) -> Response:
    """An optimization job's chart (size vs perplexity vs speed, parent and variant), once the job finished."""
    status = await ctx.call(ctx.runtime.optimization.status, job_id)
    data = await ctx.call(status.chart.read_bytes) if status.chart is not None else None
    if data is None:
        raise HTTPException(404, f"Optimization job `{job_id}` has no chart: it is drawn when the job finishes.")
    return Response(data, media_type="image/png")


def slack_configured(settings: Settings) -> bool:
    """Whether Slack's HTTP events can be served: they need the bot token and the signing secret."""
    return settings.slack_bot_token is not None and settings.slack_signing_secret is not None


def _slack_route(app: FastAPI, runtime: Runtime, slack: Any) -> None:
    """Serve Slack's signed requests at /slack/events (no bearer token: Slack signs each request instead)."""
    handler = verifier = None
    if slack is not None or slack_configured(runtime.settings):
        from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
        from slack_sdk.signature import SignatureVerifier

        from modelbay.adapters.slack import SlackAdapter

        adapter = slack or SlackAdapter(runtime)
        handler = AsyncSlackRequestHandler(adapter.app)
        secret = adapter.settings.slack_signing_secret
        verifier = SignatureVerifier(secret.get_secret_value()) if secret else None

    @app.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request) -> Any:
        if handler is None:
            return JSONResponse(status_code=503, content={
                "error": "Slack is not configured here: set MODELBAY_SLACK_BOT_TOKEN and MODELBAY_SLACK_SIGNING_SECRET.",
                "type": "SlackNotConfigured", "title": "Not configured"})
        body = await request.body()
        if _ssl_check(request, body):
            return Response(status_code=200)  # Slack's unsigned SSL check: answered here, nothing is dispatched
        if not _from_slack(verifier, request, body):
            return JSONResponse(status_code=401, content={
                "error": "This request is not signed by Slack.", "type": "Unauthorized", "title": "Unauthorized"})
        return await handler.handle(request)


# Slack's headers: a Unix time in seconds and `v0=` with a SHA-256 HMAC in hex.
_SLACK_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SLACK_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def _from_slack(verifier: Any, request: Request, body: bytes) -> bool:
    """Whether the request carries one timestamp and one signature, in Slack's shapes, that sign its body."""
    # Checked before bolt, which parses the body first (a garbled one raised), and in shapes its verifier takes
    # (it raised on a timestamp that is no integer and a body that is no UTF-8): whatever its shape, a 401.
    stamps = request.headers.getlist("x-slack-request-timestamp")
    signatures = request.headers.getlist("x-slack-signature")
    if (verifier is None or len(stamps) != 1 or len(signatures) != 1 or not _SLACK_TIMESTAMP.fullmatch(stamps[0])
            or not _SLACK_SIGNATURE.fullmatch(signatures[0])):
        return False
    try:
        text = body.decode("utf-8")  # all Slack sends
    except UnicodeDecodeError:
        return False
    return verifier.is_valid(text, stamps[0], signatures[0])


def _ssl_check(request: Request, body: bytes) -> bool:
    """Whether this is Slack's SSL check, which comes unsigned: a form of only `ssl_check=1` and a token."""
    if "x-slack-signature" in request.headers:
        return False
    form = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return form.get("ssl_check") == ["1"] and set(form) <= {"ssl_check", "token"}


# -- experiments: A/B tests of model variants ------------------------------------------------------------------------

experiments_api = APIRouter(tags=["experiments"], responses=_ERRORS)


class VariantIn(BaseModel):
    """One variant: a model (its newest installed version) and optional serving parameters and system prompt."""

    model_config = ConfigDict(extra="forbid")

    model: Text = Field(max_length=200)
    name: Text | None = Field(None, max_length=32, description="a, b, c... in order when left out.")
    weight: float = Field(1.0, ge=0, le=1e6, description="Share of traffic, relative to the others.")
    system_prompt: Text | None = Field(None, max_length=4000)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=2**31)


class ExperimentIn(BaseModel):
    """A new experiment; the first variant is the control."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(max_length=64)
    variants: list[VariantIn] = Field(max_length=10)
    metric: Literal["thumbs_up", "response_time"] = "thumbs_up"
    alias: Text | None = Field(None, max_length=64, description="`/chat <alias>` opens it while it runs.")
    alpha: float = Field(0.05, ge=1e-6, le=0.2)
    p95_ms: float | None = Field(None, ge=1, le=1e9, description="Guardrail: highest p95 response time (ms).")
    error_rate: float | None = Field(None, ge=0, le=0.99, description="Guardrail: highest share of failed answers.")


class VariantOut(_Record):
    """A variant with its running totals."""

    id: int
    name: str
    model_name: str
    model_version_id: int
    weight: float
    system_prompt: str | None
    params: dict[str, Any]
    exposures: int
    answers: int
    failures: int
    ups: int
    downs: int


class ExperimentOut(_Record):
    """An experiment and its variants."""

    name: str
    alias: str | None
    metric: str
    status: str
    alpha: float
    guardrails: dict[str, float]
    created_by: str
    created_at: datetime
    ended_at: datetime | None
    winner: str | None = Field(description="The shipped variant's name.")
    variants: list[VariantOut]

    @classmethod
    def of(cls, e: ExperimentRecord) -> ExperimentOut:
        """From the engine's record."""
        return cls.model_validate({**vars(e), "winner": e.winner.name if e.winner else None,
                                   "variants": [vars(v) for v in e.variants]})


class VariantFiguresOut(BaseModel):
    """One variant's figures: its metric with a 95% interval, P(best), expected loss, guardrail breaches."""

    name: str
    value: float | None = Field(description="👍 share (0-1), or mean response time (ms).")
    low: float | None
    high: float | None
    p95_ms: float | None
    error_rate: float | None
    p_best: float | None
    expected_loss: float | None
    breaches: list[str]


class ComparisonOut(BaseModel):
    """A variant against the control: fixed-sample figures and the always-valid (mSPRT) ones."""

    variant: str
    control: str
    difference: float | None
    low: float | None = Field(description="Fixed-sample 95% interval (valid for a single look only).")
    high: float | None
    p_value: float | None = Field(description="Fixed-sample test (valid for a single look only).")
    always_valid_p: float
    sequence_low: float | None = Field(description="mSPRT confidence sequence, valid at any look.")
    sequence_high: float | None
    alpha: float


class VerdictOut(BaseModel):
    """Whether the experiment may stop, why, and the winner if there is one."""

    may_stop: bool
    reason: str
    winner: str | None


class ExperimentStatusOut(BaseModel):
    """An experiment with its figures and verdict."""

    experiment: ExperimentOut
    variants: list[VariantFiguresOut]
    comparisons: list[ComparisonOut]
    srm_p: float | None = Field(description="Chi-square p of the exposures against the split; below 0.001 warns.")
    srm: bool
    verdict: VerdictOut


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and abs(x) != float("inf") else None


def _status_out(found: ExperimentStatus) -> ExperimentStatusOut:
    a = found.analysis
    return ExperimentStatusOut(
        experiment=ExperimentOut.of(found.experiment),
        variants=[VariantFiguresOut(
            name=f.totals.name, value=f.value, low=f.interval.low if f.interval else None,
            high=f.interval.high if f.interval else None, p95_ms=f.totals.p95_ms, error_rate=f.totals.error_rate,
            p_best=f.p_best, expected_loss=f.expected_loss, breaches=list(f.breaches)) for f in a.variants],
        comparisons=[ComparisonOut(
            variant=c.variant, control=c.control, difference=c.difference,
            low=c.interval.low if c.interval else None, high=c.interval.high if c.interval else None,
            p_value=c.p_value, always_valid_p=c.sequential.p_value, sequence_low=_finite_or_none(c.sequential.low),
            sequence_high=_finite_or_none(c.sequential.high), alpha=c.alpha) for c in a.comparisons],
        srm_p=a.srm_p, srm=a.srm, verdict=VerdictOut(**vars(a.verdict)))


ExperimentName = Annotated[Text, Path(max_length=64)]


class ShipIn(BaseModel):
    """Which variant to ship (the statistics' winner when left out)."""

    model_config = ConfigDict(extra="forbid")

    variant: Text | None = Field(None, max_length=32)


@experiments_api.get("/api/experiments")
async def list_experiments(ctx: Viewer, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[ExperimentOut]:
    """Running experiments first, then the most recently ended."""
    return [ExperimentOut.of(e) for e in await ctx.call(ctx.runtime.experiments.list, limit)]


@experiments_api.post("/api/experiments", status_code=201)
async def create_experiment(ctx: Trainer, body: ExperimentIn) -> ExperimentOut:
    """Start an experiment (each variant's model installed; the first variant is the control)."""
    specs = [VariantSpec(**v.model_dump()) for v in body.variants]
    created = await ctx.call(ctx.runtime.experiments.start, body.name, specs, created_by=ctx.actor.key,
                             metric=body.metric, alias=body.alias, alpha=body.alpha, p95_ms=body.p95_ms,
                             error_rate=body.error_rate)
    return ExperimentOut.of(created)


@experiments_api.get("/api/experiments/{name}")
async def experiment_status(ctx: Viewer, name: ExperimentName) -> ExperimentStatusOut:
    """Figures, comparisons with the control, SRM check and whether it may stop (each look is a look)."""
    return _status_out(await ctx.call(ctx.runtime.experiments.status, name))


@experiments_api.post("/api/experiments/{name}/stop")
async def stop_experiment(ctx: Admin, name: ExperimentName) -> ExperimentOut:
    """End it without a winner."""
    return ExperimentOut.of(await ctx.call(ctx.runtime.experiments.stop, name))


@experiments_api.post("/api/experiments/{name}/ship")
async def ship_experiment(ctx: Admin, name: ExperimentName, body: ShipIn | None = None) -> ExperimentOut:
    """Record the winner (or the variant named) and end it; its alias opens the winner from now on."""
    shipped = await ctx.call(ctx.runtime.experiments.ship, name, body.variant if body else None)
    return ExperimentOut.of(shipped.experiment)


# -- arena: blind battles, votes and the leaderboard -----------------------------------------------------------------

arena_api = APIRouter(tags=["arena"], responses=_ERRORS)


class BattleIn(BaseModel):
    """A battle: the prompt both models answer, and optionally a category to draw them from."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text = Field("", max_length=4000, description="Left out or blank: the category's sample prompt, as in chat.")
    category: Category | None = None
    user: Text | None = Field(None, max_length=100, description="Who asks (kept as `api:<user>`; default: the API "
                                                              "caller). Only admins may name a user.")


class SideOut(BaseModel):
    """One side's answer (anonymous) and how it ended."""

    text: str
    status: str
    note: str | None
    output_tokens: int | None
    ttft_ms: float | None
    total_ms: float | None


class BattleOut(BaseModel):
    """A finished battle: both answers, anonymous until a vote."""

    id: int
    category: str = Field(description="The category the pair was drawn from: `any` when none was asked or the one "
                                      "asked had fewer than two models.")
    prompt: str = Field(description="The prompt both answered (the sample prompt when none was given).")
    status: str = Field(description="ready (vote on it) or failed.")
    a: SideOut
    b: SideOut


class VoteIn(BaseModel):
    """A verdict on a battle."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["a", "b", "tie", "both_bad"]
    user: Text | None = Field(None, max_length=100, description="Who votes (one vote per person and battle; kept as "
                                                              "`api:<user>`). Only admins may name a user.")


class ContenderOut(BaseModel):
    """A side revealed."""

    model: str
    name: str = Field(description="Display name.")


class VoteOut(BaseModel):
    """The stored vote and the two models revealed."""

    battle: int
    outcome: str
    a: ContenderOut
    b: ContenderOut
    votes_left_today: int


class StandingOut(BaseModel):
    """A model's line on the leaderboard (Bradley-Terry strength, LMSYS scale, 95% bootstrap interval)."""

    rank: int | None = Field(description="Null: unranked (provisional or separated), listed after the ranked.")
    model: str
    name: str = Field(description="Display name.")
    strength: float
    low: float
    high: float
    battles: int
    wins: int
    ties: int
    win_fraction: float
    both_bad: int
    provisional: bool = Field(description="Fewer battles than the leaderboard's minimum: no interval, no rank.")
    separated: str | None = Field(description="won or lost: it won (lost) every battle, so its strength is unbounded.")


class LeaderboardOut(BaseModel):
    """A category's board (null: all), best first."""

    category: str | None
    votes: int
    rounds: int
    groups: int = Field(description="Strongly connected groups of who beat whom; over 1: gaps between them unmeasured.")
    standings: list[StandingOut]


def _asker(ctx: Context, user: str | None, action: str) -> str:
    """Who acts: the caller, or for an admin caller the user it names (kept as `api:<user>`).

    Raises:
        NotAllowed: a caller below admin named a user (it may act only as itself).
    """
    if not user:
        return ctx.actor.key
    if not ctx.has_role("admin"):
        raise NotAllowed(f"{action} as another user (the user field)", ctx.role, "admin")
    return f"api:{user}"


@arena_api.post("/api/arena/battles", status_code=201)
async def start_battle(ctx: User, body: BattleIn) -> BattleOut:
    """Two installed models drawn at random answer the prompt (both at once); returns when both are done."""
    arena = ctx.runtime.arena
    category = body.category.value if body.category else None
    battle: BattleRecord = await ctx.call(arena.start, _asker(ctx, body.user, "starting a battle"), body.prompt,
                                          category)

    def both() -> dict[str, Any]:
        sides: dict[str, Any] = {side: {"text": ""} for side in ("a", "b")}
        for item in arena.run(battle, battle.prompt):
            if isinstance(item, Piece):
                sides[item.side]["text"] += item.text
            elif isinstance(item, SideDone):
                sides[item.side].update(status=item.status, note=item.note, output_tokens=item.output_tokens,
                                        ttft_ms=item.ttft_ms, total_ms=item.total_ms)
        return sides

    sides = await ctx.call(both)
    done = await ctx.call(arena.get, battle.id)
    return BattleOut(id=done.id, category=done.category, prompt=battle.prompt, status=done.status,
                     a=SideOut(**sides["a"]),
                     b=SideOut(**sides["b"]))


@arena_api.post("/api/arena/battles/{battle}/votes", status_code=201)
async def vote_battle(ctx: User, battle: Annotated[int, Path(ge=1, le=2**31 - 1)], body: VoteIn) -> VoteOut:
    """Vote on a ready battle (one vote per person, a daily cap) and learn which models answered."""
    voted = await ctx.call(ctx.runtime.arena.vote, battle, _asker(ctx, body.user, "voting"), body.outcome)
    b = voted.battle
    return VoteOut(battle=b.id, outcome=voted.outcome, a=ContenderOut(model=b.a.model, name=b.a.label),
                   b=ContenderOut(model=b.b.model, name=b.b.label), votes_left_today=voted.left_today)


@arena_api.get("/api/arena/leaderboard")
async def arena_leaderboard(ctx: Viewer, category: Category | None = None) -> LeaderboardOut:
    """Bradley-Terry strengths with 95% bootstrap intervals, ranks by interval overlap, battles and win shares."""
    board = await ctx.call(ctx.runtime.arena.leaderboard, category.value if category else None)
    return LeaderboardOut(category=board.category, votes=board.votes, rounds=board.rounds, groups=board.groups,
                          standings=[
        StandingOut(rank=s.rank, model=s.model, name=s.label, strength=s.strength, low=s.low, high=s.high,
                    battles=s.battles, wins=s.wins, ties=s.ties, win_fraction=s.win_fraction, both_bad=s.both_bad,
                    provisional=s.provisional, separated=s.separated)
        for s in board.standings])


def create_app(runtime: Runtime, *, slack: Any = None) -> FastAPI:
    """Build the API over one runtime (with Slack's events route, served by `slack` or one built from settings)."""
    app = FastAPI(
        title="ModelBay API", version=__version__,
        description="Find, install and manage open models. Send `Authorization: Bearer <MODELBAY_API_TOKEN>`.",
        openapi_tags=[{"name": "marketplace", "description": "Browse, search, install and uninstall models."},
                      {"name": "jobs", "description": "Long operations and their progress."},
                      {"name": "analytics", "description": "Per-model metrics from answers and ratings."},
                      {"name": "training", "description": "Datasets for fine-tuning and their reports; "
                                                         "fine-tuning jobs, their live progress and results."},
                      {"name": "optimization", "description": "Quantize, prune and export models; each variant's "
                                                             "report against its parent, live progress and chart."},
                      {"name": "system", "description": "Health."}],
    )
    app.state.runtime = runtime
    for router in (system, marketplace, jobs, analytics, training_datasets, training_jobs, optimization,
                   experiments_api, arena_api):  # experiments, arena
        app.include_router(router)
    _slack_route(app, runtime, slack)
    # Starlette answers ModelBayError in the routing layer; Exception only in its outermost middleware.
    app.add_exception_handler(ModelBayError, _handle_error)
    app.add_exception_handler(Exception, _handle_error)
    app.add_exception_handler(HTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_invalid)
    return app
