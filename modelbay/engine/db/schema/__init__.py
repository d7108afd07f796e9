"""Database tables (SQLAlchemy 2.x ORM), one module per area; rows stay inside engine/, other layers get records.

Importing this package registers every table on `Base.metadata` (Alembic and `create_all` read it)."""

from modelbay.engine.db.schema.base import Base, UTCDateTime, enum_column, utcnow
from modelbay.engine.db.schema.catalog import Category, InstallState, Model, ModelVersion
from modelbay.engine.db.schema.jobs import JobRow, JobStatus
from modelbay.engine.db.schema.chat import ChatSession, Feedback, Message, PrivacyOptout
from modelbay.engine.db.schema.analytics import AnalyticsEvent, LatencyDaily, LatencyHourly, UsageHourly
from modelbay.engine.db.schema.serving import Server, ServerState
from modelbay.engine.db.schema.datasets import Dataset
from modelbay.engine.db.schema.experiments import (
    ArenaBattle,
    ArenaVote,
    Experiment,
    ExperimentExposure,
    ExperimentLatency,
    ExperimentVariant,
)

__all__ = [
    "AnalyticsEvent", "ArenaBattle", "ArenaVote", "Base", "Category", "ChatSession", "Dataset", "enum_column",
    "Experiment", "ExperimentExposure", "ExperimentLatency", "ExperimentVariant", "Feedback", "InstallState",
    "JobRow", "JobStatus", "LatencyDaily", "LatencyHourly", "Message", "Model", "ModelVersion", "PrivacyOptout",
    "Server", "ServerState", "UsageHourly", "UTCDateTime", "utcnow",
]
