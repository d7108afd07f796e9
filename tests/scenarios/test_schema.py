"""The schema and its migrations, on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

from datetime import timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.analytics import AnalyticsEvent
from modelbay.engine.db.schema.base import Base
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message
from modelbay.engine.db.schema.jobs import JobRow, JobStatus

TABLES = ["alembic_version", "analytics_events", "arena_battles", "arena_votes", "chat_sessions", "datasets",
          "experiment_exposures", "experiment_latency", "experiment_variants", "experiments", "feedback", "jobs",
          "latency_daily", "latency_hourly", "messages", "model_versions", "models", "privacy_optouts", "servers",
          "usage_hourly"]


def _model(name: str = "tiny") -> Model:
    return Model(name=name, display_name=name.title(), repo_id=f"org/{name}", category=Category.CHAT,
                 tags=["small"], parameter_count=7_000_000_000, size_bytes=15_000_000_000)


def test_upgrade_creates_every_table_and_downgrade_removes_them(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.upgrade()
        assert db.table_names() == TABLES
        assert db.current_revision() == "0006"
        db.downgrade("base")
        assert db.table_names() == ["alembic_version"]
        db.upgrade()
        assert db.table_names() == TABLES
    finally:
        db.dispose()


def test_migrations_match_the_orm_models(database: Database) -> None:
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_model_versions_with_lineage_and_checksums(database: Database) -> None:
    with database.session() as session:
        model = _model()
        base = ModelVersion(model=model, revision="main", revision_sha="a" * 40, install_state=InstallState.INSTALLED,
                            files=[{"path": "model.safetensors", "size": 10, "sha256": "b" * 64}])
        tuned = ModelVersion(model=model, revision="ft-1", parent=base, lineage="finetune",
                             lineage_params={"method": "lora", "r": 8})
        session.add_all([model, base, tuned])
    with database.session() as session:
        row = session.scalars(select(Model).where(Model.name == "tiny")).one()
        assert [v.revision for v in row.versions] == ["main", "ft-1"]
        assert row.versions[1].parent.revision_sha == "a" * 40
        assert row.versions[0].files[0]["sha256"] == "b" * 64
        assert row.versions[0].install_state is InstallState.INSTALLED
        assert row.parameter_count == 7_000_000_000  # needs BIGINT on PostgreSQL
        assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timezone.utc.utcoffset(None)


def test_names_and_revisions_are_unique(database: Database) -> None:
    with database.session() as session:
        session.add(_model("dup"))
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(_model("dup"))
    with database.session() as session:
        model = _model("one")
        session.add_all([model, ModelVersion(model=model, revision="main")])
    with pytest.raises(IntegrityError), database.session() as session:
        model = session.scalars(select(Model).where(Model.name == "one")).one()
        session.add(ModelVersion(model=model, revision="main"))


def test_jobs_chat_feedback_and_analytics_rows(database: Database) -> None:
    with database.session() as session:
        model = _model()
        version = ModelVersion(model=model, revision="main")
        session.add_all([model, version])
        session.flush()
        session.add(JobRow(id="abc123", kind="install", queue="downloads", requester="slack:U1",
                           params={"model": "tiny"}, dedup_key="tiny@main"))
        chat = ChatSession(platform="discord", channel_id="c1", thread_id="t1", user_key="discord:9",
                           model_version_id=version.id)
        answer = Message(role="assistant", content=None, tokens=12)
        chat.messages.extend([Message(role="user", content=None, tokens=4), answer])
        session.add(chat)
        session.flush()
        session.add(Feedback(message_id=answer.id, user_key="discord:9", rating=1, reason="helpful"))
        session.add(AnalyticsEvent(event_type="inference_complete", model_version_id=version.id, user_key="discord:9",
                                   session_id=chat.id, backend="vllm", input_tokens=4, output_tokens=12,
                                   ttft_ms=31.5, total_ms=240.0, tokens_per_s=50.0))
    with database.session() as session:
        job = session.get(JobRow, "abc123")
        assert job.status is JobStatus.QUEUED and job.progress == 0.0 and job.params == {"model": "tiny"}
        chat = session.scalars(select(ChatSession)).one()
        assert [m.role for m in chat.messages] == ["user", "assistant"]
        assert session.scalars(select(Feedback)).one().rating == 1
        event = session.scalars(select(AnalyticsEvent)).one()
        assert event.ttft_ms == 31.5 and event.session_id == chat.id

    # Deleting a chat removes its messages and their feedback, and keeps the analytics event.
    with database.session() as session:
        session.delete(session.scalars(select(ChatSession)).one())
    with database.session() as session:
        assert session.scalars(select(Message)).all() == []
        assert session.scalars(select(Feedback)).all() == []
        assert session.scalars(select(AnalyticsEvent)).one().session_id is None


def test_one_rating_per_user_and_answer(database: Database) -> None:
    with database.session() as session:
        model = _model()
        version = ModelVersion(model=model, revision="main")
        chat = ChatSession(platform="slack", channel_id="C1", user_key="slack:U1")
        session.add_all([model, version])
        session.flush()
        chat.model_version_id = version.id
        message = Message(role="assistant")
        chat.messages.append(message)
        session.add(chat)
        session.flush()
        session.add(Feedback(message_id=message.id, user_key="slack:U1", rating=1))
    with pytest.raises(IntegrityError), database.session() as session:
        message_id = session.scalars(select(Message.id)).one()
        session.add(Feedback(message_id=message_id, user_key="slack:U1", rating=-1))
