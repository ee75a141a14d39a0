"""The emulator's state: datasets, labelsets, samples, labels and uploaded assets.

One implementation serves both modes: SQLite on ``:memory:`` by default, or on a file so the
state survives a restart. Using SQLite for the in-memory case too means the sample list is
filtered, sorted and paged by the database (a 10,000-sample listing costs one indexed query per
page, not a Python scan), and the two modes cannot drift apart.

The store knows nothing about HTTP or the wire format: it takes and returns plain records, and
raises :class:`NotFound` / :class:`Conflict` with a message the API layer puts into the DRF-style
``detail``. All access goes through one connection guarded by a lock, because the HTTP server
handles each connection in its own thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid as uuid_module
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from typing import Any

logger = logging.getLogger(__name__)

GROUND_TRUTH = "ground-truth"
UNLABELED = "UNLABELED"

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    fields TEXT NOT NULL,
    UNIQUE (owner, name)
);
CREATE TABLE IF NOT EXISTS labelsets (
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    metadata TEXT NOT NULL,
    priority REAL NOT NULL,
    readme TEXT NOT NULL,
    assigned_labeler TEXT,
    assigned_reviewer TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS labels (
    sample_uuid TEXT NOT NULL REFERENCES samples (uuid) ON DELETE CASCADE,
    labelset TEXT NOT NULL,
    label_status TEXT NOT NULL,
    attributes TEXT,
    score REAL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT,
    reviewed_at TEXT,
    reviewed_by TEXT,
    PRIMARY KEY (sample_uuid, labelset)
);
CREATE TABLE IF NOT EXISTS label_writes (
    sample_uuid TEXT NOT NULL,
    labelset TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (sample_uuid, labelset)
);
CREATE TABLE IF NOT EXISTS assets (
    key TEXT PRIMARY KEY,
    uuid TEXT NOT NULL,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data BLOB,
    uploads INTEGER NOT NULL DEFAULT 0
);
"""

# Sort keys the SDK may send (``get_samples(sort=...)``) -> SQL expression.
SORT_COLUMNS: Mapping[str, str] = {
    "name": "s.name",
    "created_at": "s.created_at",
    "updated_at": "s.updated_at",
    "priority": "s.priority",
    "gt_label__updated_at": "gt.updated_at",
}


class StoreError(Exception):
    """Base of the store's errors; ``str(error)`` is the message for the API's ``detail``."""


class NotFound(StoreError):
    """The dataset, labelset, sample, label or asset does not exist."""


class Conflict(StoreError):
    """A dataset, labelset or sample with that name already exists."""


def now_iso() -> str:
    """UTC timestamp as the API writes it (microseconds keep creation order sortable)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset row. ``fields`` holds every setting the client sent (task type, categories...)."""

    id: int
    owner: str
    name: str
    created_at: str
    fields: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class LabelsetRecord:
    name: str
    description: str
    created_at: str

    @property
    def is_groundtruth(self) -> bool:
        return self.name == GROUND_TRUTH


@dataclass(frozen=True)
class SampleRecord:
    uuid: str
    dataset_full_name: str
    name: str
    attributes: dict[str, Any]
    metadata: dict[str, Any]
    priority: float
    readme: str
    assigned_labeler: str | None
    assigned_reviewer: str | None
    created_at: str
    created_by: str
    updated_at: str


@dataclass(frozen=True)
class LabelRecord:
    sample_uuid: str
    labelset: str
    label_status: str
    attributes: dict[str, Any] | None
    score: float | None
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str | None
    reviewed_at: str | None
    reviewed_by: str | None


@dataclass(frozen=True)
class AssetRecord:
    key: str
    uuid: str
    owner: str
    filename: str
    content_type: str
    created_at: str
    data: bytes | None
    uploads: int


@dataclass(frozen=True)
class NewSample:
    """A sample to insert, as the client described it."""

    name: str
    attributes: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: float = 0.0
    readme: str = ""
    assigned_labeler: str | None = None
    assigned_reviewer: str | None = None


@dataclass(frozen=True)
class SampleQuery:
    """One page of a sample listing, with every filter ``get_samples`` can send.

    ``labelset`` is where ``label_statuses`` are evaluated and which label is returned with each
    sample; ``UNLABELED`` in ``label_statuses`` means "no label in that labelset".
    """

    dataset_id: int
    labelset: str = GROUND_TRUTH
    name_contains: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    label_statuses: tuple[str, ...] = ()
    sort: str = "name"
    descending: bool = False
    offset: int = 0
    limit: int = 1000


_SAMPLE_COLUMNS = (
    "s.uuid, d.owner, d.name, s.name, s.attributes, s.metadata, s.priority, s.readme, "
    "s.assigned_labeler, s.assigned_reviewer, s.created_at, s.created_by, s.updated_at"
)
_LABEL_COLUMNS = (
    "l.sample_uuid, l.labelset, l.label_status, l.attributes, l.score, l.created_at, "
    "l.created_by, l.updated_at, l.updated_by, l.reviewed_at, l.reviewed_by"
)
_LABEL_COLUMN_COUNT = 11


def _sample_from_row(row: Sequence[Any]) -> SampleRecord:
    return SampleRecord(
        uuid=row[0],
        dataset_full_name=f"{row[1]}/{row[2]}",
        name=row[3],
        attributes=json.loads(row[4]),
        metadata=json.loads(row[5]),
        priority=row[6],
        readme=row[7],
        assigned_labeler=row[8],
        assigned_reviewer=row[9],
        created_at=row[10],
        created_by=row[11],
        updated_at=row[12],
    )


def _label_from_row(row: Sequence[Any]) -> LabelRecord | None:
    if row[0] is None:  # LEFT JOIN found no label
        return None
    return LabelRecord(
        sample_uuid=row[0],
        labelset=row[1],
        label_status=row[2],
        attributes=None if row[3] is None else json.loads(row[3]),
        score=row[4],
        created_at=row[5],
        created_by=row[6],
        updated_at=row[7],
        updated_by=row[8],
        reviewed_at=row[9],
        reviewed_by=row[10],
    )


def _metadata_path(key: str) -> str:
    """SQLite JSON path for one top-level metadata key (quoted, so dots and spaces are safe)."""
    return '$."' + key.replace('"', '\\"') + '"'


class Store:
    """Emulator state in SQLite; ``path=None`` keeps it in memory for the life of the object."""

    def __init__(self, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self._conn = sqlite3.connect(
            ":memory:" if self.path is None else self.path, check_same_thread=False
        )
        self._lock = threading.RLock()
        with self._lock, self._conn:
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One locked transaction: committed on success, rolled back on any error."""
        with self._lock, self._conn:
            yield self._conn

    # Datasets ------------------------------------------------------------------------------

    def create_dataset(self, owner: str, name: str, fields: Mapping[str, Any]) -> DatasetRecord:
        """Create a dataset with its ``ground-truth`` labelset; :class:`Conflict` if it exists."""
        created = now_iso()
        with self._tx() as conn:
            try:
                cursor = conn.execute(
                    "INSERT INTO datasets (owner, name, created_at, fields) VALUES (?, ?, ?, ?)",
                    (owner, name, created, json.dumps(dict(fields))),
                )
            except sqlite3.IntegrityError as error:
                raise Conflict(f"A dataset with the name '{name}' already exists.") from error
            dataset_id = cursor.lastrowid
            conn.execute(
                "INSERT INTO labelsets (dataset_id, name, description, created_at) "
                "VALUES (?, ?, '', ?)",
                (dataset_id, GROUND_TRUTH, created),
            )
        assert dataset_id is not None
        return DatasetRecord(dataset_id, owner, name, created, dict(fields))

    def get_dataset(self, owner: str, name: str) -> DatasetRecord:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, owner, name, created_at, fields FROM datasets "
                "WHERE owner = ? AND name = ?",
                (owner, name),
            ).fetchone()
        if row is None:
            raise NotFound("Not found.")
        return DatasetRecord(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def list_datasets(self, owner: str, offset: int, limit: int) -> list[DatasetRecord]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, owner, name, created_at, fields FROM datasets WHERE owner = ? "
                "ORDER BY created_at, id LIMIT ? OFFSET ?",
                (owner, limit, offset),
            ).fetchall()
        return [DatasetRecord(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def owners(self) -> set[str]:
        """Everyone who owns a dataset (users and organizations), for ``GET /users/{name}``."""
        with self._tx() as conn:
            return {row[0] for row in conn.execute("SELECT DISTINCT owner FROM datasets")}

    def update_dataset(self, dataset: DatasetRecord, changes: Mapping[str, Any]) -> DatasetRecord:
        merged = {**dataset.fields, **changes}
        with self._tx() as conn:
            conn.execute(
                "UPDATE datasets SET fields = ? WHERE id = ?", (json.dumps(merged), dataset.id)
            )
        return DatasetRecord(dataset.id, dataset.owner, dataset.name, dataset.created_at, merged)

    def delete_dataset(self, dataset: DatasetRecord) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM datasets WHERE id = ?", (dataset.id,))

    def dataset_counts(self, dataset_id: int) -> dict[str, int]:
        """Samples per ground-truth label status (``UNLABELED`` = no label) plus ``TOTAL``."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT COALESCE(l.label_status, ?), COUNT(*) FROM samples s "
                "LEFT JOIN labels l ON l.sample_uuid = s.uuid AND l.labelset = ? "
                "WHERE s.dataset_id = ? GROUP BY 1",
                (UNLABELED, GROUND_TRUTH, dataset_id),
            ).fetchall()
        counts = {status: count for status, count in rows}
        counts["TOTAL"] = sum(counts.values())
        return counts

    # Labelsets -----------------------------------------------------------------------------

    def list_labelsets(self, dataset_id: int) -> list[LabelsetRecord]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT name, description, created_at FROM labelsets WHERE dataset_id = ? "
                "ORDER BY created_at, name",
                (dataset_id,),
            ).fetchall()
        return [LabelsetRecord(*row) for row in rows]

    def get_labelset(self, dataset_id: int, name: str) -> LabelsetRecord:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT name, description, created_at FROM labelsets "
                "WHERE dataset_id = ? AND name = ?",
                (dataset_id, name),
            ).fetchone()
        if row is None:
            raise NotFound(f"Labelset '{name}' not found.")
        return LabelsetRecord(*row)

    def add_labelset(self, dataset_id: int, name: str, description: str) -> LabelsetRecord:
        created = now_iso()
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO labelsets (dataset_id, name, description, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (dataset_id, name, description, created),
                )
            except sqlite3.IntegrityError as error:
                raise Conflict(f"A labelset with the name '{name}' already exists.") from error
        return LabelsetRecord(name, description, created)

    # Samples -------------------------------------------------------------------------------

    def add_samples(
        self,
        dataset_id: int,
        samples: Iterable[NewSample],
        created_by: str,
        existing_ok: bool = False,
    ) -> list[SampleRecord]:
        """Insert samples in one transaction and return them in input order.

        A name already in the dataset raises :class:`Conflict` (``add_sample``), or, with
        ``existing_ok`` (``add_samples``, per the SDK's docstring), returns the existing sample
        unchanged.
        """
        uuids: list[str] = []
        with self._tx() as conn:
            for sample in samples:
                existing = conn.execute(
                    "SELECT uuid FROM samples WHERE dataset_id = ? AND name = ?",
                    (dataset_id, sample.name),
                ).fetchone()
                if existing is not None:
                    if not existing_ok:
                        raise Conflict(
                            f"A sample with the name '{sample.name}' already exists "
                            "in this dataset."
                        )
                    uuids.append(existing[0])
                    continue
                sample_uuid = str(uuid_module.uuid4())
                stamp = now_iso()
                conn.execute(
                    "INSERT INTO samples (uuid, dataset_id, name, attributes, metadata, priority, "
                    "readme, assigned_labeler, assigned_reviewer, created_at, created_by, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        sample_uuid,
                        dataset_id,
                        sample.name,
                        json.dumps(sample.attributes),
                        json.dumps(sample.metadata),
                        float(sample.priority),
                        sample.readme,
                        sample.assigned_labeler,
                        sample.assigned_reviewer,
                        stamp,
                        created_by,
                        stamp,
                    ),
                )
                uuids.append(sample_uuid)
            return [self._get_sample(conn, sample_uuid) for sample_uuid in uuids]

    def get_sample(self, sample_uuid: str) -> SampleRecord:
        with self._tx() as conn:
            return self._get_sample(conn, sample_uuid)

    def sample_dataset_id(self, sample_uuid: str) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT dataset_id FROM samples WHERE uuid = ?", (sample_uuid,)
            ).fetchone()
        if row is None:
            raise NotFound("Not found.")
        return int(row[0])

    def _get_sample(self, conn: sqlite3.Connection, sample_uuid: str) -> SampleRecord:
        row = conn.execute(
            f"SELECT {_SAMPLE_COLUMNS} FROM samples s JOIN datasets d ON d.id = s.dataset_id "
            "WHERE s.uuid = ?",
            (sample_uuid,),
        ).fetchone()
        if row is None:
            raise NotFound("Not found.")
        return _sample_from_row(row)

    def update_sample(self, sample_uuid: str, changes: Mapping[str, Any]) -> SampleRecord:
        """Apply a partial update (keys: the :class:`NewSample` fields)."""
        columns = {
            "name": lambda v: v,
            "attributes": json.dumps,
            "metadata": json.dumps,
            "priority": float,
            "readme": lambda v: v,
            "assigned_labeler": lambda v: v,
            "assigned_reviewer": lambda v: v,
        }
        assignments = [(column, columns[column](value)) for column, value in changes.items()]
        with self._tx() as conn:
            current = self._get_sample(conn, sample_uuid)
            if not assignments:
                return current
            sql = ", ".join(f"{column} = ?" for column, _ in assignments)
            try:
                conn.execute(
                    f"UPDATE samples SET {sql}, updated_at = ? WHERE uuid = ?",
                    (*(value for _, value in assignments), now_iso(), sample_uuid),
                )
            except sqlite3.IntegrityError as error:
                raise Conflict("A sample with that name already exists in this dataset.") from error
            return self._get_sample(conn, sample_uuid)

    def delete_sample(self, sample_uuid: str) -> None:
        with self._tx() as conn:
            deleted = conn.execute("DELETE FROM samples WHERE uuid = ?", (sample_uuid,)).rowcount
        if not deleted:
            raise NotFound("Not found.")

    def list_samples(self, query: SampleQuery) -> list[tuple[SampleRecord, LabelRecord | None]]:
        """One page of samples with each one's label in ``query.labelset`` (or ``None``)."""
        if query.sort not in SORT_COLUMNS:
            raise ValueError(f"unknown sort field {query.sort!r}")
        where = ["s.dataset_id = ?"]
        params: list[Any] = [query.labelset, GROUND_TRUTH, query.dataset_id]
        if query.name_contains:
            where.append("instr(s.name, ?) > 0")  # case-sensitive, like Django's __contains
            params.append(query.name_contains)
        for key, value in query.metadata:
            path = _metadata_path(key)
            where.append(
                "(CASE json_type(s.metadata, ?) WHEN 'true' THEN 'true' "
                "WHEN 'false' THEN 'false' ELSE CAST(json_extract(s.metadata, ?) AS TEXT) END) = ?"
            )
            params.extend([path, path, value])
        if query.label_statuses:
            marks = ", ".join("?" for _ in query.label_statuses)
            where.append(f"COALESCE(l.label_status, '{UNLABELED}') IN ({marks})")
            params.extend(query.label_statuses)
        direction = "DESC" if query.descending else "ASC"
        sql = (
            f"SELECT {_LABEL_COLUMNS}, {_SAMPLE_COLUMNS} FROM samples s "
            "JOIN datasets d ON d.id = s.dataset_id "
            "LEFT JOIN labels l ON l.sample_uuid = s.uuid AND l.labelset = ? "
            "LEFT JOIN labels gt ON gt.sample_uuid = s.uuid AND gt.labelset = ? "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY {SORT_COLUMNS[query.sort]} {direction}, s.seq {direction} "
            "LIMIT ? OFFSET ?"
        )
        params.extend([query.limit, query.offset])
        with self._tx() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(_sample_from_row(row[_LABEL_COLUMN_COUNT:]), _label_from_row(row)) for row in rows]

    # Labels --------------------------------------------------------------------------------

    def get_label(self, sample_uuid: str, labelset: str) -> LabelRecord | None:
        with self._tx() as conn:
            return self._get_label(conn, sample_uuid, labelset)

    def _get_label(
        self, conn: sqlite3.Connection, sample_uuid: str, labelset: str
    ) -> LabelRecord | None:
        row = conn.execute(
            f"SELECT {_LABEL_COLUMNS} FROM labels l WHERE l.sample_uuid = ? AND l.labelset = ?",
            (sample_uuid, labelset),
        ).fetchone()
        return None if row is None else _label_from_row(row)

    def put_label(
        self,
        sample_uuid: str,
        labelset: str,
        label_status: str,
        attributes: dict[str, Any] | None,
        score: float | None,
        by: str,
        count_write: bool,
    ) -> tuple[LabelRecord, bool]:
        """Create or replace a label; returns it and whether it was created.

        Replacing keeps ``created_at``/``created_by`` (the label is the same object, edited).
        ``count_write`` bumps :meth:`label_write_count`, which only API writes do.
        """
        stamp = now_iso()
        with self._tx() as conn:
            self._get_sample(conn, sample_uuid)
            current = self._get_label(conn, sample_uuid, labelset)
            created_at = stamp if current is None else current.created_at
            created_by = by if current is None else current.created_by
            conn.execute(
                "INSERT OR REPLACE INTO labels (sample_uuid, labelset, label_status, attributes, "
                "score, created_at, created_by, updated_at, updated_by, reviewed_at, reviewed_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (
                    sample_uuid,
                    labelset,
                    label_status,
                    None if attributes is None else json.dumps(attributes),
                    score,
                    created_at,
                    created_by,
                    stamp,
                    by,
                ),
            )
            if count_write:
                self._count_write(conn, sample_uuid, labelset)
            label = self._get_label(conn, sample_uuid, labelset)
        assert label is not None
        return label, current is None

    def patch_label(
        self,
        sample_uuid: str,
        labelset: str,
        changes: Mapping[str, Any],
        by: str,
        count_write: bool,
    ) -> LabelRecord:
        """Change some of ``label_status``, ``attributes``, ``score``; :class:`NotFound` if none."""
        with self._tx() as conn:
            current = self._get_label(conn, sample_uuid, labelset)
            if current is None:
                raise NotFound("Not found.")
            attributes = changes.get("attributes", current.attributes)
            conn.execute(
                "UPDATE labels SET label_status = ?, attributes = ?, score = ?, updated_at = ?, "
                "updated_by = ? WHERE sample_uuid = ? AND labelset = ?",
                (
                    changes.get("label_status", current.label_status),
                    None if attributes is None else json.dumps(attributes),
                    changes.get("score", current.score),
                    now_iso(),
                    by,
                    sample_uuid,
                    labelset,
                ),
            )
            if count_write:
                self._count_write(conn, sample_uuid, labelset)
            label = self._get_label(conn, sample_uuid, labelset)
        assert label is not None
        return label

    def delete_label(self, sample_uuid: str, labelset: str) -> None:
        with self._tx() as conn:
            deleted = conn.execute(
                "DELETE FROM labels WHERE sample_uuid = ? AND labelset = ?",
                (sample_uuid, labelset),
            ).rowcount
        if not deleted:
            raise NotFound("Not found.")

    def _count_write(self, conn: sqlite3.Connection, sample_uuid: str, labelset: str) -> None:
        conn.execute(
            "INSERT INTO label_writes (sample_uuid, labelset, count) VALUES (?, ?, 1) "
            "ON CONFLICT (sample_uuid, labelset) DO UPDATE SET count = count + 1",
            (sample_uuid, labelset),
        )

    def label_write_count(self, sample_uuid: str, labelset: str) -> int:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT count FROM label_writes WHERE sample_uuid = ? AND labelset = ?",
                (sample_uuid, labelset),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def label_write_counts(self) -> dict[tuple[str, str], int]:
        with self._tx() as conn:
            rows = conn.execute("SELECT sample_uuid, labelset, count FROM label_writes").fetchall()
        return {(row[0], row[1]): int(row[2]) for row in rows}

    # Assets --------------------------------------------------------------------------------

    def create_asset(self, owner: str, filename: str, extension: str, content_type: str) -> str:
        """Register an upload slot (``POST /assets/``) and return its S3-style key."""
        asset_uuid = str(uuid_module.uuid4())
        key = f"assets/{owner}/{asset_uuid}{extension}"
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO assets (key, uuid, owner, filename, content_type, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, asset_uuid, owner, filename, content_type, now_iso()),
            )
        return key

    def get_asset(self, key: str) -> AssetRecord:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT key, uuid, owner, filename, content_type, created_at, data, uploads "
                "FROM assets WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            raise NotFound("The specified key does not exist.")
        return AssetRecord(*row)

    def store_asset_data(self, key: str, data: bytes) -> None:
        """Save uploaded bytes under a key issued by :meth:`create_asset` (re-upload replaces)."""
        with self._tx() as conn:
            updated = conn.execute(
                "UPDATE assets SET data = ?, uploads = uploads + 1 WHERE key = ?", (data, key)
            ).rowcount
        if not updated:
            raise NotFound("The specified key does not exist.")

    def asset_upload_count(self) -> int:
        """Number of distinct assets whose bytes were uploaded (retries of one key count once)."""
        with self._tx() as conn:
            row = conn.execute("SELECT COUNT(*) FROM assets WHERE data IS NOT NULL").fetchone()
        return int(row[0])
