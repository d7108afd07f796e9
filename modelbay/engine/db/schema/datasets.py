"""The datasets table: files people added for fine-tuning, stored once by content under HOME/datasets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from modelbay.engine.db.schema.base import Base, utcnow

__all__ = ["Dataset"]


class Dataset(Base):
    """A person's dataset: the file's name and content hash, its format, and what validation found in it.

    The bytes live once per content hash (`HOME/datasets/<sha256>`); a person adding the same bytes again gets
    this row back, and two people adding the same bytes have a row each over one stored file.
    """

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),
        UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)  # the identity that added it, e.g. slack:U123
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(200))  # its suffix says how the file is read
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))  # chat, sharegpt, alpaca, completion, text, text-blocks
    format_given: Mapped[bool] = mapped_column(Boolean, default=False)  # named by the person (else detected)
    columns: Mapped[dict[str, Any]] = mapped_column(default=dict)  # our field -> the file's column
    source: Mapped[str] = mapped_column(String(32))  # console, slack, discord, api, uploads (migrated)
    rows: Mapped[int] = mapped_column(Integer, default=0)  # rows read
    valid_rows: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    kinds: Mapped[dict[str, Any]] = mapped_column(default=dict)  # valid rows per kind: chat, completion, text
    problems: Mapped[dict[str, Any]] = mapped_column(default=dict)  # rows left out per reason
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
