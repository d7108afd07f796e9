"""The one error table: every error a user can meet becomes a Reply here, at the edge."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelbay.bot.reply import Reply, Tone
from modelbay.config import SettingsError
from modelbay.engine.db.database import database_unavailable
from modelbay.engine.errors import (
    AnswerNotFound,
    BackendFailed,
    BaseModelMissing,
    ConsoleOnly,
    CatalogInvalid,
    CheckpointMissing,
    CudaRequired,
    ChecksumMismatch,
    DatabaseUnavailable,
    DatasetInUse,
    DatasetInvalid,
    DatasetNameTaken,
    DatasetNotFound,
    DatasetUnreadable,
    DiskFull,
    DownloadFailed,
    GatedModel,
    HubUnavailable,
    IncompleteModel,
    InferenceUnavailable,
    InsufficientDisk,
    InvalidId,
    JobNotCancelable,
    JobNotFound,
    ModelBayError,
    ModelInUse,
    ModelNameTaken,
    ModelNotFound,
    ModelStoreUnusable,
    ModelUnloadable,
    NeedsInstall,
    NoChatHere,
    NotAllowed,
    NotFound,
    NotInstalled,
    NotATrainingJob,
    NotAnOptimizationJob,
    ServingUnsupported,
    OptimizationConfigInvalid,
    OptimizationFailed,
    NotResumable,
    QuantizationUnavailable,
    NotServed,
    Refused,
    RemoteCodeRequired,
    RepoNotFound,
    ResumeNameTaken,
    RevisionMissing,
    SchemaOutdated,
    ServerFailed,
    ServerNotRunning,
    TemplateNotFound,
    TemplateRefused,
    TrainingConfigInvalid,
    TrainingNameBusy,
    TrainingMemory,
    UnknownJobKind,
    UnknownPrecision,
    UnsafeRepoFile,
    UnsafeWeights,
    UploadRefused,
    WrongReason,
    one_line,
    shown,
)
from modelbay.engine.errors import (  # experiments
    ExperimentEnded,
    ExperimentInvalid,
    ExperimentModelHidden,
    ExperimentNameTaken,
    ExperimentNotFound,
    NoWinnerYet,
)
from modelbay.engine.errors import SearchTermInvalid  # registry search
from modelbay.engine.errors import (  # arena
    AlreadyVoted,
    ArenaNeedsModels,
    BattleNotFound,
    BattleNotReady,
    VoteCapReached,
)

if TYPE_CHECKING:
    from modelbay.bot.spec import Command

__all__ = ["ERRORS", "ArgumentInvalid", "ErrorStyle", "UnknownCommand", "render_error", "style_of", "user_error"]

log = logging.getLogger("modelbay.errors")
ERROR_CHARS = 1000  # the longest error line shown; every platform shows this much in one message


# -- the bot's own errors: commands and their arguments are a bot concept ----------------------------------------

class UnknownCommand(NotFound):
    """No command by that name; suggests the nearest."""

    def __init__(self, typed: str, suggestion: str | None) -> None:
        self.typed = typed
        self.suggestion = suggestion
        hint = f" Did you mean `{suggestion}`?" if suggestion else ""
        super().__init__(f"Unknown command `{shown(typed)}`.{hint} Type `/help` to see every command.")


class ArgumentInvalid(Refused):
    """An argument is missing or malformed; names it and the expected form."""

    def __init__(self, command: Command, arg: str, problem: str) -> None:
        self.command = command
        self.arg = arg
        self.problem = problem
        super().__init__(f"`{shown(arg)}` {problem}. Usage: `{command.usage}`")


# -- the table ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorStyle:
    """How one error class is shown: a title and tone in chat, a status code over HTTP.

    In the table a field left None is the error's category default (its class attributes, see engine/errors.py);
    `style_of` returns a style with every field filled.
    """

    title: str | None = None
    tone: Tone | None = None
    ephemeral: bool | None = None
    http_status: int | None = None


# Shown as before the categories existed: the generic title, a warning, 400. Candidates for their category's style.
_GENERIC = ErrorStyle(ModelBayError.title, ModelBayError.tone, ModelBayError.ephemeral, ModelBayError.http_status)

# Each class's own title, and where it differs from its category's default, its tone, visibility or status.
ERRORS: dict[type[BaseException], ErrorStyle] = {
    # not found: warning, 404
    UnknownCommand: ErrorStyle("Unknown command"),
    ModelNotFound: ErrorStyle("Model not found"),
    RepoNotFound: ErrorStyle("Model not found"),
    RevisionMissing: ErrorStyle("Revision not found"),
    JobNotFound: ErrorStyle("Job not found"),
    AnswerNotFound: ErrorStyle("Cannot rate that"),
    DatasetNotFound: ErrorStyle("Dataset not found"),
    TemplateNotFound: ErrorStyle("Template not found"),
    NotATrainingJob: ErrorStyle("Not a training job"),
    NotAnOptimizationJob: ErrorStyle("Not an optimization job"),
    ServingUnsupported: ErrorStyle("Not servable by vLLM", "warning"),
    # conflict: info, 409
    JobNotCancelable: ErrorStyle("Nothing to cancel"),
    ModelInUse: ErrorStyle("Model in use", "warning"),
    NotInstalled: ErrorStyle("Not installed"),
    NeedsInstall: ErrorStyle("Not installed"),
    NotServed: ErrorStyle("Not served"),
    ServerNotRunning: ErrorStyle("Not running"),
    NoChatHere: ErrorStyle("No chat here"),
    ModelNameTaken: ErrorStyle("Name taken", "warning"),
    BaseModelMissing: ErrorStyle("Base model missing", "warning"),
    NotResumable: ErrorStyle("Cannot resume"),
    TrainingNameBusy: ErrorStyle("Name taken", "warning"),
    DatasetInUse: ErrorStyle("Dataset in use", "warning"),
    CheckpointMissing: ErrorStyle("No checkpoint", "warning"),
    ResumeNameTaken: ErrorStyle("Cannot resume", "warning"),
    DatasetNameTaken: ErrorStyle("Name taken", "warning"),
    # unavailable: error, 502
    HubUnavailable: ErrorStyle("Hub unreachable"),
    DownloadFailed: ErrorStyle("Download failed"),
    ChecksumMismatch: ErrorStyle("Download corrupted"),
    InsufficientDisk: ErrorStyle("Not enough disk", http_status=507),
    DiskFull: ErrorStyle("Disk full", http_status=507),
    ServerFailed: ErrorStyle("Server failed", ephemeral=False),
    BackendFailed: ErrorStyle("The model failed"),
    InferenceUnavailable: ErrorStyle("Not available here", http_status=501),
    DatabaseUnavailable: ErrorStyle("Database unavailable", http_status=503),
    QuantizationUnavailable: ErrorStyle("4-bit training unavailable", http_status=501),
    # refused: error, 422
    ArgumentInvalid: ErrorStyle("Check the command", "warning"),
    InvalidId: ErrorStyle("Check the name", "warning"),
    WrongReason: ErrorStyle("Check the reason", "warning"),
    NotAllowed: ErrorStyle("Not allowed", http_status=403),
    GatedModel: ErrorStyle("Gated model", "warning", http_status=403),
    UnsafeWeights: ErrorStyle("Refused: unsafe weights"),
    RemoteCodeRequired: ErrorStyle("Refused: remote code"),
    UnsafeRepoFile: ErrorStyle("Refused: unsafe file name"),
    IncompleteModel: ErrorStyle("Incomplete model"),
    ModelUnloadable: ErrorStyle("Model cannot load"),
    TemplateRefused: ErrorStyle("The model's template refused"),
    UploadRefused: _GENERIC,
    DatasetUnreadable: ErrorStyle("Dataset unreadable"),
    DatasetInvalid: ErrorStyle("Dataset not trainable"),
    ConsoleOnly: ErrorStyle("Console only", "warning"),
    UnknownPrecision: _GENERIC,
    TrainingConfigInvalid: ErrorStyle("Check the training settings", "warning"),
    CudaRequired: ErrorStyle("Needs a GPU"),
    TrainingMemory: ErrorStyle("Not enough memory", "warning"),
    OptimizationConfigInvalid: ErrorStyle("Check the optimization settings", "warning"),
    OptimizationFailed: ErrorStyle("Optimization failed"),
    # misconfigured: "Configuration problem", error, shown to all, 500 (DatabaseDriverMissing takes all of it)
    CatalogInvalid: ErrorStyle("Catalog problem"),
    UnknownJobKind: ErrorStyle("Unknown job kind", ephemeral=True),
    SchemaOutdated: _GENERIC,
    ModelStoreUnusable: _GENERIC,
    # arena: battles and votes
    BattleNotFound: ErrorStyle("Battle not found"),
    ArenaNeedsModels: ErrorStyle("Not enough models"),
    BattleNotReady: ErrorStyle("Not ready to vote"),
    AlreadyVoted: ErrorStyle("Already voted"),
    VoteCapReached: ErrorStyle("Daily votes used", "warning"),
    # experiments: A/B tests
    ExperimentNotFound: ErrorStyle("Experiment not found"),
    ExperimentInvalid: ErrorStyle("Check the experiment", "warning"),
    ExperimentModelHidden: ErrorStyle("Model unavailable", "warning"),
    ExperimentNameTaken: ErrorStyle("Name taken", "warning"),
    ExperimentEnded: ErrorStyle("Experiment ended"),
    NoWinnerYet: ErrorStyle("No winner yet"),
    # registry search
    SearchTermInvalid: ErrorStyle("Check the search", "warning"),
    # not a ModelBayError: the settings are read before the engine exists
    SettingsError: ErrorStyle("Configuration problem", "error", ephemeral=False, http_status=500),
}


def user_error(exc: BaseException) -> BaseException:
    """Return the user error an exception stands for: a driver's dropped-connection error is DatabaseUnavailable."""
    return database_unavailable(exc) or exc


def style_of(exc: BaseException) -> ErrorStyle | None:
    """Return how an error is shown, or None if it is not a user error.

    Each field is the table's entry for the nearest listed class, else the error's category default.
    """
    cls = type(user_error(exc))
    listed = next((ERRORS[c] for c in cls.__mro__ if c in ERRORS), None)
    if listed is None and not issubclass(cls, ModelBayError):
        return None
    listed = listed or ErrorStyle()
    default = cls if issubclass(cls, ModelBayError) else ModelBayError
    return ErrorStyle(
        title=default.title if listed.title is None else listed.title,
        tone=default.tone if listed.tone is None else listed.tone,
        ephemeral=default.ephemeral if listed.ephemeral is None else listed.ephemeral,
        http_status=default.http_status if listed.http_status is None else listed.http_status,
    )


def render_error(exc: BaseException, *, reraise_unknown: bool = False) -> Reply:
    """Turn an error into a one-line Reply; unknown errors are logged with a reference and never shown raw."""
    if isinstance(user_error(exc), DatabaseUnavailable):
        log.warning("database unavailable", exc_info=exc)  # the driver's own words stay in the log
        exc = user_error(exc)
    style = style_of(exc)
    if style is not None:
        log.info("user error %s: %s", type(exc).__name__, exc)
        # The classes echo input through shown(); this bounds a message that still slipped a line break or a
        # megabyte through (an exception's reason, an extension's error).
        return Reply(text=one_line(str(exc), ERROR_CHARS), title=style.title, tone=style.tone,
                     ephemeral=style.ephemeral)
    if reraise_unknown:
        raise exc
    ref = secrets.token_hex(3)
    log.error("unexpected error (ref %s)", ref, exc_info=exc)
    return Reply(
        text=f"Something went wrong on our side (ref `{ref}`). It is in the log; try again or tell an admin.",
        title="Unexpected error", tone="error", ephemeral=True,
    )
