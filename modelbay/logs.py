"""Logging set-up: tracebacks go to the log (a file for the console, stderr for services), secrets never do."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from pydantic import SecretStr

from modelbay.config import Settings

__all__ = ["configure_logging"]


class _RedactSecrets(logging.Filter):
    """Replaces every configured secret in a record's text with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            if any(s in message for s in self._secrets):
                for secret in self._secrets:
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
        return True


def configure_logging(settings: Settings, *, to_file: bool) -> Path | None:
    """Send logs to HOME/logs/modelbay.log (to_file) or stderr; return the log file's path if any."""
    secrets = [v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr)]
    path: Path | None = None
    if to_file:
        path = settings.home / "logs" / "modelbay.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # huggingface_hub adds a stderr handler of its own when imported: its warnings belong in our log instead.
    import huggingface_hub.utils.logging  # noqa: F401 - import first, so its handler exists to remove

    hub_logger = logging.getLogger("huggingface_hub")
    for own in list(hub_logger.handlers):
        hub_logger.removeHandler(own)
    hub_logger.propagate = True
    return path
