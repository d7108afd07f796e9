"""The `Datasets` service: files people add for fine-tuning, stored once by content, listed, read and reported on.

A file arrives as chunks (a platform download, a console path, a REST upload); it is written to a temporary name
under `HOME/datasets/.incoming`, counted against MODELBAY_UPLOAD_MAX_BYTES while it streams and hashed, then kept
as `HOME/datasets/<sha256>`, once, however many people add it. Each person gets one `datasets` row per content:
adding the same bytes again returns that row. Every row of the file is read when it is added (`validation.py`),
so the row counts, kinds and problems per reason are in the row; the full report (token lengths with a model's
tokenizer, the policy, the split) is built on demand.

Files the old `uploads` store kept (`HOME/uploads/<owner hash>/`) become datasets the first time this service is
used; one that cannot be read as a dataset stays where it is, logged, and `forget` still removes it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from modelbay.config import Settings
from modelbay.engine.datasets.formats import Format
from modelbay.engine.datasets.examples import Example
from modelbay.engine.datasets.readers import SUFFIXES
from modelbay.engine.datasets.records import DatasetRecord, DatasetReport
from modelbay.engine.datasets.report import build
from modelbay.engine.datasets.split import Split, split
from modelbay.engine.datasets.tokens import Policy
from modelbay.engine.datasets.validation import Validation, validate
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.datasets import Dataset
from modelbay.engine.errors import DatasetNameTaken, DatasetNotFound, DatasetUnreadable, UploadRefused, shown
from modelbay.engine.records import record_from_row
from modelbay.engine.units import human_bytes

__all__ = ["Datasets", "owner_folder"]

log = logging.getLogger(__name__)

_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_CHUNK = 1 << 20


def owner_folder(root: Path, owner: str) -> Path:
    """The old uploads store's folder of one person (a hash keeps every identity's folder name safe)."""
    return root / hashlib.sha256(owner.encode()).hexdigest()[:16]


class Datasets:
    """Stores, lists, reads, reports on and deletes datasets."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.root = settings.home / "datasets"
        self.uploads = settings.home / "uploads"  # the store datasets replace, migrated on first use
        self.max_bytes = settings.upload_max_bytes
        self.db = db
        self._migration = threading.RLock()
        self._migrated = False

    # -- adding ----------------------------------------------------------------------------------------------------
    def check(self, filename: str, size: int | None) -> str:
        """Refuse a file before fetching it when its kind or announced size is wrong; return the name stored.

        Raises:
            UploadRefused: it is not a dataset file, or it is larger than MODELBAY_UPLOAD_MAX_BYTES.
        """
        base = Path(filename.replace("\\", "/")).name
        name = _SAFE_FILENAME.sub("_", base).strip("._")[:100]
        if not name or Path(name).suffix.lower() not in SUFFIXES:
            raise UploadRefused(filename, f"datasets are {', '.join(SUFFIXES)} files; convert it and upload again.")
        if size is not None and size > self.max_bytes:
            raise UploadRefused(filename, f"it is {human_bytes(size)} and the limit is {human_bytes(self.max_bytes)} "
                                          "(MODELBAY_UPLOAD_MAX_BYTES).")
        return name

    def add(self, owner: str, filename: str, chunks: Iterable[bytes], *, source: str,
            format: Format | None = None, columns: Mapping[str, str] | None = None,  # noqa: A002 - option name
            name: str | None = None) -> DatasetRecord:
        """Store a file streamed as chunks and read every row of it; the same bytes again return the same dataset.

        `format` names the row format instead of detecting it and `columns` maps our fields to the file's columns;
        given for a file this person already added, they replace the ones it was read with.

        Raises:
            UploadRefused: not a dataset file, empty, or past MODELBAY_UPLOAD_MAX_BYTES (nothing is kept).
            DatasetUnreadable: no rows, or no row in a known format (nothing is kept).
            DatasetNameTaken: this person has another dataset with that name.
        """
        self._migrate()
        return self._add(owner, filename, chunks, source=source, format=format, columns=columns, name=name)

    def _add(self, owner: str, filename: str, chunks: Iterable[bytes], *, source: str, format: Format | None,
             columns: Mapping[str, str] | None, name: str | None, created_at: datetime | None = None
             ) -> DatasetRecord:
        stored = self.check(filename, None)
        if name is not None and (not _NAME.fullmatch(name) or name.isdigit()):
            raise UploadRefused(filename, f"the name `{shown(name)}` is not usable: use letters, digits, `.`, `_` "
                                          "or `-` (not only digits: those are ids), at most 100 characters.")
        sha256, size = self._store(filename, chunks)
        try:
            validation = validate(self.root / sha256, stored, format=format, columns=columns)
        except DatasetUnreadable:
            self._discard_unused(sha256)
            raise
        values: dict[str, Any] = dict(
            filename=stored, size_bytes=size, format=validation.format, format_given=format is not None,
            columns=dict(columns or {}), rows=validation.rows, valid_rows=len(validation.examples),
            duplicates=len(validation.duplicates), kinds=validation.kinds, problems=validation.problem_counts)
        write = functools.partial(self._write, owner, sha256, values, source=source, name=name,
                                  created_at=created_at, reread=format is not None or bool(columns))
        try:
            try:
                return write()
            except IntegrityError:
                # Added at the same moment: the same bytes by the same person (theirs stands), or another file
                # that took the name first (the next free name is found again).
                return self._find(owner, sha256) or write()
        except BaseException:
            self._discard_unused(sha256)  # a name taken, the database gone: no file is kept without a dataset
            raise

    def _write(self, owner: str, sha256: str, values: dict[str, Any], *, source: str, name: str | None,
               created_at: datetime | None, reread: bool) -> DatasetRecord:
        with self.db.session() as session:
            row = session.scalars(select(Dataset).where(Dataset.owner == owner, Dataset.sha256 == sha256)).first()
            if row is not None:
                if reread:  # read again as asked (another format or column map)
                    for key, value in values.items():
                        setattr(row, key, value)
                if name is not None and name != row.name:
                    self._check_name(session, owner, name, row.id)
                    row.name = name
                session.flush()
                return self._record(row)
            if name is not None:
                self._check_name(session, owner, name, None)
            row = Dataset(owner=owner, sha256=sha256, source=source,
                          name=name or self._free_name(session, owner, values["filename"]), **values)
            if created_at is not None:
                row.created_at = created_at
            session.add(row)
            session.flush()
            return self._record(row)

    @staticmethod
    def _check_name(session: Any, owner: str, name: str, own_id: int | None) -> None:
        taken = session.scalars(select(Dataset).where(Dataset.owner == owner, Dataset.name == name)).first()
        if taken is not None and taken.id != own_id:
            raise DatasetNameTaken(name, taken.id)

    @staticmethod
    def _free_name(session: Any, owner: str, filename: str) -> str:
        """The file's stem made a usable name, with -2, -3, … when this person already has one by that name."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).strip("._-")[:90]
        base = stem if stem and not stem.isdigit() and _NAME.fullmatch(stem) else "dataset"
        taken = set(session.scalars(select(Dataset.name).where(
            Dataset.owner == owner, or_(Dataset.name == base, Dataset.name.like(f"{base}-%")))))
        return next(n for n in (base, *(f"{base}-{i}" for i in range(2, len(taken) + 3))) if n not in taken)

    def _store(self, filename: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Write the chunks under the size limit, hashing them; keep them as HOME/datasets/<sha256> (once)."""
        incoming = self.root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        partial = incoming / f"{secrets.token_hex(8)}.part"
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
            sha256 = digest.hexdigest()
            final = self.root / sha256
            if not final.exists():
                partial.replace(final)  # atomic: readers never see a half-written file
            return sha256, size
        finally:
            partial.unlink(missing_ok=True)

    def _discard_unused(self, sha256: str) -> None:
        with self.db.session() as session:
            used = session.scalars(select(Dataset.id).where(Dataset.sha256 == sha256).limit(1)).first()
        if used is None:
            (self.root / sha256).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------------------------------
    def list(self, owner: str | None = None) -> list[DatasetRecord]:
        """Datasets (one person's, or everyone's), newest first."""
        self._migrate()
        query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc())
        if owner is not None:
            query = query.where(Dataset.owner == owner)
        with self.db.session() as session:
            return [self._record(row) for row in session.scalars(query)]

    def get(self, ref: str | int, *, owner: str | None = None) -> DatasetRecord:
        """A dataset by id, or by name (this owner's when given, else the newest of that name).

        Raises:
            DatasetNotFound: no dataset has that id or name.
        """
        self._migrate()
        text = str(ref).strip().removeprefix("#")
        with self.db.session() as session:
            if text.isdigit():
                row = session.get(Dataset, int(text)) if len(text) < 19 else None
            else:
                query = select(Dataset).where(Dataset.name == text)
                if owner is not None:
                    query = query.where(Dataset.owner == owner)
                row = session.scalars(query.order_by(Dataset.created_at.desc(), Dataset.id.desc())).first()
            if row is None:
                raise DatasetNotFound(text)
            return self._record(row)

    def read(self, ref: str | int | DatasetRecord) -> Validation:
        """Every row of a dataset read again: valid rows and problems, as when it was added.

        Raises:
            DatasetNotFound: no such dataset.
            DatasetUnreadable: its file is gone from HOME/datasets.
        """
        record = ref if isinstance(ref, DatasetRecord) else self.get(ref)
        path = Path(record.path)
        if not path.is_file():
            raise DatasetUnreadable(record.filename, f"its stored file is missing from {self.root.name}/; add it "
                                                     "again")
        # Read in the format it was stored with (detection would find the same one, reading twice).
        read = validate(path, record.filename, format=record.format, columns=record.columns)  # type: ignore[arg-type]
        return dataclasses.replace(read, detected=not record.format_given)

    def examples(self, ref: str | int) -> list[Example]:
        """The valid rows of a dataset, in file order.

        Raises:
            DatasetNotFound: no such dataset.
            DatasetUnreadable: its file is gone.
        """
        return list(self.read(ref).examples)

    def split(self, ref: str | int, *, validation: float = 0.1, seed: int = 0,
              validation_ref: str | int | None = None) -> Split:
        """The valid rows split into (train, validation): a seeded fraction held out, or another dataset's rows.

        Raises:
            DatasetNotFound: no such dataset (or validation dataset).
            DatasetUnreadable: a file is gone.
        """
        held = self.examples(validation_ref) if validation_ref is not None else None
        return split(self.examples(ref), validation, seed, held)

    def report(self, ref: str | int, *, tokenizer: Any = None, model: str | None = None, max_length: int = 2048,
               policy: Policy = "drop", validation: float = 0.1, seed: int = 0,
               validation_ref: str | int | None = None) -> DatasetReport:
        """The dataset's report, its rows measured with `tokenizer` (a transformers tokenizer; `model` names it).

        Raises:
            DatasetNotFound: no such dataset (or validation dataset).
            DatasetUnreadable: a file is gone.
        """
        record = self.get(ref)
        read = self.read(record)
        if validation_ref is not None:
            other = self.get(validation_ref)
            held: list[Example] | None = list(self.read(other).examples)
            source = f"dataset #{other.id} ({other.name})"
        else:
            held = None
            source = f"{validation:.0%} held out, seed {seed}"
        parts = split(read.examples, validation, seed, held)
        return build(record, read, parts, tokenizer=tokenizer, model=model, max_length=max_length, policy=policy,
                     validation_from=source, seed=seed, fraction=validation if held is None else 0.0)

    # -- removing --------------------------------------------------------------------------------------------------
    def delete(self, ref: str | int) -> DatasetRecord:
        """Remove a dataset; its stored file goes when no other dataset has the same bytes.

        Raises:
            DatasetNotFound: no such dataset.
        """
        record = self.get(ref)
        with self.db.session() as session:
            row = session.get(Dataset, record.id)
            if row is not None:
                session.delete(row)
        self._discard_unused(record.sha256)
        return record

    def forget(self, owner: str) -> int:
        """Delete every dataset of this person (and any old upload not migrated); return how many there were."""
        records = self.list(owner)
        for record in records:
            try:
                self.delete(record.id)
            except DatasetNotFound:  # deleted meanwhile
                pass
        left = owner_folder(self.uploads, owner)
        old = [p for p in left.glob("*.json")] if left.is_dir() else []
        for path in left.glob("*") if left.is_dir() else []:
            path.unlink(missing_ok=True)
        if left.is_dir():
            left.rmdir()
        return len(records) + len(old)

    # -- records and the old uploads -------------------------------------------------------------------------------
    def _record(self, row: Dataset) -> DatasetRecord:
        return record_from_row(DatasetRecord, row, path=str(self.root / row.sha256))

    def _find(self, owner: str, sha256: str) -> DatasetRecord | None:
        with self.db.session() as session:
            row = session.scalars(select(Dataset).where(Dataset.owner == owner, Dataset.sha256 == sha256)).first()
            return self._record(row) if row is not None else None

    def _migrate(self) -> None:
        """Turn the old uploads store's files into datasets, once per process (other processes may race: fine)."""
        if self._migrated:
            return
        with self._migration:
            if self._migrated:
                return
            self._migrated = True  # set first: adding a migrated file comes back through here
            if not self.uploads.is_dir():
                return
            for meta in sorted(self.uploads.glob("*/*.json")):
                self._migrate_one(meta)

    def _migrate_one(self, meta: Path) -> None:
        try:
            info = json.loads(meta.read_text())
            path = Path(info.get("path") or meta.with_name(f"{info['id']}_{info['filename']}"))
            created = datetime.fromisoformat(info["created_at"]) if info.get("created_at") else None
            owner, filename = str(info["owner"]), str(info["filename"])
        except FileNotFoundError:
            return  # another process migrated it
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("old upload record %s is unreadable (%s); left in place", meta, exc)
            return
        try:
            record = self._add(owner, filename, _chunks(path), source=str(info.get("source") or "uploads"),
                               format=None, columns=None, name=None, created_at=created)
        except FileNotFoundError:
            return
        except (UploadRefused, DatasetUnreadable) as exc:
            log.warning("old upload %s of %s is no dataset (%s); left in place", path, owner, exc)
            return
        log.info("old upload %s of %s is now dataset #%s", filename, owner, record.id)
        path.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        try:
            meta.parent.rmdir()
            self.uploads.rmdir()
        except OSError:  # not empty yet
            pass


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            yield block
