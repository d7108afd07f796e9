"""Model sources: where models are found and fetched from. Built-ins: the Hugging Face Hub and a local folder."""

from modelbay.engine.catalog.sources.base import (
    ModelSource,
    RemoteFile,
    RemoteModel,
    SOURCES,
    guess_category,
    register_source,
)
from modelbay.engine.catalog.sources.hub import HubSource
from modelbay.engine.catalog.sources.local import LocalFolderSource

__all__ = [
    "guess_category", "HubSource", "LocalFolderSource", "ModelSource", "register_source", "RemoteFile", "RemoteModel",
    "SOURCES",
]
