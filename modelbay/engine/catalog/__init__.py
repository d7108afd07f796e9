"""The catalog: the registry of models and versions, ranked search, registration of hub models, the shipped
curated catalog, discovery across the registry and model sources, and the sources themselves."""

from modelbay.engine.catalog.registry import Registry
from modelbay.engine.catalog.registration import MODEL_FIELDS, Registration
from modelbay.engine.catalog.discovery import Discovery, SearchHit
from modelbay.engine.catalog.curated import CatalogEntry, load_catalog
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
    "CatalogEntry", "Discovery", "guess_category", "HubSource", "load_catalog", "LocalFolderSource", "MODEL_FIELDS",
    "ModelSource", "register_source", "Registration", "Registry", "RemoteFile", "RemoteModel", "SearchHit", "SOURCES",
]
