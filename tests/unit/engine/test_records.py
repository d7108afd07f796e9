"""Records built from rows by field name, and the field lists derived from the tables."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from modelbay.engine.catalog.registration import MODEL_FIELDS
from modelbay.engine.catalog.registry import VERSION_FIELDS
from modelbay.engine.catalog.search import DERIVED
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion
from modelbay.engine.records import ModelRecord, VersionRecord, record_fields, record_from_row

NOW = datetime(2025, 1, 2, tzinfo=timezone.utc)


def _version(**values: object) -> ModelVersion:
    return ModelVersion(**{"id": 7, "model_id": 3, "revision": "main", "revision_sha": "abc",
                           "install_state": InstallState.INSTALLED, "local_path": "/store/x", "format": "gguf",
                           "size_bytes": 10, "files": [{"path": "a"}], "parent_version_id": None, "lineage": None,
                           "lineage_params": {}, "installed_at": NOW, **values})


def test_a_row_becomes_its_record_field_by_field() -> None:
    row = _version()
    record = record_from_row(VersionRecord, row)
    assert record == VersionRecord(id=7, revision="main", revision_sha="abc", install_state="installed",
                                   local_path="/store/x", size_bytes=10, parent_version_id=None, lineage=None,
                                   installed_at=NOW, model_id=3, format="gguf", files=[{"path": "a"}],
                                   lineage_params={})
    assert record.files is not row.files  # copied: the record never shares the row's lists


def test_a_stored_null_reads_as_an_empty_container_where_the_field_is_not_optional() -> None:
    record = record_from_row(VersionRecord, _version(files=None, lineage_params=None))
    assert record.files == [] and record.lineage_params == {}


def test_computed_values_win_and_fields_the_row_lacks_keep_their_defaults() -> None:
    row = Model(id=1, name="m", display_name="M", source="catalog", repo_id=None, category=Category.CODE, tags=["x"],
                description="", author=None, license=None, parameter_count=None, size_bytes=None,
                context_length=None, format=None, dtype=None, pipeline_tag=None, gated=False,
                trust_remote_code=False, languages=[], downloads=0, likes=0, memory_bytes=None, performance={},
                requirements={})
    record = record_from_row(ModelRecord, row, versions=[], rating=0.5)
    assert record.category == "code" and record.rating == 0.5 and record.last_used_at is None


def test_a_required_field_the_row_lacks_is_an_error() -> None:
    with pytest.raises(AttributeError, match="has no .id. for VersionRecord"):
        record_from_row(VersionRecord, object())


def test_the_settable_fields_are_the_record_fields_less_what_the_registry_keeps() -> None:
    assert VERSION_FIELDS == record_fields(VersionRecord) - {"id", "revision", "model_id"}
    # speed_source says where tokens_per_s came from when it was read (measured here or the catalog's): not stored.
    assert MODEL_FIELDS == record_fields(ModelRecord) - {"id", "source", "versions", "rating", "last_used_at",
                                                         "speed_source"} - DERIVED
