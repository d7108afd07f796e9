"""The one error table: every error a user can meet becomes a Reply here, at the edge."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from modelbay.bot.reply import Reply, Tone
from modelbay.bot.spec import ArgumentInvalid, UnknownCommand
from modelbay.config import SettingsError
from modelbay.engine.errors import (
    CatalogInvalid,
    JobNotCancelable,
    JobNotFound,
    ModelBayError,
    ModelNotFound,
    NotAllowed,
)
from modelbay.engine.jobs import UnknownJobKind

__all__ = ["ERRORS", "render_error"]

log = logging.getLogger("modelbay.errors")


@dataclass(frozen=True)
class ErrorStyle:
    """How one error class is shown."""

    title: str
    tone: Tone = "warning"
    ephemeral: bool = True


ERRORS: dict[type[BaseException], ErrorStyle] = {
    UnknownCommand: ErrorStyle("Unknown command"),
    ArgumentInvalid: ErrorStyle("Check the command"),
    ModelNotFound: ErrorStyle("Model not found"),
    JobNotFound: ErrorStyle("Job not found"),
    JobNotCancelable: ErrorStyle("Nothing to cancel", "info"),
    NotAllowed: ErrorStyle("Not allowed", "error"),
    UnknownJobKind: ErrorStyle("Unknown job kind", "error"),
    CatalogInvalid: ErrorStyle("Catalog problem", "error", ephemeral=False),
    SettingsError: ErrorStyle("Configuration problem", "error", ephemeral=False),
    ModelBayError: ErrorStyle("Something needs attention"),
}


def render_error(exc: BaseException, *, reraise_unknown: bool = False) -> Reply:
    """Turn an error into a one-line Reply; unknown errors are logged with a reference and never shown raw."""
    for cls in type(exc).__mro__:
        style = ERRORS.get(cls)
        if style is not None:
            log.info("user error %s: %s", type(exc).__name__, exc)
            return Reply(text=str(exc), title=style.title, tone=style.tone, ephemeral=style.ephemeral)
    if reraise_unknown:
        raise exc
    ref = secrets.token_hex(3)
    log.error("unexpected error (ref %s)", ref, exc_info=exc)
    return Reply(
        text=f"Something went wrong on our side (ref `{ref}`). It is in the log; try again or tell an admin.",
        title="Unexpected error", tone="error", ephemeral=True,
    )
