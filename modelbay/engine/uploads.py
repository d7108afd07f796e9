"""Uploaded files (datasets for fine-tuning): checked, stored under HOME/uploads per person, listed back.

A file arrives from a platform (a Slack DM or upload form, a Discord attachment) as chunks; it is written to a
temporary name, counted against MODELBAY_UPLOAD_MAX_BYTES as it streams and hashed, and only then renamed into
place with a small JSON record beside it. The training issue reads datasets from here.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from modelbay.config import Settings
from modelbay.engine.errors import UploadRefused
from modelbay.engine.units import human_bytes

__all__ = ["DATASET_SUFFIXES", "UploadRecord", "Uploads"]

DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class UploadRecord:
    """A stored upload: its id, owner, original name, size, content hash and where it came from."""

    id: str
    owner: str
    filename: str
    size_bytes: int
    sha256: str
    source: str
    created_at: str
    path: str


class Uploads:
    """Stores, lists and finds the files people upload."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.home / "uploads"
        self.max_bytes = settings.upload_max_bytes

    def check(self, filename: str, size: int | None) -> str:
        """Refuse a file before fetching it when its kind or announced size is wrong; return the name stored.

        Raises:
            UploadRefused: it is not a dataset file, or it is larger than MODELBAY_UPLOAD_MAX_BYTES.
        """
        base = Path(filename.replace("\\", "/")).name
        name = _SAFE_NAME.sub("_", base).strip("._")[:100]
        suffix = Path(name).suffix.lower()
        if not name or suffix not in DATASET_SUFFIXES:
            raise UploadRefused(filename, f"datasets are {', '.join(DATASET_SUFFIXES)} files; convert it and upload again.")
        if size is not None and size > self.max_bytes:
            raise UploadRefused(filename, f"it is {human_bytes(size)} and the limit is {human_bytes(self.max_bytes)} "
                                          "(MODELBAY_UPLOAD_MAX_BYTES).")
        return name

    def save(self, owner: str, filename: str, chunks: Iterable[bytes], *, source: str) -> UploadRecord:
        """Write a file streamed as chunks, refusing it (and keeping nothing) once it passes the size limit.

        Raises:
            UploadRefused: it is not a dataset file, is empty, or passes MODELBAY_UPLOAD_MAX_BYTES.
        """
        name = self.check(filename, None)
        folder = self._folder(owner)
        folder.mkdir(parents=True, exist_ok=True)
        upload_id = secrets.token_hex(6)
        partial = folder / f".{upload_id}.part"
        digest, size = hashlib.sha256(), 0
        try:
            with partial.open("wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise UploadRefused(filename, f"it is larger than the limit of {human_bytes(self.max_bytes)} "
                                                      "(MODELBAY_UPLOAD_MAX_BYTES).")
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise UploadRefused(filename, "it is empty.")
            final = folder / f"{upload_id}_{name}"
            partial.rename(final)
        finally:
            partial.unlink(missing_ok=True)
        record = UploadRecord(id=upload_id, owner=owner, filename=name, size_bytes=size, sha256=digest.hexdigest(),
                              source=source, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              path=str(final))
        (folder / f"{upload_id}.json").write_text(json.dumps(asdict(record)))
        return record

    def list(self, owner: str) -> list[UploadRecord]:
        """This person's uploads, newest first."""
        folder = self._folder(owner)
        records = [UploadRecord(**json.loads(p.read_text())) for p in folder.glob("*.json")] if folder.is_dir() else []
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def forget(self, owner: str) -> int:
        """Delete every upload of this person; return how many there were."""
        records = self.list(owner)
        folder = self._folder(owner)
        for path in folder.glob("*") if folder.is_dir() else []:
            path.unlink()
        if folder.is_dir():
            folder.rmdir()
        return len(records)

    def _folder(self, owner: str) -> Path:
        # Identities hold ':' and platform ids; a hash keeps every owner's folder name safe and fixed-length.
        return self.root / hashlib.sha256(owner.encode()).hexdigest()[:16]
