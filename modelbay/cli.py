"""The `modelbay` command: one subcommand per process (console, api, slack, discord, worker) and db tools."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import typer

from modelbay.config import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from modelbay.engine.db.database import Database
    from modelbay.runtime import Runtime

app = typer.Typer(help="ModelBay: find, install, fine-tune, shrink, serve and rate open models from chat.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema tools.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    """Load settings or exit with the one line that names the bad variable."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"Configuration problem: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _database(settings: Settings) -> Database:
    """Open the configured database or exit with the one line that says which driver to install."""
    from modelbay.engine.db.database import Database
    from modelbay.engine.errors import DatabaseDriverMissing

    try:
        return Database(settings.resolved_database_url)
    except DatabaseDriverMissing as exc:
        raise _fail(str(exc), 2) from None


def _runtime(settings: Settings) -> Runtime:
    """Build the process's runtime, bring the schema and catalog up, and start in-process workers if needed."""
    from modelbay.engine.errors import DatabaseDriverMissing, ModelBayError
    from modelbay.runtime import Runtime

    try:
        runtime = Runtime(settings)
    except DatabaseDriverMissing as exc:
        raise _fail(str(exc), 2) from None
    try:
        runtime.prepare()
    except ModelBayError as exc:
        raise _fail(str(exc)) from None
    runtime.start_embedded_workers()
    return runtime


def _run_until_stopped(runtime: Runtime, main: Callable[[], Awaitable[None]]) -> None:
    """Run an async front end until it ends or Ctrl-C, then release the runtime."""
    import asyncio

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()


@app.command()
def console() -> None:
    """Open the terminal console (the embedded default: SQLite, in-process jobs, no services needed)."""
    from modelbay.adapters.console import ConsoleApp
    from modelbay.bot import Dispatcher
    from modelbay.logs import configure_logging, masked_url

    settings = _settings()
    log_file = configure_logging(settings, to_file=True)
    runtime = _runtime(settings)
    app_ = ConsoleApp(Dispatcher(runtime), history=settings.home / "console_history")
    if app_.interactive:
        jobs = "in-process" if settings.embedded_jobs else f"Redis at {masked_url(settings.redis_url or '')}"
        app_.out.print(f"[bold]ModelBay console[/] · database {runtime.db.engine.url.render_as_string()} · "
                       f"jobs {jobs} · log {log_file}\nType [bold cyan]/help[/] for commands, Tab to complete, "
                       "Ctrl-D to leave.")
    try:
        code = app_.run()
    finally:
        runtime.close()
    raise typer.Exit(code)


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to work, in priority order.")] = "downloads,cpu,gpu",
    burst: Annotated[bool, typer.Option(help="Quit when the queues are empty.")] = False,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host and pid).")] = None,
) -> None:
    """Run an RQ worker for the given queues (needs MODELBAY_REDIS_URL)."""
    settings = _settings()
    metrics_dir = _multiprocess_metrics(settings)  # before prometheus_client is imported (by the runner's imports)
    from redis import Redis
    from rq import Queue

    from modelbay.engine.jobs.kinds import QUEUES
    from modelbay.logs import configure_logging
    from modelbay.workers.runner import install_resources
    from modelbay.workers.worker import Worker

    if not settings.redis_url:
        raise _fail("MODELBAY_REDIS_URL is not set: a worker needs Redis (the console runs jobs in-process).", 2)
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown or not wanted:
        raise _fail(f"Unknown queue {unknown[0] if unknown else '(none)'}: use some of {', '.join(QUEUES)}.", 2)
    configure_logging(settings, to_file=False)
    redis = Redis.from_url(settings.redis_url)
    # No torch or CUDA here: jobs import them in the forked work horse, which frees GPU memory on exit.
    db = _database(settings)
    telemetry = None
    if settings.metrics_port:
        from modelbay.engine.analytics.telemetry import Telemetry, serve_worker_metrics

        telemetry = Telemetry()  # its job runs, observed in the work horses, reach the port through metrics_dir
        serve_worker_metrics(settings.metrics_port, db, redis, metrics_dir)
    install_resources(settings, db, redis, telemetry=telemetry)
    # A short TTL with frequent heartbeats lets the engine tell a dead worker from a busy one within a minute,
    # and a worker take over retry scheduling from a dead one as soon.
    beat = max(5, settings.worker_ttl // 4)
    rq_worker = Worker([Queue(q, connection=redis) for q in wanted], connection=redis, name=name,
                       worker_ttl=settings.worker_ttl, job_monitoring_interval=beat, takeover_interval=beat)
    rq_worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)


def _multiprocess_metrics(settings: Settings) -> str | None:
    """A fresh folder for prometheus-client's multiprocess mode when this worker serves metrics (its forked work
    horses write their job metrics there), named in PROMETHEUS_MULTIPROC_DIR as the library requires."""
    import os
    import tempfile

    if not settings.metrics_port:
        return None
    folder = tempfile.mkdtemp(prefix="modelbay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def _serve_metrics(runtime: Runtime) -> None:
    """Serve the process's Prometheus metrics on MODELBAY_METRICS_PORT when it is set."""
    if runtime.settings.metrics_port:
        runtime.telemetry.serve(runtime.settings.metrics_port)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the schema migrations to MODELBAY_DATABASE_URL."""
    settings = _settings()
    settings.ensure_dirs()
    database = _database(settings)
    database.upgrade(revision)
    typer.echo(f"Database at revision {database.current_revision()}.")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision the database is at."""
    settings = _settings()
    typer.echo(_database(settings).current_revision() or "empty")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
) -> None:
    """Serve the HTTP API (FastAPI; OpenAPI schema at /docs); every request needs MODELBAY_API_TOKEN."""
    import uvicorn

    from modelbay.adapters.api import configured_token, create_app
    from modelbay.logs import configure_logging

    settings = _settings()
    if configured_token(settings) is None:
        raise _fail("MODELBAY_API_TOKEN is not set: the API never runs without a bearer token. Set it and retry.", 2)
    configure_logging(settings, to_file=False)
    runtime = _runtime(settings)
    try:
        # log_config=None keeps our handler, which redacts secrets, for uvicorn's own logs too.
        uvicorn.run(create_app(runtime), host=host, port=port, log_config=None)
    finally:
        runtime.close()


@app.command()
def slack() -> None:
    """Run the Slack app in Socket Mode (no public URL needed; `modelbay api` serves HTTP mode instead)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from modelbay.adapters.slack import SlackAdapter
    from modelbay.logs import configure_logging

    settings = _settings()
    if settings.slack_bot_token is None or settings.slack_app_token is None:
        raise _fail("MODELBAY_SLACK_BOT_TOKEN (xoxb-...) and MODELBAY_SLACK_APP_TOKEN (xapp-...) are needed for Socket "
                    "Mode; see the README's Slack steps. For HTTP mode run `modelbay api` instead.", 2)
    configure_logging(settings, to_file=False)
    runtime = _runtime(settings)
    _serve_metrics(runtime)

    async def run() -> None:
        adapter = SlackAdapter(runtime, socket_mode=True)
        handler = AsyncSocketModeHandler(adapter.app, settings.slack_app_token.get_secret_value())
        await handler.start_async()

    _run_until_stopped(runtime, run)


@app.command()
def discord(
    sync: Annotated[bool, typer.Option("--sync", help="Register the slash commands with Discord, then exit.")] = False,
    guild: Annotated[int | None, typer.Option(help="With --sync: only this server (instant; for development).")] = None,
) -> None:
    """Run the Discord bot (or, with --sync, register its slash commands globally or in one server)."""
    from modelbay.adapters.discord import DiscordAdapter
    from modelbay.logs import configure_logging

    settings = _settings()
    if settings.discord_token is None:
        raise _fail("MODELBAY_DISCORD_TOKEN is not set: copy the bot token from the Discord developer portal "
                    "(README: Discord) and retry.", 2)
    configure_logging(settings, to_file=False)
    runtime = _runtime(settings)
    if not sync:
        _serve_metrics(runtime)

    async def run() -> None:
        adapter = DiscordAdapter(runtime)
        if sync:
            synced = await adapter.sync(guild)
            where = f"server {guild}" if guild else "every server (global commands take up to an hour to appear)"
            typer.echo(f"Registered {len(synced)} commands in {where}.")
            return
        await adapter.start()

    _run_until_stopped(runtime, run)


logging.captureWarnings(True)
