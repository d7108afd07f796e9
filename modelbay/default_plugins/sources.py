"""The built-in model sources: the Hugging Face Hub, and a local folder of models (MODELBAY_LOCAL_MODELS_DIR)."""

from __future__ import annotations

from collections.abc import Callable

from modelbay.engine.catalog.sources.base import ModelSource
from modelbay.engine.catalog.sources.hub import HubSource
from modelbay.engine.catalog.sources.local import LocalFolderSource
from modelbay.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def register_sources(register: Callable[[type[ModelSource]], type[ModelSource]]) -> None:
    """Register HubSource ("huggingface") and LocalFolderSource ("local"), searched in that order."""
    register(HubSource)
    register(LocalFolderSource)
