"""Logging set-up: tracebacks go to the log (a file for the console, stderr for services), secrets never do."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from modelbay.config import Settings

__all__ = ["configure_logging", "masked_url"]


class _RedactingFormatter(logging.Formatter):
    """Formats records, then replaces every configured secret in the whole text (tracebacks included) with ***."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _secrets(settings: Settings) -> list[str]:
    values = [v.get_secret_value() for v in settings.__dict__.values() if isinstance(v, SecretStr)]
    for url in (settings.database_url, settings.redis_url):
        password = urlsplit(url).password if url else None
        if password:
            values.append(password)
    return values


def masked_url(url: str) -> str:
    """Return url with its password replaced by ***, for showing on screen."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def configure_logging(settings: Settings, *, to_file: bool) -> Path | None:
    """Send logs to HOME/logs/modelbay.log (to_file) or stderr; return the log file's path if any."""
    path: Path | None = None
    if to_file:
        path = settings.home / "logs" / "modelbay.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", _secrets(settings)))
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


def route_transformers_logs() -> None:
    """Send transformers' and torch's warnings to our log, without progress bars (call it where transformers is
    imported).

    transformers gives its loggers a stderr handler of its own when imported; its warnings ("mtime may not be
    reliable on this filesystem" while training) would print through the console's output, and bypass the log file.
    """
    from transformers.utils import logging as hf_logging  # extra: ml

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()
    # torch gives its "torch" logger a stderr handler too (torch._logging); its warnings (torchao's deprecations when a
    # quantizer loads) go to our log the same way.
    torch_logger = logging.getLogger("torch")
    for handler in list(torch_logger.handlers):
        torch_logger.removeHandler(handler)
    torch_logger.propagate = True
