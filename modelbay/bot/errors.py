"""The one error table: every error a user can meet becomes a Reply here, at the edge."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from modelbay.bot.reply import Reply, Tone
from modelbay.bot.spec import ArgumentInvalid, UnknownCommand
from modelbay.config import SettingsError
from modelbay.engine.db.database import database_unavailable
from modelbay.engine.errors import (
    AnswerNotFound,
    BackendFailed,
    TemplateRefused,
    NeedsInstall,
    NoChatHere,
    NotServed,
    ServerFailed,
    ServerNotRunning,
    WrongReason,
    CatalogInvalid,
    ChecksumMismatch,
    DiskFull,
    DownloadFailed,
    GatedModel,
    HubUnavailable,
    InsufficientDisk,
    JobNotCancelable,
    JobNotFound,
    ModelBayError,
    ModelInUse,
    ModelNotFound,
    NotAllowed,
    NotInstalled,
    RemoteCodeRequired,
    RepoNotFound,
    RevisionMissing,
    UnsafeWeights,
    IncompleteModel,
    UnsafeRepoFile,
    one_line,
    DatabaseDriverMissing,
    DatabaseUnavailable,
    ModelUnloadable,
)
from modelbay.engine.ids import InvalidId
from modelbay.engine.inference.backends.base import InferenceUnavailable
from modelbay.engine.jobs.jobs import UnknownJobKind

__all__ = ["ERRORS", "ErrorStyle", "render_error", "style_of", "user_error"]

log = logging.getLogger("modelbay.errors")
ERROR_CHARS = 1000  # the longest error line shown; every platform shows this much in one message


@dataclass(frozen=True)
class ErrorStyle:
    """How one error class is shown: a title and tone in chat, a status code over HTTP."""

    title: str
    tone: Tone = "warning"
    ephemeral: bool = True
    http_status: int = 400


ERRORS: dict[type[BaseException], ErrorStyle] = {
    UnknownCommand: ErrorStyle("Unknown command", http_status=404),
    ArgumentInvalid: ErrorStyle("Check the command", http_status=422),
    InvalidId: ErrorStyle("Check the name", http_status=422),
    ModelNotFound: ErrorStyle("Model not found", http_status=404),
    RepoNotFound: ErrorStyle("Model not found", http_status=404),
    RevisionMissing: ErrorStyle("Revision not found", http_status=404),
    JobNotFound: ErrorStyle("Job not found", http_status=404),
    JobNotCancelable: ErrorStyle("Nothing to cancel", "info", http_status=409),
    NotAllowed: ErrorStyle("Not allowed", "error", http_status=403),
    GatedModel: ErrorStyle("Gated model", http_status=403),
    UnsafeWeights: ErrorStyle("Refused: unsafe weights", "error", http_status=422),
    RemoteCodeRequired: ErrorStyle("Refused: remote code", "error", http_status=422),
    InsufficientDisk: ErrorStyle("Not enough disk", "error", http_status=507),
    DiskFull: ErrorStyle("Disk full", "error", http_status=507),
    HubUnavailable: ErrorStyle("Hub unreachable", "error", http_status=502),
    ChecksumMismatch: ErrorStyle("Download corrupted", "error", http_status=502),
    DownloadFailed: ErrorStyle("Download failed", "error", http_status=502),
    ModelInUse: ErrorStyle("Model in use", http_status=409),
    NotInstalled: ErrorStyle("Not installed", "info", http_status=409),
    NeedsInstall: ErrorStyle("Not installed", "info", http_status=409),
    NotServed: ErrorStyle("Not served", "info", http_status=409),
    ServerNotRunning: ErrorStyle("Not running", "info", http_status=409),
    ServerFailed: ErrorStyle("Server failed", "error", ephemeral=False, http_status=502),
    BackendFailed: ErrorStyle("The model failed", "error", http_status=502),
    TemplateRefused: ErrorStyle("The model's template refused", "error", http_status=422),
    InferenceUnavailable: ErrorStyle("Not available here", "error", http_status=501),
    NoChatHere: ErrorStyle("No chat here", "info", http_status=409),
    AnswerNotFound: ErrorStyle("Cannot rate that", http_status=404),
    WrongReason: ErrorStyle("Check the reason", http_status=422),
    UnknownJobKind: ErrorStyle("Unknown job kind", "error", http_status=500),
    CatalogInvalid: ErrorStyle("Catalog problem", "error", ephemeral=False, http_status=500),
    SettingsError: ErrorStyle("Configuration problem", "error", ephemeral=False, http_status=500),
    IncompleteModel: ErrorStyle("Incomplete model", "error", http_status=422),
    UnsafeRepoFile: ErrorStyle("Refused: unsafe file name", "error", http_status=422),
    DatabaseUnavailable: ErrorStyle("Database unavailable", "error", http_status=503),
    DatabaseDriverMissing: ErrorStyle("Configuration problem", "error", ephemeral=False, http_status=500),
    ModelUnloadable: ErrorStyle("Model cannot load", "error", http_status=422),
    ModelBayError: ErrorStyle("Something needs attention"),
}


def user_error(exc: BaseException) -> BaseException:
    """Return the user error an exception stands for: a driver's dropped-connection error is DatabaseUnavailable."""
    return database_unavailable(exc) or exc


def style_of(exc: BaseException) -> ErrorStyle | None:
    """Return the table's style for an error (its nearest listed class), or None if it is not a user error."""
    for cls in type(user_error(exc)).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None


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
